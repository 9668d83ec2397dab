"""speed_layer."""
