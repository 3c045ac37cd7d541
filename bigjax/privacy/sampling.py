"""Poisson-sampled training batches: the sampling DP-SGD's accountant assumes.

Each step includes every training example independently with probability q, so a batch's
real size varies (Binomial(n, q)); it is padded with filler rows (weight 0) to a fixed number
of rows, so the step compiles once per width. A step that drew more examples than the rows
keeps a random subset of them, as the accountant's truncated mechanism does
(bigjax.privacy.accounting). Step s's batch depends on (seed, s) alone: resuming is exact.

Rows are not sorted by length across steps as TrainBatches' are (a sample is a sample): a
batch's width is the bucket of its longest row.
"""
import numpy as np

from bigjax.data import batching
from bigjax.types import Batch

# Keeps these batches' random streams apart from every other use of the run's seed.
_STREAM = 0x5D9


class PoissonBatches:
  """step -> this process's rows of the global batch, Poisson-sampled at `sampling_rate`."""

  def __init__(self, split: batching.EncodedSplit, sampling_rate: float, rows: int, boundaries, seed: int,
               sharding: batching.Sharding = batching.Sharding()):
    if len(split) == 0:
      raise ValueError('the training split is empty')
    self.split, self.sampling_rate, self.boundaries, self.seed = split, sampling_rate, tuple(boundaries), seed
    self.sharding = sharding
    self.batch_size = rows  # The padded rows: what the loop and the drivers see as the batch.
    self.expected_batch = len(split) * sampling_rate
    # An epoch: the steps that see as many examples as the split holds, on average.
    self.steps_per_epoch = max(1, round(1.0 / sampling_rate))

  def indices(self, step: int) -> np.ndarray:
    """The examples of step `step`: each with probability q, then at most batch_size of them."""
    rng = np.random.default_rng([self.seed, _STREAM, step])
    chosen = np.flatnonzero(rng.random(len(self.split)) < self.sampling_rate)
    if len(chosen) > self.batch_size:
      chosen = np.sort(rng.choice(chosen, self.batch_size, replace=False))
    return chosen

  def batch(self, step: int) -> Batch:
    return self.sharding.local_batch(self.split, self.indices(step), self.batch_size, self.boundaries)

  def shape_examples(self, start_step: int = 0) -> list[Batch]:
    """One all-zero batch per width, the widest first: nearly every sample holds a row of the
    longest bucket (the step's compile-ahead examples)."""
    _, local_rows = self.sharding.rows(self.batch_size)
    no_rows = np.zeros(0, np.int64)
    widths = sorted({batching.bucket_width(self.split.lengths[self.indices(s)], self.boundaries)
                     for s in range(start_step, start_step + 8)}, reverse=True)
    return [batching.make_batch(self.split, no_rows, local_rows, self.boundaries, w) for w in widths]

  def epoch_stats(self, epoch: int = 0) -> dict:
    """Padding and shapes of the first steps_per_epoch batches from epoch's start (at most 200)."""
    start = epoch * self.steps_per_epoch
    order = [self.indices(s) for s in range(start, start + min(self.steps_per_epoch, 200))]
    return batching.padding_stats(self.split.lengths, order, self.batch_size, self.boundaries)
