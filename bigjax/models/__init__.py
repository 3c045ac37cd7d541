"""Flax models. They know nothing of data, training or checkpoints."""
