"""batch_layer/jobs."""
