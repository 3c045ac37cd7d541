"""Random draws that use every bit of JAX's Threefry hash: dropout masks and Gaussian noise.

With partitionable Threefry keys (JAX's default), jax.random draws each element of a 32-bit
or narrower array from a hash of its own: Threefry-2x32 makes two 32-bit words, and
jax.random.bits XORs them into one. The hash is most of the cost on a CPU: 9.2 M normals took
142 ms on 2 cores of an AMD EPYC (Zen 4), 77 ms two a hash (docs/results/privacy.md), and the
[batch, heads, len, len] attention-dropout masks were a quarter of a MiniLM finetuning step
(docs/results/huggingface.md). Here each hash serves two 32-bit draws (`normal`) or four 16-bit
ones (`dropout_mask`).

The hash is JAX's own (jax.extend.random.threefry2x32_p), keyed as jax.random keys it, with
counters that are the output's own positions, as jax.random's partitionable path has them:
a sharded output is drawn shard by shard, with the same values on any mesh. A draw is a pure
function of (key, shape), so a resumed or re-sharded step repeats it exactly. Keys are raw
uint32[2] keys (flax's) or typed Threefry keys; another key type goes through jax.random.
"""
import math

import jax
from jax import lax
from jax.extend.random import threefry2x32_p
import jax.numpy as jnp
import numpy as np


def _key_words(key):
  """The key's two uint32 words, or None for a key that is not Threefry's."""
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    if str(jax.random.key_impl(key)) != 'threefry2x32':
      return None
    key = jax.random.key_data(key)
  if key.shape != (2,) or key.dtype != jnp.uint32:
    return None
  return key[0], key[1]


def _hashes(words, shape: tuple[int, ...]):
  """Both uint32 outputs of the hash of every position of `shape` (its row-major index)."""
  if math.prod(shape) >= 2**32:
    raise ValueError(f'bigjax.draws: a draw of {math.prod(shape)} hashes is over 2**32')
  index = jnp.zeros(shape, jnp.uint32)
  stride = 1
  for axis in reversed(range(len(shape))):
    index = index + lax.broadcasted_iota(jnp.uint32, shape, axis) * np.uint32(stride)
    stride *= shape[axis]
  return threefry2x32_p.bind(words[0], words[1], jnp.zeros(shape, jnp.uint32), index)


def _lanes(words, shape: tuple[int, ...], per_hash: int, split):
  """An array of `shape` whose last axis is filled `per_hash` draws a hash: split(y1, y2) gives
  the per_hash arrays of one hash's draws."""
  shape = tuple(shape) or (1,)
  *lead, last = shape
  parts = split(*_hashes(words, (*lead, -(-last // per_hash))))
  drawn = jnp.stack(parts, axis=-1).reshape(*lead, -1)
  return drawn[..., :last]


def dropout_mask(key, rate: float, shape) -> tuple[jax.Array, float]:
  """(bool[shape]: True where kept, the scale for kept values). Each position is kept with
  probability t / 65536, t = round((1 - rate) * 65536), from 16 random bits; the scale 65536 / t
  is the inverse of that probability, so the mask times the scale has mean 1 exactly."""
  threshold = min(65536, max(1, round((1.0 - rate) * 65536)))
  words = _key_words(key)
  if words is None:
    keep_prob = threshold / 65536
    return jax.random.bernoulli(key, keep_prob, tuple(shape)), 1.0 / keep_prob
  halves = lambda y1, y2: (y1 & 0xFFFF, y1 >> 16, y2 & 0xFFFF, y2 >> 16)
  kept = _lanes(words, shape, 4, halves) < np.uint32(threshold)
  return kept.reshape(shape), 65536 / threshold


def normal(key, shape, dtype=jnp.float32) -> jax.Array:
  """Standard normal draws of `shape`: jax.random.normal's transform (23 bits of a uniform on
  (-1, 1), sqrt(2) erfinv) of 32 random bits each, two a hash."""
  shape = tuple(shape)
  words = _key_words(key)
  if words is None:
    return jax.random.normal(key, shape, dtype)
  bits = _lanes(words, shape, 2, lambda y1, y2: (y1, y2)).reshape(shape)
  # [1, 2) from the top 23 bits as a mantissa, then [0, 1), then (-1, 1) as jax.random.uniform's.
  unit = lax.bitcast_convert_type((bits >> 9) | np.uint32(0x3F800000), jnp.float32) - 1.0
  low = np.nextafter(np.float32(-1.0), np.float32(0.0))
  uniform = jnp.maximum(low, unit * (np.float32(1.0) - low) + low)
  return (np.float32(np.sqrt(2.0)) * lax.erf_inv(uniform)).astype(dtype)
