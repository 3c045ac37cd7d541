"""Parameters sharded over a data x fsdp x tensor mesh of 8 fake CPU devices: the same training
as one device, a fraction of the bytes on each, and checkpoints that move between mesh shapes.

Tolerance. A sharded step adds the same numbers in another order (a matmul's sum split over
devices, then all-reduced), so float32 results differ in the last bits; 20 Adam steps carry
that forward. Losses agree to rtol 2e-5 and parameters to 1e-4 relative (atol 1e-5 for values
near 0): a wrong layout (a dimension reduced twice, rows dropped) moves them by percents.
"""
import jax
import numpy as np
import optax
import pytest

from bigjax import training
from bigjax.checkpoint import Checkpointer
from bigjax.config import checks
from bigjax.data import batching
from bigjax.models import registry
from bigjax.tasks.classification import Classification
from bigjax.train import parallel, sharding
from bigjax.train import step as step_lib
from tests.test_train import tiny_config, write_corpus

NUM_CLASSES = 3
TASK = Classification(NUM_CLASSES)
MESHES = {'data=8': (8, 1, 1), 'fsdp=8': (1, 8, 1), 'data=2 fsdp=2 tensor=2': (2, 2, 2),
          'fsdp=4 tensor=2': (1, 4, 2)}


def synthetic_split(n=160, seed=0, vocab=64):
  rng = np.random.default_rng(seed)
  rows = [rng.integers(1, vocab, rng.integers(2, 16)).astype(np.int32) for _ in range(n)]
  labels = np.array([r.sum() % NUM_CLASSES for r in rows], np.int32)
  return batching.EncodedSplit.from_rows(rows, labels)


def transformer_fns():
  model = registry.build_model('transformer', vocab_size=64, num_classes=NUM_CLASSES, embed_dim=32, dropout=0.0,
                               num_layers=2, num_heads=4, intermediate_dim=64, max_positions=16,
                               attention_dropout=0.0)
  return registry.model_fns(model)


def mesh_driver(fns, tx, sizes, **kwargs):
  return parallel.task_driver('mesh', TASK, fns, tx, mesh=dict(mesh_shape=sharding.MeshShape(*sizes), **kwargs))


def train(driver, state, batches):
  device_state, losses = driver.put_state(state), []
  for batch in batches:
    device_state, sums = driver.train_step(device_state, batch)
    sums = driver.fetch([sums])[0]
    losses.append(float(sums['loss'] / sums['examples']))
  return driver.get_state(device_state), losses


def assert_same_training(result, reference):
  (state, losses), (ref_state, ref_losses) = result, reference
  np.testing.assert_allclose(losses, ref_losses, rtol=2e-5)
  for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(ref_state.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


@pytest.fixture(scope='module')
def transformer_setup():
  fns = transformer_fns()
  tx = optax.adamw(3e-3, weight_decay=0.01)
  stream = batching.TrainBatches(synthetic_split(), batch_size=16, boundaries=(16,), seed=0)
  batches = [stream.batch(step) for step in range(20)]
  state = step_lib.create_train_state(fns, tx, jax.random.PRNGKey(0), batches[0])
  reference = train(parallel.task_driver('none', TASK, fns, tx), state, batches)
  return fns, tx, batches, state, reference


@pytest.mark.parametrize('mesh', list(MESHES))
def test_every_mesh_trains_as_one_device(transformer_setup, mesh):
  assert jax.device_count() == 8, 'conftest.py asks for 8 fake CPU devices'
  fns, tx, batches, state, reference = transformer_setup
  driver = mesh_driver(fns, tx, MESHES[mesh])
  result = train(driver, state, batches)
  assert_same_training(result, reference)
  assert reference[1][-1] < reference[1][0]
  # The layout is the one asked for: the state the step returns is still split by the rules.
  final = result[0]
  query = final.params['layers_0']['query']['kernel']  # [embed, heads, kv]
  assert query.sharding.spec == sharding._fit(('fsdp', 'tensor'), query.shape, driver.mesh)


def test_fsdp_8_keeps_a_sixth_of_the_bytes_on_each_device(transformer_setup):
  fns, tx, batches, state, _ = transformer_setup
  driver = mesh_driver(fns, tx, MESHES['fsdp=8'])
  device_state = driver.put_state(state)
  replicated = mesh_driver(fns, tx, MESHES['data=8']).put_state(state)
  held = sharding.bytes_per_device((device_state.params, device_state.opt_state))
  whole = sharding.bytes_per_device((replicated.params, replicated.opt_state))
  assert whole == sum(x.nbytes for x in jax.tree.leaves((state.params, state.opt_state)))
  assert held <= whole / 6, (held, whole)
  memory = driver.memory(device_state, batches[0])
  assert memory['params_bytes_per_device'] + memory['optimizer_bytes_per_device'] == held
  assert memory['step_temp_bytes_per_device'] > 0 and memory['mesh'] == {'data': 1, 'fsdp': 8, 'tensor': 1}


def test_a_checkpoint_saved_on_2x2x2_restores_on_fsdp_8_and_on_one_device(transformer_setup, tmp_path):
  fns, tx, batches, state, _ = transformer_setup
  saving_driver = mesh_driver(fns, tx, MESHES['data=2 fsdp=2 tensor=2'])
  saved, _ = train(saving_driver, state, batches[:1])  # Adam's moments are no longer zeros.
  assert not saved.params['embedding']['embedding'].sharding.is_fully_replicated
  checkpointer = Checkpointer(str(tmp_path / 'checkpoints'), async_save=False)
  checkpointer.save(1, saved, {})
  expected = jax.device_get(saved)
  for target_driver in (mesh_driver(fns, tx, MESHES['fsdp=8']), parallel.task_driver('none', TASK, fns, tx)):
    target = target_driver.abstract_state(state)
    restored, _ = checkpointer.restore(1, target)
    for a, b, where in zip(jax.tree.leaves(restored), jax.tree.leaves(expected), jax.tree.leaves(target)):
      np.testing.assert_array_equal(np.asarray(a), b)
      assert a.sharding == where.sharding  # Read straight into the target's layout.
  table = restored.params['embedding']['embedding']  # One device: whole.
  assert table.addressable_shards[0].data.shape == (64, 32)
  fsdp_restored, _ = checkpointer.restore(1, mesh_driver(fns, tx, MESHES['fsdp=8']).abstract_state(state))
  table = fsdp_restored.params['embedding']['embedding']  # [vocab, embed]: embed split 8 ways.
  assert table.sharding.spec == jax.sharding.PartitionSpec(None, 'fsdp')
  assert table.addressable_shards[0].data.shape == (64, 4)
  checkpointer.close()


def test_the_mlp_bigram_table_is_split_over_fsdp_and_trains_as_one_device():
  model = registry.build_model('mlp', vocab_size=64, num_classes=NUM_CLASSES, embed_dim=16, dropout=0.0,
                               hidden_dims=(16,), bigram_buckets=256)
  fns = registry.model_fns(model)
  tx = optax.adam(1e-2)
  stream = batching.TrainBatches(synthetic_split(), batch_size=16, boundaries=(16,), seed=0)
  batches = [stream.batch(step) for step in range(20)]
  state = step_lib.create_train_state(fns, tx, jax.random.PRNGKey(0), batches[0])
  reference = train(parallel.task_driver('none', TASK, fns, tx), state, batches)
  driver = mesh_driver(fns, tx, MESHES['fsdp=8'], fsdp_min_size=1024)
  result = train(driver, state, batches)
  assert_same_training(result, reference)
  specs = sharding.spec_text(driver.param_specs)
  bigram = [path for path in specs if 'bigram' in path]
  assert bigram, specs  # The hashed-bigram table ([buckets, embed]) is split; small leaves are not.
  table = jax.tree_util.tree_flatten_with_path(result[0].params)[0]
  for path, leaf in table:
    if leaf.size < 1024:
      assert leaf.sharding.is_fully_replicated, jax.tree_util.keystr(path)


@pytest.mark.parametrize('text, error', [('embed=fsdp,heads', 'is not LOGICAL=MESH_AXIS'),
                                         ('embed=model', "'model' is not a mesh axis")])
def test_bad_rules_are_named(text, error):
  with pytest.raises(ValueError, match=error):
    sharding.parse_rules(text)


@pytest.mark.parametrize('sizes, devices, expected', [((-1, 1, 1), 8, (8, 1, 1)), ((2, -1, 2), 8, (2, 2, 2)),
                                                      ((1, 8, 1), 8, (1, 8, 1))])
def test_mesh_sizes_resolve(sizes, devices, expected):
  assert tuple(sharding.MeshShape(*sizes).resolve(devices).values()) == expected


@pytest.mark.parametrize('sizes, error', [((-1, -1, 1), 'only one'), ((3, 1, 1), 'has 3 places for 8'),
                                          ((-1, 3, 1), 'not a multiple of 3')])
def test_bad_mesh_sizes_are_named(sizes, error):
  with pytest.raises(ValueError, match=error):
    sharding.MeshShape(*sizes).resolve(8)


def test_four_micro_batches_of_8_equal_one_batch_of_32_on_a_sharded_mesh(transformer_setup):
  fns, tx, _, state, _ = transformer_setup
  stream = batching.TrainBatches(synthetic_split(), batch_size=32, boundaries=(16,), seed=1)
  batches = [stream.batch(step) for step in range(3)]
  whole = train(parallel.task_driver('none', TASK, fns, tx), state, batches)
  accumulated = train(parallel.task_driver('mesh', TASK, fns, tx, accum_steps=4, mesh=dict(
      mesh_shape=sharding.MeshShape(1, 4, 2))), state, batches)
  # The same tolerance as the meshes': the sums of 4 micro-batches are the batch's sums, reordered.
  assert_same_training(accumulated, whole)


def test_remat_cuts_an_8_layer_steps_temporaries_3x_at_the_same_loss():
  # Eight layers: the cut grows with depth (3.9x here, 4.8x at 12 layers); each unrolled layer
  # without remat costs its own compile time.
  stream = batching.TrainBatches(synthetic_split(vocab=64), batch_size=8, boundaries=(16,), seed=0)
  batch = stream.batch(0)
  batch = batch._replace(token_ids=np.tile(batch.token_ids, (1, 2)), lengths=batch.lengths * 2)  # 32 tokens a row.
  tx = optax.adamw(1e-3)
  temps, losses, params = {}, {}, {}
  for remat in ('', 'nothing_saveable'):
    model = registry.build_model('transformer', vocab_size=64, num_classes=NUM_CLASSES, embed_dim=32, dropout=0.0,
                                 num_layers=8, num_heads=4, intermediate_dim=128, max_positions=32,
                                 attention_dropout=0.0, remat=remat)
    fns = registry.model_fns(model)
    driver = parallel.task_driver('none', TASK, fns, tx)
    device_state = driver.put_state(step_lib.create_train_state(fns, tx, jax.random.PRNGKey(0), batch))
    temps[remat] = driver.memory(device_state, batch)['step_temp_bytes_per_device']
    device_state, sums = driver.train_step(device_state, batch)  # Compiled by memory(): jit's cache.
    losses[remat] = float(driver.fetch([sums])[0]['loss'])
    params[remat] = driver.get_state(device_state).params
  assert temps[''] >= 3 * temps['nothing_saveable'], temps
  np.testing.assert_allclose(losses['nothing_saveable'], losses[''], rtol=1e-6)
  for a, b in zip(jax.tree.leaves(params['nothing_saveable']), jax.tree.leaves(params[''])):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)  # The same gradients, applied.


# Slow tier: the default tier checks each part more cheaply (a checkpoint read onto another mesh,
# the meshes' exactness, the memory report); this is them together through run_training.
@pytest.mark.slow
def test_a_run_stopped_on_2x2x2_resumes_on_fsdp_8_as_if_uninterrupted(tmp_path):
  data = write_corpus(str(tmp_path / 'data'))

  def config(**mesh):
    c = tiny_config(data, model='transformer', **{
        'train.steps': 6, 'checkpoint.every_steps': 3, 'train.batch_size': 16, 'model.transformer.num_layers': 1,
        'data.max_len': 16, 'data.smallest_bucket': 16, 'model.transformer.num_heads': 2,
        'model.transformer.intermediate_dim': 32, 'model.transformer.max_positions': 16, 'model.dropout': 0.0,
        'model.transformer.attention_dropout': 0.0, 'parallel': 'mesh',
        **{f'mesh.{axis}': size for axis, size in mesh.items()}})
    checks.check_config(c)
    return c

  cube = dict(data=2, fsdp=2, tensor=2)
  whole = training.run_training(config(**cube), str(tmp_path / 'whole'))
  assert whole['memory']['mesh'] == cube and whole['memory']['split_params'] > 0
  assert whole['memory']['step_temp_bytes_per_device'] > 0
  stopped = training.run_training(config(**cube), str(tmp_path / 'resumed'), stop_after_steps=3)
  assert stopped['step'] == 3
  resumed = training.run_training(config(data=1, fsdp=8), str(tmp_path / 'resumed'))
  assert resumed['memory']['mesh'] == {'data': 1, 'fsdp': 8, 'tensor': 1}
  assert resumed['memory']['params_bytes_per_device'] < whole['memory']['params_bytes_per_device']
  for name, norm in whole['params_l2'].items():  # (Key biases get no gradient: float noise near 0.)
    assert resumed['params_l2'][name] == pytest.approx(norm, rel=1e-5, abs=1e-5), name
