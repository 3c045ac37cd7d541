"""Raw text -> one contiguous token stream -> truncated-BPTT windows, for language models.

Training: each epoch puts the documents in an order fixed by (seed, epoch), writes each
one's ids followed by </s>, and cuts the concatenation into `rows` equal contiguous rows
(AWD-LSTM's batchify). Step i of the epoch reads columns [iT, iT + T) of every row and
predicts the columns one to the right. Row r of step i + 1 continues row r of step i, so
the model's state is carried from one window to the next (Batch.continues is 0 at an
epoch's first window, where every row starts afresh). A batch is a function of the step:
a resumed run reads what an uninterrupted one would.

Evaluation: windows in document order whose first `context` tokens only warm the state
up (target weight 0), so each window scores its own T tokens with the context it would
have had, in any order and with no carried state.
"""
from typing import Optional

import numpy as np

from bigjax.data.batching import EncodedSplit, Sharding
from bigjax.types import Batch


def concatenate(split: EncodedSplit, eos_id: int, order: Optional[np.ndarray] = None) -> np.ndarray:
  """int32[total]: the documents in `order` (default: as stored), each followed by eos_id."""
  if order is None:
    order = np.arange(len(split))
  lengths = split.lengths[order].astype(np.int64) + 1
  total = int(lengths.sum())
  starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
  source = np.repeat(split.offsets[:-1][order] - starts, lengths) + np.arange(total)
  out = split.tokens[np.minimum(source, max(len(split.tokens) - 1, 0))] if len(split.tokens) else np.zeros(total,
                                                                                                              np.int32)
  out = np.array(out, np.int32)
  out[starts + lengths - 1] = eos_id
  return out


def carve(split: EncodedSplit, fraction: float, seed: int) -> tuple[EncodedSplit, EncodedSplit, EncodedSplit]:
  """(train, dev, test) documents: dev and test each `fraction` of them (at least one), seeded."""
  n = len(split)
  held = max(1, int(round(n * fraction)))
  if n < 2 * held + 1:
    raise ValueError(f'{n} documents cannot give {held} held-out documents each to dev and test and keep some to '
                     'train on')
  order = np.random.default_rng([seed, 17]).permutation(n)
  pick = lambda idx: EncodedSplit.from_rows([split.tokens[split.offsets[i]:split.offsets[i + 1]] for i in idx],
                                            np.full(len(idx), -1, np.int32))
  return pick(np.sort(order[2 * held:])), pick(np.sort(order[:held])), pick(np.sort(order[held:2 * held]))


def _lm_batch(inputs: np.ndarray, targets: np.ndarray, target_weights: np.ndarray, lengths: np.ndarray,
              weights: np.ndarray, continues: Optional[np.ndarray]) -> Batch:
  return Batch(token_ids=inputs, lengths=lengths, labels=np.zeros(len(inputs), np.int32), weights=weights,
               targets=targets, target_weights=target_weights, continues=continues)


class StreamBatches:
  """step -> this process's rows of the global BPTT batch, epoch after epoch."""

  def __init__(self, split: EncodedSplit, eos_id: int, batch_size: int, window: int, seed: int,
               sharding: Sharding = Sharding()):
    global_rows, self.local_rows = sharding.rows(batch_size)
    if global_rows != batch_size:
      raise ValueError(f'train.batch_size={batch_size} streams must divide evenly over {sharding.rows_multiple} '
                       f'devices and {sharding.process_count} processes: every row carries its own state')
    self.split, self.eos_id, self.rows, self.window, self.seed = split, eos_id, batch_size, window, seed
    self.first_row = sharding.process_index * self.local_rows
    self.tokens_per_epoch = int(split.lengths.sum()) + len(split)
    self.row_length = self.tokens_per_epoch // batch_size
    self.steps_per_epoch = (self.row_length - 1) // window
    if self.steps_per_epoch < 1:
      raise ValueError(f'{self.tokens_per_epoch} training tokens make no window of {window} tokens in '
                       f'{batch_size} rows; lower train.batch_size or lm.window')
    self._cached_epoch, self._cached_rows = -1, None

  def epoch_rows(self, epoch: int) -> np.ndarray:
    """int32[local rows, row_length]: this process's rows of an epoch's stream; step i reads
    columns [i·window, (i + 1)·window] of them."""
    if epoch != self._cached_epoch:
      order = np.random.default_rng([self.seed, epoch]).permutation(len(self.split))
      stream = concatenate(self.split, self.eos_id, order)[:self.rows * self.row_length]
      mine = stream.reshape(self.rows, self.row_length)[self.first_row:self.first_row + self.local_rows]
      self._cached_epoch, self._cached_rows = epoch, np.ascontiguousarray(mine)
    return self._cached_rows

  def batch(self, step: int) -> Batch:
    epoch, index = divmod(step, self.steps_per_epoch)
    rows = self.epoch_rows(epoch)
    start = index * self.window
    inputs = rows[:, start:start + self.window]
    targets = rows[:, start + 1:start + self.window + 1]
    n = self.local_rows
    return _lm_batch(inputs, targets, np.ones(inputs.shape, np.float32), np.full(n, self.window, np.int32),
                     np.ones(n, np.float32), np.full(n, float(index > 0), np.float32))

  def shape_examples(self, start_step: int = 0) -> list[Batch]:
    """Every window has one shape (see batching.TrainBatches.shape_examples)."""
    return [self.batch(start_step)]

  def epoch_stats(self, epoch: int = 0) -> dict:
    del epoch
    used = self.steps_per_epoch * self.window * self.rows
    return {'batches': self.steps_per_epoch, 'distinct_shapes': 1, 'padding_fraction': 0.0,
            'real_tokens': used, 'tokens_per_epoch': self.tokens_per_epoch}


def eval_windows(split: EncodedSplit, eos_id: int, batch_size: int, window: int, context: int,
                 sharding: Sharding = Sharding()) -> list[Batch]:
  """Every token of the held-out stream scored once, with up to `context` tokens before it.

  Window 0 scores tokens [0, context + window); window k > 0 scores the next `window`
  tokens and reads the `context` tokens before them first. All windows have width
  context + window (the last one padded), so evaluation compiles one shape.
  """
  stream = concatenate(split, eos_id)
  width = context + window
  scored = len(stream) - 1  # The last token has no next token to predict.
  spans = [(0, 0, min(width, scored))]  # (input start, first scored position, scored end)
  position = spans[0][2]
  while position < scored:
    spans.append((position - context, position, min(position + window, scored)))
    position = spans[-1][2]
  _, local_rows = sharding.rows(batch_size)
  batches = []
  for first in range(0, len(spans), batch_size):
    chunk = spans[first:first + batch_size]
    mine = chunk[sharding.process_index * local_rows:(sharding.process_index + 1) * local_rows]
    inputs = np.zeros((local_rows, width), np.int32)
    targets = np.zeros((local_rows, width), np.int32)
    target_weights = np.zeros((local_rows, width), np.float32)
    lengths = np.zeros(local_rows, np.int32)
    weights = np.zeros(local_rows, np.float32)
    for row, (begin, score_from, end) in enumerate(mine):
      count = end - begin
      inputs[row, :count] = stream[begin:end]
      targets[row, :count] = stream[begin + 1:end + 1]
      target_weights[row, score_from - begin:count] = 1.0
      lengths[row], weights[row] = count, 1.0
    batches.append(_lm_batch(inputs, targets, target_weights, lengths, weights, None))
  return batches

