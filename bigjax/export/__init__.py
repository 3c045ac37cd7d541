"""Export: a trained run as a self-contained artifact (jax.export StableHLO, plain arrays,
tokenizer, labels, config) and its model card.

`loader` (the artifact's own predict.py) imports only jax, numpy and tokenizers; `export`
and `model_card` import the run loader and so Flax. Nothing here reads datasets or trains.
"""
