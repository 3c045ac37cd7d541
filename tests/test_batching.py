"""Batching: bucketed shapes, filler rows, every example once per epoch, (seed, epoch) order."""
import numpy as np
import pytest

from bigjax.data import batching


def split_of(lengths, seed=0):
  rng = np.random.default_rng(seed)
  rows = [rng.integers(1, 100, n).astype(np.int32) for n in lengths]
  return batching.EncodedSplit.from_rows(rows, np.arange(len(lengths)) % 3)


def test_bucket_boundaries():
  assert batching.bucket_boundaries(64) == (16, 32, 64)
  assert batching.bucket_boundaries(100) == (16, 32, 64, 100)
  assert batching.bucket_boundaries(8) == (8,)
  assert batching.bucket_boundaries(64, 8, growth=1.25) == (8, 12, 16, 20, 28, 36, 48, 60, 64)


def test_epoch_covers_every_example_once_with_filler_rows():
  lengths = np.random.default_rng(1).integers(0, 60, 1003)
  split = split_of(lengths)
  stream = batching.TrainBatches(split, batch_size=32, boundaries=(16, 32, 64), seed=5)
  seen, weights = [], 0.0
  for step in range(stream.steps_per_epoch):
    b = stream.batch(step)
    assert b.token_ids.shape[0] == 32 and b.token_ids.shape[1] in (16, 32, 64)
    real = b.weights > 0
    weights += b.weights.sum()
    assert (b.lengths[~real] == 0).all() and (b.token_ids[~real] == 0).all()
    # Rows hold exactly their tokens, then padding.
    for row in np.flatnonzero(real):
      n = b.lengths[row]
      assert (b.token_ids[row, n:] == 0).all() and (b.token_ids[row, :n] > 0).all()
      seen.append(tuple(b.token_ids[row, :n]) + (b.labels[row],))
  assert weights == 1003
  expected = [tuple(split.tokens[split.offsets[i]:split.offsets[i + 1]]) + (split.labels[i],) for i in range(1003)]
  assert sorted(seen) == sorted(expected)


def test_order_depends_only_on_seed_and_epoch():
  split = split_of(np.random.default_rng(2).integers(1, 40, 300))
  a = batching.TrainBatches(split, 16, (16, 32, 64), seed=3)
  b = batching.TrainBatches(split, 16, (16, 32, 64), seed=3)
  c = batching.TrainBatches(split, 16, (16, 32, 64), seed=4)
  step = a.steps_per_epoch + 3  # Epoch 1; b jumps there directly, as a resumed run does.
  np.testing.assert_array_equal(a.batch(step).token_ids, b.batch(step).token_ids)
  assert not np.array_equal(a.batch(step).labels, c.batch(step).labels)
  assert not np.array_equal(a.batch(3).labels, a.batch(step).labels)  # Epochs differ.


def test_bucketing_keeps_padding_low_and_shapes_few():
  lengths = np.random.default_rng(3).integers(1, 64, 5000)
  split = split_of(lengths)
  stream = batching.TrainBatches(split, 64, batching.bucket_boundaries(64), seed=0)
  stats = stream.epoch_stats()
  assert stats['distinct_shapes'] <= 3
  naive = 1 - lengths.sum() / (64 * len(lengths))  # Everything padded to max_len: ~51%.
  assert stats['padding_fraction'] < 0.6 * naive


def test_eval_batches_cover_split():
  split = split_of([3, 70, 5, 9] * 10)
  batches = batching.eval_batches(split, 16, (16, 32, 64, 128))
  assert sum(b.weights.sum() for b in batches) == 40
  assert {b.token_ids.shape[1] for b in batches} <= {16, 128}


def test_empty_training_split_is_refused():
  with pytest.raises(ValueError, match='empty'):
    batching.TrainBatches(split_of([]), 8, (16,), seed=0)
