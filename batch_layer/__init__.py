"""batch_layer."""
