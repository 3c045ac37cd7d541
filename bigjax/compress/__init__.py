"""Compression: make a trained run smaller and faster; each method writes a new run that
`bigjax.runs.load_run` loads like any other.

quantize: post-training int8 (qwix). pruning: magnitude pruning to a target sparsity while
finetuning, masks in the optimizer state. distill: a task that trains a student on a
teacher run's soft targets.
"""
