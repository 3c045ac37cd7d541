"""Pieces shared by the models."""
import flax.linen as nn
import jax.numpy as jnp

from bigjax import draws


def length_mask(lengths, width: int):
  """bool[B, T]: True at real tokens. lengths: int32[B]."""
  return jnp.arange(width)[None, :] < lengths[:, None]


class Dropout(nn.Module):
  """flax's nn.Dropout (no broadcast_dims), its mask drawn four positions a Threefry hash
  (bigjax.draws.dropout_mask) instead of one: what the Transformer's large activations need."""
  rate: float
  rng_collection: str = 'dropout'

  @nn.compact
  def __call__(self, inputs, deterministic: bool):
    if deterministic or self.rate == 0.0:
      return inputs
    if self.rate == 1.0:
      return jnp.zeros_like(inputs)
    keep, scale = draws.dropout_mask(self.make_rng(self.rng_collection), self.rate, inputs.shape)
    return jnp.where(keep, inputs * scale, jnp.zeros_like(inputs))
