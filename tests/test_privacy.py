"""DP-SGD (bigjax.privacy): the accountant against dp_accounting and Opacus, Poisson sampling, the
clipping and noise of the step, the step on a mesh, and a private run through experiments.train."""
import dataclasses
import json
import os

import dp_accounting
import flax.linen as nn
from dp_accounting import pld
from dp_accounting import rdp
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bigjax import privacy
from bigjax import training
from bigjax.config import checks
from bigjax.data import batching
from bigjax.data.tokenizer import train_tokenizer
from bigjax.errors import ConfigError
from bigjax.export import model_card
from bigjax.models import registry
from bigjax.privacy import accounting, audit, clipping, dense_norms, sampling
from bigjax.tasks.classification import Classification
from bigjax.train import optim, parallel
from bigjax.train import step as step_lib
from bigjax.types import Batch
from test_train import FILLER, NEGATIVE, POSITIVE, TINY_TRANSFORMER, tiny_config, write_corpus

# IMDB's 25,000 reviews at batch 256 for 4 epochs, and SST-2's 6,920 sentences: the settings of the runs.
IMDB = accounting.Mechanism(25_000, 256 / 25_000, 330, 1.0)


def test_epsilon_is_dp_accountings_for_the_same_mechanism():
  steps, delta = 390, 1e-5
  tally = pld.PLDAccountant(value_discretization_interval=accounting.PLD_DISCRETIZATION)
  tally.compose(dp_accounting.SelfComposedDpEvent(
      dp_accounting.TruncatedSubsampledGaussianDpEvent(25_000, IMDB.sampling_rate, 330, 1.0), steps))
  assert accounting.epsilon(IMDB, steps, delta, 'pld') == pytest.approx(tally.get_epsilon(delta), rel=1e-12)
  # With rows enough that truncation almost never happens, it is near the Poisson-sampled Gaussian's
  # (the truncated mechanism's analysis costs 0.4 % of epsilon here).
  poisson = pld.PLDAccountant(value_discretization_interval=accounting.PLD_DISCRETIZATION)
  poisson.compose(dp_accounting.SelfComposedDpEvent(
      dp_accounting.PoissonSampledDpEvent(IMDB.sampling_rate, dp_accounting.GaussianDpEvent(1.0)), steps))
  assert poisson.get_epsilon(delta) <= accounting.epsilon(IMDB, steps, delta, 'pld') <= poisson.get_epsilon(delta) * 1.01
  renyi = rdp.RdpAccountant()
  renyi.compose(dp_accounting.SelfComposedDpEvent(
      dp_accounting.PoissonSampledDpEvent(IMDB.sampling_rate, dp_accounting.GaussianDpEvent(1.0)), steps))
  # rdp gives delta's share to the chance that truncation happens at all: with 330 rows it is 1.4e-3,
  # more than delta (refused); with 380, 1e-11.
  with pytest.raises(accounting.AccountingError, match='use the pld accountant'):
    accounting.epsilon(IMDB, steps, delta, 'rdp')
  roomy = dataclasses.replace(IMDB, max_rows=380)
  overflow = roomy.overflow_probability(steps)
  assert 0 < overflow < 1e-9
  assert accounting.epsilon(roomy, steps, delta, 'rdp') == pytest.approx(renyi.get_epsilon(delta - overflow), rel=1e-9)


@pytest.mark.parametrize('q,sigma,steps', [(256 / 25_000, 1.0, 390), (512 / 6_920, 2.0, 200), (0.01, 0.7, 1000)])
def test_rdp_epsilon_is_within_one_percent_of_opacus(q, sigma, steps):
  opacus_rdp = pytest.importorskip('opacus.accountants.rdp')
  n = round(256 / q)
  mechanism = accounting.Mechanism(n, q, n, sigma)  # Every row fits: Opacus's accountant knows no truncation.
  theirs = opacus_rdp.RDPAccountant()
  theirs.history = [(sigma, q, steps)]
  ours = accounting.epsilon(mechanism, steps, 1e-5, 'rdp')
  assert ours == pytest.approx(theirs.get_epsilon(1e-5), rel=0.01)


def test_noise_is_calibrated_to_the_target_and_unreachable_targets_are_refused():
  sigma = accounting.calibrate_noise(3.0, IMDB, 390, 1e-5)
  assert accounting.epsilon(dataclasses.replace(IMDB, noise_multiplier=sigma), 390, 1e-5) <= 3.0
  assert accounting.epsilon(dataclasses.replace(IMDB, noise_multiplier=sigma - 0.01), 390, 1e-5) > 3.0
  with pytest.raises(accounting.AccountingError, match='noise multiplier above 100'):
    accounting.calibrate_noise(1e-4, IMDB, 390, 1e-5)


def test_padded_rows_are_rarely_exceeded():
  rows = accounting.max_rows(25_000, 0.01, 1000, 1e-3)
  mechanism = accounting.Mechanism(25_000, 0.01, rows, 1.0)
  assert mechanism.overflow_probability(1000) <= 1e-3
  assert dataclasses.replace(mechanism, max_rows=rows - 1).overflow_probability(1000) > 1e-3


def _split(n, width=12, seed=0):
  rng = np.random.default_rng(seed)
  rows = [rng.integers(1, 50, rng.integers(2, width)).astype(np.int32) for _ in range(n)]
  return batching.EncodedSplit.from_rows(rows, rng.integers(0, 2, n))


def test_poisson_batches_sample_each_example_at_the_rate_in_a_fixed_shape():
  split = _split(2000)
  batches = sampling.PoissonBatches(split, 0.02, 70, (16,), seed=3)
  sizes, seen = [], np.zeros(len(split))
  for step in range(600):
    chosen = batches.indices(step)
    sizes.append(len(chosen))
    seen[chosen] += 1
    if step < 5:
      b = batches.batch(step)
      assert b.token_ids.shape == (70, 16) and b.weights.sum() == len(chosen)
  mean, var = 2000 * 0.02, 2000 * 0.02 * 0.98  # Binomial(n, q)
  assert np.mean(sizes) == pytest.approx(mean, abs=4 * np.sqrt(var / 600))
  assert np.var(sizes) == pytest.approx(var, rel=0.2)
  assert seen.mean() / 600 == pytest.approx(0.02, rel=0.05)
  assert np.array_equal(batches.indices(17), sampling.PoissonBatches(split, 0.02, 70, (16,), seed=3).indices(17))
  assert not np.array_equal(batches.indices(17), sampling.PoissonBatches(split, 0.02, 70, (16,), seed=4).indices(17))
  small = sampling.PoissonBatches(split, 0.02, 30, (16,), seed=3)  # Fewer rows than drawn: a subset of the draw.
  assert len(small.indices(1)) == 30 and set(small.indices(1)) <= set(batches.indices(1))


def _model(name, **own):
  section = {'name': name, 'embed_dim': 8, 'dropout': 0.0}
  section[name] = dict(registry.sections()[name].fields, **own)
  section[name] = {k: (v[0] if isinstance(v, tuple) else v) for k, v in section[name].items()}
  return registry.model_fns(registry.from_section(section, vocab_size=50, num_classes=2))


MODELS = {'mlp': dict(hidden_dim=8, bigram_buckets=16), 'lstm': dict(hidden_dim=8),
          'transformer': dict(num_layers=1, num_heads=2, intermediate_dim=16, max_positions=16, pooling='cls',
                              attention_dropout=0.0)}


def _batch(rows=6, width=12, seed=0, filler=2):
  split = _split(rows, width, seed)
  return batching.make_batch(split, np.arange(rows), rows + filler, (width,))


def _per_example_gradients(fns, params, batch):
  task = Classification(2)
  one = jax.jit(lambda row: jax.grad(lambda p: task.loss(fns, p, jax.tree.map(lambda x: x[None], row), None)[0])(params))
  return [one(jax.tree.map(lambda x: x[i], batch)) for i in range(int(batch.weights.sum()))]


@pytest.mark.parametrize('name', list(MODELS))
def test_clipped_sum_clips_each_example_and_ghost_norms_equal_full_ones(name):
  fns = _model(name, **MODELS[name])
  batch = _batch()
  params = fns.init(jax.random.PRNGKey(0), batch.token_ids, batch.lengths)
  per_example = _per_example_gradients(fns, params, batch)
  norms = [float(jnp.sqrt(sum(jnp.sum(g ** 2) for g in jax.tree.leaves(grads)))) for grads in per_example]
  clip = float(np.median(norms))  # Half the examples clipped, half not.
  expected = jax.tree.map(lambda *gs: sum(g * min(1.0, clip / n) for g, n in zip(gs, norms)), *per_example)
  for ghost in (False, True):
    private = clipping.PrivateGradients(Classification(2), fns, clip, 0.0, 1.0, ghost=ghost)
    assert (private._tables(params, batch.token_ids) is not None) == ghost  # pylint: disable=protected-access
    keys = jax.random.split(jax.random.PRNGKey(1), batch.weights.shape[0])
    dense = private._dense_calls(params, batch, keys, set())  # pylint: disable=protected-access
    assert [c.path[-1] for c in dense][-1:] == (['head'] if ghost else [])  # The LSTM's cell runs in a scan.
    summed, sums = jax.jit(private.clipped_sum)(params, batch, jax.random.PRNGKey(1))
    assert float(sums['clipped']) == sum(n > clip for n in norms)
    for got, want in zip(jax.tree.leaves(summed), jax.tree.leaves(expected)):
      np.testing.assert_allclose(got, want, atol=1e-6, rtol=1e-5)
  if name != 'mlp':
    return
  # Each clipped gradient alone: norm min(|g|, C) (one model: it is the same code for all three).
  for i in range(2):
    alone = jax.tree.map(lambda x: x[i:i + 1], batch)
    summed, _ = jax.jit(clipping.PrivateGradients(Classification(2), fns, clip, 0.0, 1.0).clipped_sum)(
        params, alone, jax.random.PRNGKey(1))
    norm = float(jnp.sqrt(sum(jnp.sum(g ** 2) for g in jax.tree.leaves(summed))))
    assert norm == pytest.approx(min(norms[i], clip), rel=1e-5) and norm <= clip * (1 + 1e-6)


# A table the ghost norms would serve, and a layer: either way only the trained leaves count.
@pytest.mark.parametrize('frozen', ['^embedding', '^layers_0/'])
def test_frozen_parameters_take_no_gradient_no_share_of_the_clip_and_no_noise(frozen):
  fns = _model('transformer', **MODELS['transformer'])
  batch = _batch()
  params = fns.init(jax.random.PRNGKey(0), batch.token_ids, batch.lengths)
  groups = optim.parse_param_groups(f'{frozen}=freeze')
  mask = optim.frozen_mask(groups)
  is_frozen = jax.tree.leaves(mask(params))
  assert any(is_frozen) and not all(is_frozen)
  trained = lambda tree: [x for x, f in zip(jax.tree.leaves(tree), is_frozen) if not f]
  per_example = _per_example_gradients(fns, params, batch)
  norms = [float(jnp.sqrt(sum(jnp.sum(g ** 2) for g in trained(grads)))) for grads in per_example]
  clip = float(np.median(norms))
  expected = [sum(g * min(1.0, clip / n) for g, n in zip(gs, norms)) for gs in zip(*map(trained, per_example))]
  private = clipping.PrivateGradients(Classification(2), fns, clip, 1.0, 1.0, frozen=mask)
  summed, sums = jax.jit(private.clipped_sum)(params, batch, jax.random.PRNGKey(1))
  assert float(sums['clipped']) == sum(n > clip for n in norms)
  for got, want in zip(trained(summed), expected):
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=1e-5)
  noisy = private.noisy_mean(summed, jax.random.PRNGKey(2), jnp.int32(0))
  for leaf, f in zip(jax.tree.leaves(noisy), is_frozen):
    assert not np.any(leaf) if f else np.all(leaf != 0)  # Noise on every trained coordinate only.
  # Through the step and the optimizer: the frozen leaves stay as they were.
  tx = optim.make_optimizer('adam', 1e-2, groups=groups)
  driver = parallel.task_driver('none', Classification(2), fns, tx, private=private)
  state = _states(fns, tx, batch)
  before = [np.array(x) for x in jax.tree.leaves(state.params)]  # (The step donates the state.)
  state, _ = driver.train_step(driver.put_state(state), batch)
  for before, after, f in zip(before, jax.tree.leaves(state.params), is_frozen):
    assert np.array_equal(before, after) == f


def test_shortcuts_and_formed_gradients_agree_with_dropout_on():
  # Each row keeps its own dropout key either way, so the masks, and the clipped sums, are the same.
  fns = _model('transformer', **dict(MODELS['transformer'], attention_dropout=0.3))
  batch = _batch()
  params = fns.init(jax.random.PRNGKey(0), batch.token_ids, batch.lengths)
  sums = [jax.jit(clipping.PrivateGradients(Classification(2), fns, 0.05, 0.0, 1.0, ghost=ghost).clipped_sum)(
      params, batch, jax.random.PRNGKey(1)) for ghost in (False, True)]
  assert float(sums[0][1]['clipped']) == float(sums[1][1]['clipped']) > 0
  for formed, ghost in zip(jax.tree.leaves(sums[0][0]), jax.tree.leaves(sums[1][0])):
    np.testing.assert_allclose(ghost, formed, atol=1e-6, rtol=1e-5)
  plain = jax.jit(clipping.PrivateGradients(Classification(2), fns, 0.05, 0.0, 1.0).clipped_sum)(
      params, batch, jax.random.PRNGKey(2))[0]
  assert not np.allclose(jax.tree.leaves(plain)[-1], jax.tree.leaves(sums[1][0])[-1])  # Dropout ran.


@pytest.mark.parametrize('positions,d_in,d_out', [(1, 5, 3), (3, 40, 50), (30, 4, 6)])  # Each way to the norm.
def test_dense_norms_and_sums_are_those_of_the_formed_gradients(positions, d_in, d_out):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(4, 1, positions, d_in)).astype(np.float32)  # Examples, one row each, positions.
  g = rng.normal(size=(4, 1, positions, d_out)).astype(np.float32)
  call = dense_norms.DenseCall(('layer',), 0, 1, 1, jax.ShapeDtypeStruct((1, positions, d_out), jnp.float32))
  kernels = np.einsum('brmi,brmo->bio', x, g)
  biases = g.sum(axis=(1, 2))
  want = (kernels ** 2).sum(axis=(1, 2)) + (biases ** 2).sum(axis=1)
  np.testing.assert_allclose(dense_norms.squared_norms(call, x, g), want, rtol=1e-5)
  factors = rng.uniform(size=4).astype(np.float32)
  kernel, bias = dense_norms.weighted_sums(call, factors, x, g, np.zeros((d_in, d_out), np.float32),
                                           np.zeros(d_out, np.float32))
  np.testing.assert_allclose(kernel, np.einsum('b,bio->io', factors, kernels), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(bias, factors @ biases, rtol=1e-5, atol=1e-5)


class _Step(nn.Module):
  @nn.compact
  def __call__(self, carry, x):
    return nn.Dense(3, name='step')(carry) + x, None


class _Layers(nn.Module):
  """A layer called once, one called twice, one whose kernel is read again, one scanned over."""

  @nn.compact
  def __call__(self, x):
    y = nn.Dense(3, name='once')(x)
    twice = nn.Dense(3, name='twice')
    y = twice(twice(y))
    tied = nn.Dense(3, name='tied')
    y = tied(y) + jnp.sum(tied.variables['params']['kernel'])
    scanned = nn.scan(_Step, variable_broadcast='params', split_rngs={'params': False}, length=2)
    y, _ = scanned(name='scan')(y, jnp.stack([y, y]))
    return jnp.sum(y ** 2)


def test_only_a_dense_layer_run_once_and_read_by_nothing_else_gets_norms_from_its_output():
  module = _Layers()
  x = jnp.ones((1, 3))
  params = module.init(jax.random.PRNGKey(0), x)['params']
  calls = dense_norms.find(lambda p: module.apply({'params': p}, x), params, set())
  assert [c.path for c in calls] == [('once',)]
  kernel = next(i for i, leaf in enumerate(jax.tree.leaves(params)) if leaf is params['once']['kernel'])
  assert dense_norms.find(lambda p: module.apply({'params': p}, x), params, {kernel}) == []  # Frozen: skipped.


@pytest.mark.parametrize('slots', [12, clipping.PAIRWISE_SLOTS + 4])  # Both ways of finding repeated rows.
def test_table_norms_add_the_slots_that_read_the_same_row(slots):
  rng = np.random.default_rng(0)
  rows = rng.integers(0, 9, (5, slots)).astype(np.int32)  # Many repeats.
  grads = rng.normal(size=(5, slots, 3)).astype(np.float32)
  want = [sum(np.sum(grads[i, rows[i] == v].sum(axis=0) ** 2) for v in set(rows[i])) for i in range(5)]
  np.testing.assert_allclose(clipping.table_squared_norms(jnp.asarray(rows), jnp.asarray(grads)), want, rtol=1e-5)


def test_micro_batches_give_the_same_clipped_sum():
  fns = _model('mlp', **MODELS['mlp'])
  batch = _batch()
  params = fns.init(jax.random.PRNGKey(0), batch.token_ids, batch.lengths)
  private = clipping.PrivateGradients(Classification(2), fns, 0.5, 0.0, 1.0)
  whole, _ = private.clipped_sum(params, batch, jax.random.PRNGKey(1))
  parts, _ = private.clipped_sum(params, batch, jax.random.PRNGKey(1), accum_steps=4)
  for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(parts)):
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5)


def test_noise_has_standard_deviation_sigma_times_clip():
  zeros = {'w': jnp.zeros((400, 500)), 'b': jnp.zeros((7,))}
  private = clipping.PrivateGradients(None, None, clip_norm=0.3, noise_multiplier=2.0, expected_batch=10.0)
  noisy = private.noisy_mean(zeros, jax.random.PRNGKey(0), jnp.int32(5))
  values = np.asarray(noisy['w']).ravel() * 10.0  # The sum's noise, before the division.
  assert values.std() == pytest.approx(0.6, rel=0.01) and abs(values.mean()) < 0.01
  again = private.noisy_mean(zeros, jax.random.PRNGKey(0), jnp.int32(6))
  assert not np.allclose(again['w'], noisy['w'])  # A new draw each step.


def _states(fns, tx, batch):
  return step_lib.create_train_state(fns, tx, jax.random.PRNGKey(0), batch)


def test_without_noise_and_with_a_clip_above_every_norm_the_private_step_is_the_plain_step():
  fns = _model('transformer', **MODELS['transformer'])
  batch = _batch(8, 12, filler=0)  # Every row real: the plain step's mean is over 8, as the private one's.
  task = Classification(2)
  tx = optim.make_optimizer('adam', optim.make_schedule('constant', 1e-2, 10))
  private = clipping.PrivateGradients(task, fns, 1e6, 0.0, expected_batch=8.0)
  plain_driver = parallel.task_driver('none', task, fns, tx)
  private_driver = parallel.task_driver('none', task, fns, tx, private=private)
  plain, private_state = (d.put_state(_states(fns, tx, batch)) for d in (plain_driver, private_driver))
  for _ in range(3):
    plain, plain_sums = plain_driver.train_step(plain, batch)
    private_state, private_sums = private_driver.train_step(private_state, batch)
  for a, b in zip(jax.tree.leaves(plain.params), jax.tree.leaves(private_state.params)):
    np.testing.assert_allclose(a, b, atol=2e-6, rtol=1e-5)
  assert float(private_sums['loss']) == pytest.approx(float(plain_sums['loss']), rel=1e-5)


@pytest.mark.parametrize('mode,mesh', [('pmap', None), ('mesh', {'mesh_shape': None}),
                                       ('mesh', {'mesh_shape': 'fsdp'})])
def test_a_private_step_on_eight_devices_is_the_one_device_step(mode, mesh):
  from bigjax.train import sharding  # pylint: disable=g-import-not-at-top
  fns = _model('mlp', **MODELS['mlp'])
  batch = _batch(14, 12)  # 16 rows: two a device.
  task = Classification(2)
  tx = optim.make_optimizer('adam', optim.make_schedule('constant', 1e-2, 10))
  private = clipping.PrivateGradients(task, fns, 0.1, 1.0, expected_batch=14.0)
  if mesh is not None:
    shape = sharding.MeshShape(data=1, fsdp=8) if mesh['mesh_shape'] == 'fsdp' else None
    mesh = {'mesh_shape': shape, 'fsdp_min_size': 16}
  one, many = (parallel.task_driver(m, task, fns, tx, mesh=mesh if m == 'mesh' else None, private=private)
               for m in ('none', mode))
  state_one, state_many = (d.put_state(_states(fns, tx, batch)) for d in (one, many))
  for _ in range(3):
    state_one, _ = one.train_step(state_one, batch)
    state_many, _ = many.train_step(state_many, batch)
  # The model has no dropout: the rows' keys differ between layouts, nothing else does.
  for a, b in zip(jax.tree.leaves(one.get_state(state_one).params), jax.tree.leaves(many.get_state(state_many).params)):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4)


def _public_tokenizer(folder):
  """A tokenizer learnt from other text than the run's: the corpus's words and 300 it never uses
  (a public vocabulary is larger than any one dataset's; canaries are drawn from all of it)."""
  words = FILLER + POSITIVE + NEGATIVE + [f'rare{i}' for i in range(300)]
  tokenizer = train_tokenizer([' '.join(words)] * 3, vocab_size=400, kind='word', min_frequency=1)
  os.makedirs(folder, exist_ok=True)
  return tokenizer.save(str(folder))


def _private_config(tmp_path, **overrides):
  data = write_corpus(tmp_path / 'data', sizes=(400, 40, 40))
  options = {'dp.enabled': True, 'dp.noise_multiplier': 0.8, 'dp.clip_norm': 1.0,
             'data.tokenizer_file': _public_tokenizer(tmp_path / 'public'), 'data.max_len': 16,
             'data.smallest_bucket': 16, 'train.batch_size': 40, 'train.steps': 20, 'optim.learning_rate': 0.05,
             'model.dropout': 0.0, 'checkpoint.every_steps': 10, 'train.log_every_steps': 5}
  options.update(overrides)
  return tiny_config(data, 'mlp', **options)


def test_a_private_run_reports_epsilon_and_resumes_exactly(tmp_path):
  config = _private_config(tmp_path)
  checks.check_config(config)
  straight = training.run_training(config, str(tmp_path / 'straight'))
  first = training.run_training(config, str(tmp_path / 'resumed'), stop_after_steps=7)
  assert first['step'] == 7
  resumed = training.run_training(config, str(tmp_path / 'resumed'))
  assert resumed['params_fingerprint'] == straight['params_fingerprint']  # Sampling and noise: functions of the step.
  spent = straight['privacy']
  mechanism = accounting.Mechanism(400, 0.1, spent['padded_rows'], 0.8)
  assert spent['epsilon'] == pytest.approx(accounting.epsilon(mechanism, 20, 1 / 400 ** 1.1))
  assert resumed['privacy'] == spent
  assert spent['delta'] == pytest.approx(1 / 400 ** 1.1)
  recorded = json.loads((tmp_path / 'straight' / 'config.json').read_text())['derived']['privacy']
  assert recorded['epsilon'] == spent['epsilon'] and 'public' in recorded['tokenizer']
  card = '\n'.join(model_card.privacy_lines(recorded))  # What an exported model's card says.
  assert f'(epsilon, delta) = ({spent["epsilon"]:.3g}, {spent["delta"]:.3g})' in card and 'not protected' in card
  assert 'without differential privacy' in '\n'.join(model_card.privacy_lines(None))
  lines = [json.loads(line) for line in (tmp_path / 'straight' / 'metrics.jsonl').read_text().splitlines()]
  logged = [r for r in lines if r['kind'] == 'privacy']
  assert [r['step'] for r in logged] == [5, 10, 15, 20]
  assert all(a['epsilon'] < b['epsilon'] for a, b in zip(logged, logged[1:]))
  assert logged[-1]['epsilon'] == pytest.approx(spent['epsilon'])
  assert 0.0 <= logged[0]['clipped_fraction'] <= 1.0


def test_a_target_epsilon_calibrates_the_noise(tmp_path):
  config = _private_config(tmp_path, **{'dp.noise_multiplier': 0.0, 'dp.target_epsilon': 4.0})
  results = training.run_training(config, str(tmp_path / 'run'))
  assert results['privacy']['epsilon'] <= 4.0 and results['privacy']['epsilon'] == pytest.approx(4.0, abs=0.01)
  assert results['privacy']['target_epsilon'] == 4.0


@pytest.mark.parametrize('overrides,message', [
    ({'dp.clip_norm': 0.0}, r'dp.clip_norm=0.0 must be > 0'),
    ({'dp.noise_multiplier': 0.0}, 'with no noise'),
    ({'dp.target_epsilon': 2.0}, 'are both set'),
    ({'data.tokenizer_file': ''}, 'a tokenizer trained on the private examples'),
    ({'dp.accountant': 'moments'}, "dp.accountant='moments' is unknown"),
])
def test_bad_private_settings_stop_before_any_data_is_read(tmp_path, overrides, message):
  with pytest.raises(ConfigError, match=message):
    checks.check_config(_private_config(tmp_path, **overrides))


@pytest.mark.parametrize('overrides,message', [
    ({'dp.delta': 0.01}, r'dp.delta=0.01 is not below 1/n = 0.0025 for the n=400'),
    ({'dp.noise_multiplier': 0.0, 'dp.target_epsilon': 1e-4}, 'needs a noise multiplier above 100'),
])
def test_settings_that_need_the_data_size_stop_before_any_step(tmp_path, overrides, message):
  config = _private_config(tmp_path, **overrides)
  checks.check_config(config)
  with pytest.raises(ConfigError, match=message):
    training.run_training(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run' / 'checkpoints').exists()


def test_attack_auc_is_the_pairwise_chance_and_exposure_the_rank():
  rng = np.random.default_rng(0)
  members, nonmembers = rng.integers(0, 5, 40).astype(float), rng.integers(1, 6, 30).astype(float)  # With ties.
  pairwise = np.mean([(m < n) + 0.5 * (m == n) for m in members for n in nonmembers])
  assert audit.auc(members, nonmembers) == pytest.approx(pairwise, rel=1e-12)
  assert audit.auc(np.zeros(5), np.ones(5)) == 1.0 and audit.auc(np.ones(5), np.ones(5)) == 0.5
  references = np.arange(1.0, 1024.0)  # 1,023 references.
  np.testing.assert_allclose(audit.exposure(np.array([0.5, 1023.5, 511.5]), references), [10.0, 0.0, 1.0])  # Ranks 1, 1024, 512.


def test_canaries_are_drawn_again_as_the_run_drew_them(tmp_path):
  tokenizer = train_tokenizer([' '.join(FILLER + POSITIVE + NEGATIVE)], vocab_size=400, kind='word', min_frequency=1)
  how = audit.Canaries(count=3, repeats=5, length=7, seed=2)
  first, again = audit.canaries(tokenizer, 2, how), audit.canaries(tokenizer, 2, how)
  assert np.array_equal(first.tokens, again.tokens) and np.array_equal(first.labels, again.labels)
  assert set(first.tokens) <= set(audit.ordinary_ids(tokenizer)) and len(first.tokens) == 21
  references = audit.references(tokenizer, 2, how, 50)
  assert not any(np.array_equal(references.tokens[i * 7:(i + 1) * 7], first.tokens[:7]) for i in range(50))
  train = _split(10)
  assert len(audit.with_canaries(train, first, 5)) == 10 + 15


def test_the_audit_of_a_run_that_memorised_its_canaries(tmp_path):
  """A non-private run that sees each canary 30 times ranks them far above sequences it never saw."""
  from entry_points import run_module  # pylint: disable=g-import-not-at-top
  config = _private_config(tmp_path, **{'dp.enabled': False, 'audit.canaries': 4, 'audit.canary_repeats': 30,
                                        'audit.canary_length': 8, 'train.steps': 150, 'train.batch_size': 32,
                                        'model.mlp.bigram_buckets': 256, 'checkpoint.every_steps': 150})
  results = training.run_training(config, str(tmp_path / 'run'))
  assert 'privacy' not in results
  out = tmp_path / 'audit.json'
  done = run_module('experiments.audit', [f'--workdir={tmp_path / "run"}', '--references=255', f'--json_out={out}'])
  assert done.returncode == 0, done.stderr
  report = json.loads(out.read_text())
  assert report['privacy'] is None and report['canaries']['count'] == 4
  assert report['canaries']['exposure_ceiling'] == 8.0
  assert report['canaries']['exposure_mean'] > 5.0  # Chance: about 1.4 (the mean of log2(256 / rank)).
  assert 0.0 <= report['membership']['auc'] <= 1.0 and report['membership']['members'] == 400
