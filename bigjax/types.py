"""Types shared by data, models and training. Imports nothing from bigjax."""
from typing import Any, Callable, NamedTuple

import numpy as np

Array = Any  # jax.Array or np.ndarray
Key = Any  # a raw PRNG key, uint32[2]
Params = Any  # a pytree of arrays


class Batch(NamedTuple):
  """A padded batch. A NamedTuple is a pytree, so it passes through jit and pmap as is.

  Filler rows (added so every batch has the same number of rows) have weight 0 and
  length 0; every reduction in training and evaluation is weighted by `weights`.
  """
  token_ids: Array  # int32[B, T]; 0 is padding
  lengths: Array  # int32[B]; real tokens per row
  labels: Array  # int32[B]
  weights: Array  # float32[B]; 1 for real rows, 0 for filler rows

  @property
  def num_real(self) -> int:
    return int(np.asarray(self.weights).sum())


class ModelFns(NamedTuple):
  """All the training code knows of a model.

  init_fn(key, token_ids, lengths) -> params
  logits_fn(params, token_ids, lengths, dropout_key) -> float32[B, K] logits; with
    dropout_key=None the model runs deterministically (evaluation).
  """
  init_fn: Callable[..., Params]
  logits_fn: Callable[..., Array]
