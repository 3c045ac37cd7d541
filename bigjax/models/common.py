"""Pieces shared by the models."""
import jax.numpy as jnp


def length_mask(lengths, width: int):
  """bool[B, T]: True at real tokens. lengths: int32[B]."""
  return jnp.arange(width)[None, :] < lengths[:, None]
