"""A masked language model's rows and their masking (BERT, Devlin et al. 2019).

Rows: each document cut into consecutive pieces of at most max_len tokens (`cut_documents`); a
row never holds two documents, so no token attends across a document boundary. The rows are
batched as a classifier's texts are (bigjax.data.batching: length buckets, batch i of epoch e a
function of (seed, e, i), each process building only its rows of the global batch).

Masking (`Masking.mask`): of a row's n real tokens, k = round(mask_rate * n), at least 1 and at
most max_predictions, are chosen uniformly without replacement, to be predicted; each is
replaced by the mask token (80 %), by a random ordinary token (10 %; never a special token or
padding), or kept (10 %). A row's draws come from a generator of its own, seeded by (seed,
purpose, number, row): in training the step and the row's place in the global batch, in
evaluation the split, the batch's index and the row's place. So a resumed run masks as an
uninterrupted one does, whatever the device and process counts (each process masks its rows
knowing their global places), and dev and test are masked once: every checkpoint is scored on
the same tokens, corrupted the same way.
"""
import dataclasses
from typing import Sequence

import numpy as np

from bigjax.data.batching import EncodedSplit, Sharding, TrainBatches, eval_batches
from bigjax.types import Batch

# What a generator's draws are for: a training step's rows, or the evaluation splits'.
TRAIN, DEV, TEST = 0, 1, 2
# Keeps these draws apart from every other use of the run's seed (numpy seeds [a, b] and
# [a, b, 0] alike, so keys must not differ by trailing zeros alone: they all have five entries).
_STREAM = 0x4D4C4D


def cut_documents(split: EncodedSplit, max_len: int) -> EncodedSplit:
  """Each document as consecutive rows of max_len tokens (its last row shorter; an empty
  document gives none), in document order. The tokens stay where they are: only offsets change."""
  lengths = split.lengths.astype(np.int64)
  pieces = -(-lengths // max_len)
  first_piece = np.repeat(np.cumsum(pieces) - pieces, pieces)
  starts = np.repeat(split.offsets[:-1], pieces) + (np.arange(int(pieces.sum())) - first_piece) * max_len
  offsets = np.concatenate([starts, split.offsets[-1:]]).astype(np.int64)
  return EncodedSplit(split.tokens, offsets, np.full(len(starts), -1, np.int32))


@dataclasses.dataclass(frozen=True)
class Masking:
  """Which tokens of a row are predicted, and what the model reads in their place."""
  mask_id: int
  first_random_id: int  # Random replacements are ids in [first_random_id, vocab_size): no special ones.
  vocab_size: int
  max_predictions: int  # M: prediction slots per row.
  mask_rate: float = 0.15
  mask_share: float = 0.8  # Of the chosen tokens: the share replaced by mask_id,
  random_share: float = 0.1  # the share replaced by a random token; the rest are kept.

  def __post_init__(self):
    if not 0 < self.first_random_id < self.vocab_size:
      raise ValueError(f'no ordinary token to draw random replacements from: ids {self.first_random_id} to '
                       f'{self.vocab_size - 1}')
    if self.max_predictions < 1 or not 0.0 < self.mask_rate < 1.0:
      raise ValueError(f'max_predictions={self.max_predictions} must be >= 1 and mask_rate={self.mask_rate} in '
                       '(0, 1)')

  def predictions(self, length: int) -> int:
    """How many of a row's `length` real tokens are predicted (BERT's rounding)."""
    if length <= 0:
      return 0
    return min(max(1, int(round(self.mask_rate * length))), self.max_predictions)

  def mask(self, batch: Batch, seed: int, purpose: int, number: int, first_row: int) -> Batch:
    """`batch` with its chosen tokens corrupted, and positions, targets and target_weights
    ([rows, max_predictions]) saying what to predict where.

    Row i is row first_row + i of global batch `number` (the step, or an evaluation batch's
    index); filler rows (length 0) get no predictions.
    """
    token_ids = np.array(batch.token_ids, np.int32)
    rows, slots = token_ids.shape[0], self.max_predictions
    positions = np.zeros((rows, slots), np.int32)
    targets = np.zeros((rows, slots), np.int32)
    weights = np.zeros((rows, slots), np.float32)
    for i, length in enumerate(np.asarray(batch.lengths)):
      k = self.predictions(int(length))
      if not k:
        continue
      rng = np.random.default_rng([seed, _STREAM, purpose, number, first_row + i])
      chosen = np.sort(rng.choice(int(length), k, replace=False))
      draw = rng.random(k)
      random_ids = rng.integers(self.first_random_id, self.vocab_size, k)
      positions[i, :k], targets[i, :k], weights[i, :k] = chosen, token_ids[i, chosen], 1.0
      masked = draw < self.mask_share
      replaced = ~masked & (draw < self.mask_share + self.random_share)
      token_ids[i, chosen[masked]] = self.mask_id
      token_ids[i, chosen[replaced]] = random_ids[replaced]
    return batch._replace(token_ids=token_ids, targets=targets, target_weights=weights, positions=positions)


def max_predictions(mask_rate: float, max_len: int) -> int:
  """The most predictions a row of at most max_len tokens gets: BERT's max_predictions_per_seq,
  exactly as large as no row needs more (19 for 128 tokens at 15 %, where BERT rounds up to 20)."""
  return max(max(1, int(round(mask_rate * n))) for n in range(1, max_len + 1))


def _first_row(sharding: Sharding, batch_size: int) -> int:
  """The global place of this process's first row in each batch (see batching.Sharding)."""
  return sharding.process_index * sharding.rows(batch_size)[1]


class MaskedBatches:
  """The training stream: a classifier-style batch of rows (TrainBatches) per step, masked by
  (seed, step, row)."""

  def __init__(self, batches: TrainBatches, masking: Masking, seed: int):
    self.batches, self.masking, self.seed = batches, masking, seed
    self.steps_per_epoch = batches.steps_per_epoch
    self._first_row = _first_row(batches.sharding, batches.batch_size)

  def batch(self, step: int) -> Batch:
    return self.masking.mask(self.batches.batch(step), self.seed, TRAIN, step, self._first_row)

  def shape_examples(self, start_step: int = 0) -> list[Batch]:
    """TrainBatches.shape_examples with their (empty) prediction slots: the shapes a step compiles for."""
    return [self.masking.mask(b, self.seed, TRAIN, 0, self._first_row)
            for b in self.batches.shape_examples(start_step)]

  def epoch_stats(self, epoch: int = 0) -> dict:
    return self.batches.epoch_stats(epoch)


def masked_eval_batches(split: EncodedSplit, batch_size: int, boundaries: Sequence[int], sharding: Sharding,
                        masking: Masking, seed: int, purpose: int) -> list[Batch]:
  """batching.eval_batches of a split (this process's rows), each masked once by (seed, purpose,
  batch index, row)."""
  first_row = _first_row(sharding, batch_size)
  return [masking.mask(batch, seed, purpose, index, first_row)
          for index, batch in enumerate(eval_batches(split, batch_size, boundaries, sharding))]
