"""Row-sparse embedding updates (bigjax/train/sparse.py) against dense optax, by hand, across modes and resumes."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bigjax import experiment
from bigjax import training
from bigjax.config import checks
from bigjax.data import batching
from bigjax.errors import ConfigError
from bigjax.models import registry
from bigjax.tasks.classification import Classification
from bigjax.train import parallel, sparse
from bigjax.train import step as step_lib
from bigjax.types import Batch
from tests.test_train import tiny_config, write_corpus

TASK = Classification(2)
VOCAB, BUCKETS = 50, 64


def mlp_fns(**kwargs):
  model = registry.build_model('mlp', vocab_size=VOCAB, num_classes=2, embed_dim=8, dropout=0.0,
                               hidden_dims=(16,), bigram_buckets=BUCKETS, **kwargs)
  return registry.model_fns(model)


def batch_with_repeats(seed=0, rows=6, width=10, vocab=VOCAB):
  """Rows that repeat ids within and across rows (duplicates must be summed), some padding."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(1, 12, (rows, width)).astype(np.int32)  # Ids 1..11 of 50: many repeats, most rows untouched.
  lengths = rng.integers(3, width + 1, rows).astype(np.int32)
  ids[np.arange(width)[None, :] >= lengths[:, None]] = 0
  return Batch(ids, lengths, rng.integers(0, 2, rows).astype(np.int32), np.ones(rows, np.float32))


def jitted_step(fns, tx):
  return jax.jit(functools.partial(step_lib.train_step, loss_fn=functools.partial(TASK.loss, fns),
                                   count_fn=TASK.count, tx=tx))


def run_steps(fns, tx, batches):
  state = step_lib.create_train_state(fns, tx, jax.random.PRNGKey(0), batches[0])
  step = jitted_step(fns, tx)
  for batch in batches:
    state, _ = step(state, batch)
  return state


def test_distinct_rows_sums_duplicates():
  ids = jnp.array([3, 1, 3, 3, 0, 1], jnp.int32)
  values = jnp.arange(6, dtype=jnp.float32)[:, None] * jnp.ones((1, 2))
  rows = sparse.distinct_rows(ids, values, num_rows=5)
  table = jnp.zeros((5, 2)).at[rows.ids].add(rows.values, mode='drop')
  np.testing.assert_array_equal(table[:, 0], [4.0, 1 + 5, 0, 0 + 2 + 3, 0])
  assert sorted(int(i) for i in rows.ids if i < 5) == [0, 1, 3]  # One slot per distinct id; the rest filler.


def test_sparse_sgd_equals_dense_sgd_exactly():
  fns = mlp_fns()
  batches = [batch_with_repeats(seed) for seed in range(4)]
  dense = run_steps(fns, optax.sgd(0.5), batches)
  rows = run_steps(fns, sparse.RowSparseOptimizer(optax.sgd(0.5), sparse.sgd(0.5), 'embedding'), batches)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(dense.params), jax.tree.leaves(rows.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize('rule, dense_tx', [
    (sparse.lazy_adam(0.01), optax.adam(0.01)),
    (sparse.adagrad(0.1), optax.adagrad(0.1)),
])
def test_rules_equal_their_optax_optimizer_when_every_row_is_touched(rule, dense_tx):
  """Every id of a 12-word vocabulary in every batch (no bigrams): lazy and dense updates coincide."""
  model = registry.build_model('mlp', vocab_size=12, num_classes=2, embed_dim=8, dropout=0.0, hidden_dims=(16,))
  fns = registry.model_fns(model)
  rng = np.random.default_rng(0)
  batches = []
  for _ in range(5):
    ids = np.stack([rng.permutation(12) for _ in range(4)]).astype(np.int32)  # Every row, 4 times over.
    batches.append(Batch(ids, np.full(4, 12, np.int32), rng.integers(0, 2, 4).astype(np.int32),
                         np.ones(4, np.float32)))
  dense = run_steps(fns, dense_tx, batches)
  rows = run_steps(fns, sparse.RowSparseOptimizer(dense_tx, rule, 'embedding'), batches)
  for a, b in zip(jax.tree.leaves(dense.params), jax.tree.leaves(rows.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=1e-6)


def test_lazy_adam_updates_touched_rows_by_hand_and_leaves_the_rest_bit_identical():
  fns = mlp_fns()
  tx = sparse.RowSparseOptimizer(optax.adam(1e-2), sparse.lazy_adam(1e-2), 'embedding')
  first, second = batch_with_repeats(0), batch_with_repeats(1)
  state = run_steps(fns, tx, [first])
  step = jitted_step(fns, tx)

  # The reference: the dense gradient (the loss as the train step takes it: a mean over rows).
  def mean_loss(params):
    return TASK.loss(fns, params, second, jax.random.fold_in(state.rng, state.step))[0] / second.weights.sum()
  grad = jax.grad(mean_loss)(state.params)['embedding']['embedding']
  touched = np.unique(second.token_ids[np.arange(10)[None, :] < second.lengths[:, None]])

  new, _ = step(state, second)
  old_rows, new_rows = state.opt_state['rows']['embedding']['embedding'], new.opt_state['rows']['embedding']['embedding']
  table, new_table = np.asarray(state.params['embedding']['embedding']), np.asarray(new.params['embedding']['embedding'])
  g = np.asarray(grad)[touched]
  mu = 0.1 * g + 0.9 * np.asarray(old_rows['mu'])[touched]
  nu = 0.001 * g * g + 0.999 * np.asarray(old_rows['nu'])[touched]
  t = 2  # The second update.
  expected = table[touched] - 1e-2 * (mu / (1 - 0.9 ** t)) / (np.sqrt(nu / (1 - 0.999 ** t)) + 1e-8)
  np.testing.assert_allclose(new_table[touched], expected, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(np.asarray(new_rows['mu'])[touched], mu, rtol=1e-5, atol=1e-8)
  untouched = np.setdiff1d(np.arange(VOCAB), touched)
  first_touched = np.unique(first.token_ids)
  assert len(np.setdiff1d(untouched, first_touched)) > 0  # Rows with moments never set, and rows with old ones.
  np.testing.assert_array_equal(new_table[untouched], table[untouched])
  for key in ('mu', 'nu'):
    np.testing.assert_array_equal(np.asarray(new_rows[key])[untouched], np.asarray(old_rows[key])[untouched])
  assert int(new_rows['count']) == 2


def test_pmap_and_mesh_equal_one_device():
  assert jax.device_count() == 8, 'conftest.py asks for 8 fake CPU devices'
  fns = mlp_fns()
  tx = sparse.RowSparseOptimizer(optax.adam(1e-2), sparse.lazy_adam(1e-2), 'embedding')
  rng = np.random.default_rng(0)
  rows = [rng.integers(1, VOCAB, rng.integers(2, 16)).astype(np.int32) for _ in range(120)]
  split = batching.EncodedSplit.from_rows(rows, np.array([r.sum() % 2 for r in rows], np.int32))
  stream = batching.TrainBatches(split, batch_size=12, boundaries=(16,), seed=0)  # 12 rows: 4 filler per step.
  state = step_lib.create_train_state(fns, tx, jax.random.PRNGKey(0), stream.batch(0))
  final = {}
  for mode in parallel.MODES:
    driver = parallel.task_driver(mode, TASK, fns, tx)
    device_state = driver.put_state(state)
    for step in range(8):
      device_state, _ = driver.train_step(device_state, stream.batch(step))
    final[mode] = driver.get_state(device_state)
  for mode in ('pmap', 'mesh'):
    for a, b in zip(jax.tree.leaves(final[mode]), jax.tree.leaves(final['none'])):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


def test_resumed_sparse_run_equals_uninterrupted_run(tmp_path):
  data = write_corpus(tmp_path / 'data')
  config = tiny_config(data, **{'data.max_len': 16, 'data.smallest_bucket': 16, 'model.mlp.bigram_buckets': 256,
                                'optim.sparse_embeddings': 'embedding', 'optim.sparse_learning_rate': 0.05})
  straight = training.run_training(config, str(tmp_path / 'straight'))
  interrupted = str(tmp_path / 'interrupted')
  assert training.run_training(config, interrupted, stop_after_steps=7)['step'] == 7
  resumed = training.run_training(config, interrupted)
  assert resumed['params_fingerprint'] == straight['params_fingerprint']
  assert straight['test']['accuracy'] > 0.7  # It learns: the words say the label.


@pytest.mark.parametrize('overrides, expected', [
    ({'optim.sparse_embeddings': 'nothing_like_this'}, 'matches no embedding table'),
    ({'optim.sparse_embeddings': 'embedding', 'prune.target_sparsity': 0.5}, 'prune.target_sparsity'),
    ({'optim.sparse_embeddings': 'embedding', 'train.accum_steps': 2}, 'train.accum_steps'),
    ({'optim.sparse_embeddings': '(', }, 'not a regular expression'),
    ({'optim.sparse_embeddings': 'embedding', 'optim.sparse_rule': 'adam'}, 'optim.sparse_rule'),
])
def test_bad_sparse_settings_get_one_clear_error(tmp_path, overrides, expected):
  config = tiny_config(write_corpus(tmp_path / 'data'), **overrides)
  with pytest.raises(ConfigError, match=expected):
    checks.check_config(config)
    experiment.build_experiment(config, None)


def test_a_tied_output_layer_cannot_be_updated_by_rows():
  model = registry.build_model('lstm_lm', vocab_size=VOCAB, embed_dim=8, hidden_dim=8, tie_embeddings=True)
  fns = registry.model_fns(model)
  tx = sparse.RowSparseOptimizer(optax.adam(1e-2), sparse.lazy_adam(1e-2), 'embedding')
  ids = np.ones((2, 5), np.int32)
  params = fns.init(jax.random.PRNGKey(0), ids, np.full(2, 5, np.int32))

  def loss(params):
    return jnp.sum(fns.token_logits(params, ids, np.full(2, 5, np.int32))), {}
  with pytest.raises(ValueError, match='cannot be updated by rows'):
    tx.gradients(loss, params)


def test_row_gradients_equal_the_dense_gradient_with_a_teacher_of_the_same_names():
  """A distillation loss also runs the teacher, whose tables have the student's paths: only
  the student's lookups may become rows, and their sum must be the dense gradient."""
  from bigjax.compress import distill  # pylint: disable=g-import-not-at-top
  student, teacher = mlp_fns(), mlp_fns()
  batch = batch_with_repeats(3)
  params = student.init(jax.random.PRNGKey(1), batch.token_ids, batch.lengths)
  teacher_params = teacher.init(jax.random.PRNGKey(2), batch.token_ids, batch.lengths)
  task = distill.Distillation(TASK, teacher, temperature=2.0, alpha=0.5)
  loss = lambda p: task.loss(student, p, batch, None, teacher_params)
  dense = jax.grad(lambda p: loss(p)[0])(params)
  tx = sparse.RowSparseOptimizer(optax.sgd(1.0), sparse.sgd(1.0), 'embedding')
  (dense_part, rows), _ = tx.gradients(loss, params)
  for path, r in rows.items():
    module, name = path.split('/')
    table = np.zeros_like(np.asarray(params[module][name])).copy()
    np.add.at(table, np.asarray(r.ids)[np.asarray(r.ids) < len(table)],
              np.asarray(r.values)[np.asarray(r.ids) < len(table)])
    np.testing.assert_allclose(table, np.asarray(dense[module][name]), rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(np.asarray(dense_part['head']['kernel']), np.asarray(dense['head']['kernel']),
                             rtol=1e-5, atol=1e-7)
