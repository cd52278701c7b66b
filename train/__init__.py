"""Training: data pipeline, TF_CONFIG roles, strategies, the loop, checkpoints, export."""
