"""The same step run by plain jit, pmap over 8 devices and jit over an 8-device mesh."""

import jax
import numpy as np
import optax
import pytest

from bigjax.data import batching
from bigjax.models import registry
from bigjax.tasks.classification import Classification
from bigjax.train import parallel
from bigjax.train import step as step_lib
from bigjax.train.loop import evaluate

NUM_CLASSES = 3
TASK = Classification(NUM_CLASSES)


def synthetic_split(n=250, seed=0):
  rng = np.random.default_rng(seed)
  rows = [rng.integers(1, 60, rng.integers(1, 30)).astype(np.int32) for _ in range(n)]
  labels = np.array([r.sum() % NUM_CLASSES for r in rows], np.int32)
  return batching.EncodedSplit.from_rows(rows, labels)


def drivers_and_state(model_name, batch):
  kwargs = {'hidden_dims': (32,)} if model_name == 'mlp' else {'hidden_dim': 16}
  model = registry.build_model(model_name, vocab_size=60, num_classes=NUM_CLASSES, embed_dim=16, dropout=0.0,
                               **kwargs)
  fns = registry.model_fns(model)
  tx = optax.adam(1e-2)
  state = step_lib.create_train_state(fns, tx, jax.random.PRNGKey(0), batch)
  return {mode: parallel.task_driver(mode, TASK, fns, tx) for mode in parallel.MODES}, state


@pytest.mark.parametrize('model_name', ['mlp', 'lstm'])
def test_none_pmap_mesh_give_the_same_parameters(model_name):
  assert jax.device_count() == 8, 'conftest.py asks for 8 fake CPU devices'
  # 12 rows per batch: does not divide by 8, so each step pads 4 zero-weight rows; 250
  # examples make the epoch's last batch short too (filler rows on top of that).
  stream = batching.TrainBatches(synthetic_split(), batch_size=12, boundaries=(32,), seed=0)
  drivers, state = drivers_and_state(model_name, stream.batch(0))
  final, losses = {}, {}
  for mode, driver in drivers.items():
    device_state = driver.put_state(state)
    losses[mode] = []
    for step in range(20 if model_name == 'mlp' else 12):
      device_state, sums = driver.train_step(device_state, stream.batch(step + stream.steps_per_epoch - 12))
      sums = driver.fetch([sums])[0]
      losses[mode].append(float(sums['loss'] / sums['examples']))
    final[mode] = driver.get_state(device_state)
    assert int(final[mode].step) == len(losses[mode])
  for mode in ('pmap', 'mesh'):
    np.testing.assert_allclose(losses[mode], losses['none'], rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(final[mode].params), jax.tree.leaves(final['none'].params)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
  assert losses['none'][-1] < losses['none'][0]


def test_eval_agrees_across_modes_with_uneven_batches():
  split = synthetic_split(n=37, seed=1)
  batches = batching.eval_batches(split, batch_size=20, boundaries=(32,))
  drivers, state = drivers_and_state('mlp', batches[0])
  reports = {mode: evaluate(d, TASK, d.put_state(state), batches) for mode, d in drivers.items()}
  for mode in ('pmap', 'mesh'):
    assert reports[mode]['confusion'] == reports['none']['confusion']
    assert reports[mode]['examples'] == 37
    np.testing.assert_allclose(reports[mode]['loss'], reports['none']['loss'], rtol=1e-5)


def test_pad_rows():
  b = batching.make_batch(synthetic_split(n=5), np.arange(5), 5, (32,))
  padded = parallel.pad_rows(b, 8)
  assert padded.token_ids.shape == (8, 32) and padded.weights.sum() == 5 and padded.weights[5:].sum() == 0
  assert parallel.pad_rows(padded, 8) is padded


@pytest.mark.parametrize('mode', parallel.MODES)
def test_accumulating_4_micro_batches_equals_one_big_batch(mode):
  stream = batching.TrainBatches(synthetic_split(n=64), batch_size=32, boundaries=(32,), seed=0)
  batch = stream.batch(0)
  model = registry.build_model('mlp', vocab_size=60, num_classes=NUM_CLASSES, embed_dim=16, dropout=0.0,
                               hidden_dims=(32,))
  fns = registry.model_fns(model)
  tx = optax.adam(1e-2)
  state = step_lib.create_train_state(fns, tx, jax.random.PRNGKey(0), batch)
  results = {}
  for accum in (1, 4):
    driver = parallel.task_driver(mode, TASK, fns, tx, accum_steps=accum)
    device_state = driver.put_state(state)
    for _ in range(3):
      device_state, sums = driver.train_step(device_state, batch)
    results[accum] = (driver.get_state(device_state).params, driver.fetch([sums])[0])
  np.testing.assert_allclose(results[4][1]['loss'], results[1][1]['loss'], rtol=1e-5)
  assert float(results[4][1]['examples']) == 32.0
  for a, b in zip(jax.tree.leaves(results[4][0]), jax.tree.leaves(results[1][0])):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_compiling_ahead_leaves_no_shape_for_the_steps_to_compile(caplog):
  stream = batching.TrainBatches(synthetic_split(), batch_size=12, boundaries=(8, 16, 24, 32), seed=0)
  examples = stream.shape_examples(0)
  reached = []
  for step in range(2 * stream.steps_per_epoch):
    width = stream.batch(step).token_ids.shape[1]
    if width not in reached:
      reached.append(width)
  assert [b.token_ids.shape for b in examples] == [(12, w) for w in reached] and len(reached) > 2
  # From a later step: the shapes from there on, in the order reached from there.
  later = stream.shape_examples(stream.steps_per_epoch + 3)
  assert later[0].token_ids.shape == stream.batch(stream.steps_per_epoch + 3).token_ids.shape

  dev = batching.eval_batches(synthetic_split(40, seed=1), 16, (8, 16, 24, 32))
  drivers, state = drivers_and_state('mlp', examples[0])
  driver = drivers['none']
  device_state = driver.put_state(state)
  ahead = driver.compile_ahead(device_state, examples, dev)
  ahead.join()
  assert ahead.compiled == len(examples) + len(dev)
  with jax.log_compiles(True), caplog.at_level('WARNING'):
    for step in range(stream.steps_per_epoch):
      device_state, _ = driver.train_step(device_state, stream.batch(step))
    for batch in dev:
      driver.eval_step(device_state, batch)
  compiled = [r.getMessage() for r in caplog.records if 'step' in r.getMessage() and 'ompil' in r.getMessage()]
  assert not compiled, compiled
  # pmap and mesh compile at each shape's first step.
  assert drivers['pmap'].compile_ahead(device_state, examples, dev) is None
