"""Token ids -> padded, length-bucketed batches in an order fixed by (seed, epoch).

Every batch has the same number of rows; its width is the smallest bucket boundary
that holds its longest row, so the number of distinct shapes (compilations) is at
most the number of boundaries. Batch `i` of epoch `e` depends on (seed, e, i) alone,
which makes resuming exact: the data position is a function of the step.
"""
import dataclasses
import math
from typing import Optional, Sequence

import numpy as np

from bigjax.types import Batch

# Batches are formed from pools of this many batches sorted by length: big enough to
# group similar lengths (low padding), small enough that batch order stays random.
POOL_BATCHES = 50


@dataclasses.dataclass(frozen=True)
class EncodedSplit:
  """A split's token ids, stored flat: row i is tokens[offsets[i]:offsets[i+1]]."""
  tokens: np.ndarray  # int32[total]
  offsets: np.ndarray  # int64[N + 1]
  labels: np.ndarray  # int32[N]

  @classmethod
  def from_rows(cls, rows: Sequence[np.ndarray], labels: np.ndarray) -> 'EncodedSplit':
    lengths = np.fromiter((len(r) for r in rows), np.int64, len(rows))
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    tokens = np.concatenate(list(rows)) if len(rows) else np.zeros(0, np.int32)
    return cls(tokens.astype(np.int32), offsets, np.asarray(labels, np.int32))

  @property
  def lengths(self) -> np.ndarray:
    return np.diff(self.offsets).astype(np.int32)

  def __len__(self) -> int:
    return len(self.labels)


def bucket_boundaries(max_len: int, smallest: int = 16, growth: float = 2.0) -> tuple[int, ...]:
  """Batch widths from `smallest` up to `max_len`, each ~`growth` times the last.

  Widths after the first are rounded up to a multiple of 4 (vector-friendly). Padding
  per batch is below (1 - 1/growth) of its width; shapes (compilations) grow as
  log(max_len / smallest) / log(growth). Doubling suits short-sequence models; a smaller
  growth (1.25) pays a few more compilations for much less padding, which the LSTM,
  whose work is proportional to width, turns into speed.
  """
  if growth <= 1.0:
    raise ValueError(f'bucket growth must be > 1, got {growth}')
  bounds, b = [], smallest
  while b < max_len:
    bounds.append(b)
    b = max(b + 4, -(-int(b * growth) // 4) * 4)
  return tuple(bounds) + (max_len,)


def bucket_width(lengths: np.ndarray, boundaries: Sequence[int]) -> int:
  longest = int(lengths.max()) if len(lengths) else 0
  return next((b for b in boundaries if b >= longest), boundaries[-1])


def make_batch(split: EncodedSplit, indices: np.ndarray, batch_size: int,
               boundaries: Sequence[int], width: Optional[int] = None) -> Batch:
  """Pads rows `indices` (at most batch_size of them) into one numpy Batch.

  width: the padded length; by default the bucket of these rows' longest one.
  """
  lengths = split.lengths[indices]
  if width is None:
    width = bucket_width(lengths, boundaries)
  token_ids = np.zeros((batch_size, width), np.int32)
  for row, i in enumerate(indices):
    start = split.offsets[i]
    token_ids[row, :lengths[row]] = split.tokens[start:start + lengths[row]]
  padded_lengths = np.zeros(batch_size, np.int32)
  padded_lengths[:len(indices)] = lengths
  labels = np.zeros(batch_size, np.int32)
  labels[:len(indices)] = split.labels[indices]
  weights = np.zeros(batch_size, np.float32)
  weights[:len(indices)] = 1.0
  return Batch(token_ids, padded_lengths, labels, weights)


def epoch_order(lengths: np.ndarray, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
  """Row indices of each batch of one epoch, a function of (seed, epoch) only."""
  rng = np.random.default_rng([seed, epoch])
  perm = rng.permutation(len(lengths))
  pool = batch_size * POOL_BATCHES
  batches = []
  for start in range(0, len(perm), pool):
    chunk = perm[start:start + pool]
    chunk = chunk[np.argsort(lengths[chunk], kind='stable')]
    batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
  # Short batches (at most one per pool) are kept, not dropped: they get filler rows.
  return [batches[i] for i in rng.permutation(len(batches))]


@dataclasses.dataclass(frozen=True)
class Sharding:
  """Which rows of each global batch this process builds.

  The global batch (batch_size real rows) is padded with filler rows to a multiple of
  `rows_multiple` (devices x micro-batches), then cut into equal contiguous blocks, one
  per process. Every process computes the same width from the global batch's lengths,
  so shapes agree across hosts while each builds only its own rows.
  """
  process_index: int = 0
  process_count: int = 1
  rows_multiple: int = 1

  def rows(self, batch_size: int) -> tuple[int, int]:
    """(global padded rows, rows per process)."""
    multiple = math.lcm(self.rows_multiple, self.process_count)
    global_rows = -(-batch_size // multiple) * multiple
    return global_rows, global_rows // self.process_count

  def local_batch(self, split: EncodedSplit, indices: np.ndarray, batch_size: int,
                  boundaries: Sequence[int]) -> Batch:
    _, local_rows = self.rows(batch_size)
    width = bucket_width(split.lengths[indices], boundaries)
    mine = indices[self.process_index * local_rows:(self.process_index + 1) * local_rows]
    return make_batch(split, mine, local_rows, boundaries, width)


class TrainBatches:
  """The training stream: step -> this process's rows of the global batch, epoch after epoch."""

  def __init__(self, split: EncodedSplit, batch_size: int, boundaries: Sequence[int], seed: int,
               sharding: Sharding = Sharding()):
    if len(split) == 0:
      raise ValueError('the training split is empty')
    self.split, self.batch_size, self.boundaries, self.seed = split, batch_size, tuple(boundaries), seed
    self.sharding = sharding
    self._lengths = split.lengths
    self._cached_epoch, self._cached_order = -1, []
    self.steps_per_epoch = len(epoch_order(self._lengths, batch_size, seed, 0))

  def position(self, step: int) -> tuple[int, int]:
    """(epoch, batch index in the epoch) of global step `step`."""
    return divmod(step, self.steps_per_epoch)

  def batch(self, step: int) -> Batch:
    epoch, index = self.position(step)
    if epoch != self._cached_epoch:
      self._cached_epoch = epoch
      self._cached_order = epoch_order(self._lengths, self.batch_size, self.seed, epoch)
    return self.sharding.local_batch(self.split, self._cached_order[index], self.batch_size, self.boundaries)

  def shape_examples(self, start_step: int = 0) -> list[Batch]:
    """One all-zero batch per distinct shape of the steps from start_step to the end of the
    next epoch, in the order the stream first reaches each: what a step is compiled for
    ahead of time (parallel.Driver.compile_ahead)."""
    epoch, index = self.position(start_step)
    widths = []
    for e in (epoch, epoch + 1):
      order = epoch_order(self._lengths, self.batch_size, self.seed, e)[index if e == epoch else 0:]
      for indices in order:
        width = bucket_width(self._lengths[indices], self.boundaries)
        if width not in widths:
          widths.append(width)
    _, local_rows = self.sharding.rows(self.batch_size)
    no_rows = np.zeros(0, np.int64)
    return [make_batch(self.split, no_rows, local_rows, self.boundaries, width) for width in widths]

  def epoch_stats(self, epoch: int = 0) -> dict:
    """Padding waste and distinct shapes of one epoch's batches."""
    order = epoch_order(self._lengths, self.batch_size, self.seed, epoch)
    return padding_stats(self._lengths, order, self.batch_size, self.boundaries)


def eval_batches(split: EncodedSplit, batch_size: int, boundaries: Sequence[int],
                 sharding: Sharding = Sharding()) -> list[Batch]:
  """Evaluation batches (this process's rows), sorted by length so padding is minimal."""
  order = np.argsort(split.lengths, kind='stable')
  return [sharding.local_batch(split, order[i:i + batch_size], batch_size, boundaries)
          for i in range(0, len(order), batch_size)]


def padding_stats(lengths: np.ndarray, order: Sequence[np.ndarray], batch_size: int,
                  boundaries: Sequence[int]) -> dict:
  real, padded, shapes = 0, 0, set()
  for idx in order:
    width = bucket_width(lengths[idx], boundaries)
    shapes.add((batch_size, width))
    real += int(lengths[idx].sum())
    padded += batch_size * width
  return {'batches': len(order), 'distinct_shapes': len(shapes),
          'padding_fraction': 1.0 - real / max(padded, 1), 'real_tokens': real}
