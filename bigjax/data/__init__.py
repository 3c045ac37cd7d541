"""Text-classification data: sources, tokenization and batching."""
