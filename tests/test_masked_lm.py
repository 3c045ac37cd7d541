"""Masked-LM pretraining (bigjax/data/masking.py, bigjax/tasks/masked_lm.py, transformer_mlm): the
masking's statistics and determinism, the loss against a direct computation, padding, gradients,
and experiments.pretrain end to end: stopped and resumed bit-exactly; a classifier's start from it."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bigjax import experiment
from bigjax import runs
from bigjax import training
from bigjax import transfer
from bigjax.config import checks
from bigjax.data import batching, masking
from bigjax.models import registry
from bigjax.tasks.masked_lm import MaskedLanguageModeling
from bigjax.types import Batch
from experiments import cli
from experiments.configs import mlm_imdb, transformer_imdb
from test_language_model import write_reviews
from tests.entry_points import run_cases
from tests.test_transformer import assert_directional_derivatives, random_params

VOCAB, MASK_ID, FIRST_ORDINARY = 40, 4, 5
TASK = MaskedLanguageModeling()


def masker(vocab=VOCAB, max_len=12, **extra):
  return masking.Masking(MASK_ID, FIRST_ORDINARY, vocab, masking.max_predictions(0.15, max_len), **extra)


def padded_rows(lengths, width, vocab=VOCAB, seed=0) -> Batch:
  """Rows of ordinary token ids, padded with 0 to `width`; rows of length 0 are filler rows."""
  rng = np.random.default_rng(seed)
  lengths = np.asarray(lengths, np.int32)
  ids = rng.integers(FIRST_ORDINARY, vocab, (len(lengths), width)).astype(np.int32)
  ids[np.arange(width)[None] >= lengths[:, None]] = 0
  return Batch(ids, lengths, np.zeros(len(lengths), np.int32), (lengths > 0).astype(np.float32))


def test_masking_statistics_on_a_large_batch():
  """k = round(15 % of n) of each row's n tokens (at least 1, at most M), never padding; of them
  80 % read as the mask token, 10 % as a random ordinary token, 10 % as themselves."""
  vocab, width = 1000, 128
  rng = np.random.default_rng(1)
  lengths = np.concatenate([rng.integers(1, width + 1, 4000), np.zeros(40, np.int64)])  # 40 filler rows.
  batch = padded_rows(lengths, width, vocab)
  m = masker(vocab, width)
  out = m.mask(batch, seed=3, purpose=masking.TRAIN, number=7, first_row=0)
  assert out.positions.shape == out.targets.shape == out.target_weights.shape == (len(lengths), m.max_predictions)
  chosen = out.target_weights > 0
  per_row = chosen.sum(1)
  expected = np.array([min(max(1, round(0.15 * n)), m.max_predictions) if n else 0 for n in lengths])
  np.testing.assert_array_equal(per_row, expected)
  assert per_row.max() == m.max_predictions == 19  # No row loses a slot at 128 tokens.
  # Each row is at most half a token off 15 % (one for the rows of 1-3 tokens that still get one).
  real = int(lengths.sum())
  assert abs(per_row.sum() / real - 0.15) <= (0.5 * len(lengths) + np.sum(lengths < 4)) / real
  rows, slots = np.nonzero(chosen)
  positions = out.positions[rows, slots]
  assert (positions < lengths[rows]).all()  # Never a padded position, never past the length.
  assert all(len(set(out.positions[r, :k])) == k for r, k in enumerate(per_row))  # Distinct positions.
  assert (out.positions[~chosen] == 0).all() and (out.targets[~chosen] == 0).all()
  np.testing.assert_array_equal(out.targets[rows, slots], batch.token_ids[rows, positions])
  untouched = np.ones(batch.token_ids.shape, bool)
  untouched[rows, positions] = False
  np.testing.assert_array_equal(out.token_ids[untouched], batch.token_ids[untouched])  # Padding stays 0.
  # Uniform over a row: the chosen positions' mean relative place is 1/2 (std of the mean < 0.002).
  assert abs(np.mean((positions + 0.5) / lengths[rows]) - 0.5) < 0.01
  seen = out.token_ids[rows, positions]
  masked, kept = seen == MASK_ID, seen == out.targets[rows, slots]
  replaced = ~masked & ~kept
  assert (seen[replaced] >= FIRST_ORDINARY).all() and (seen < vocab).all()
  # Binomial tolerances: 5 standard deviations of a share among the ~38,000 chosen tokens. A
  # random replacement equal to the original reads as kept: 1 in (vocab - 5).
  hit = 1.0 / (vocab - FIRST_ORDINARY)
  for share, p in ((masked.mean(), 0.8), (replaced.mean(), 0.1 * (1 - hit)), (kept.mean(), 0.1 + 0.1 * hit)):
    assert abs(share - p) < 5 * np.sqrt(p * (1 - p) / len(seen)), (share, p)


def test_a_mask_is_a_function_of_seed_step_and_global_row_alone():
  """Same (seed, step, row): same mask, in a fresh object (a resumed run) and whatever the process
  and device split; another step or seed: another mask. Evaluation batches likewise, once each."""
  split = masking.cut_documents(batching.EncodedSplit.from_rows(
      [np.random.default_rng(i).integers(FIRST_ORDINARY, VOCAB, 3 + 7 * i % 40).astype(np.int32) for i in range(40)],
      np.full(40, -1)), 12)
  bounds, m = (12,), masker()

  def train(seed=0, process=0, processes=1, multiple=1):
    sharding = batching.Sharding(process, processes, multiple)
    return masking.MaskedBatches(batching.TrainBatches(split, 13, bounds, seed, sharding), m, seed)

  def together(parts):
    return jax.tree.map(lambda *xs: np.concatenate(xs), *parts)

  whole = train(multiple=4)  # 13 rows and 3 filler rows.
  for step in (0, 5):
    reference = whole.batch(step)
    assert reference.token_ids.shape[0] == 16 and (reference.target_weights[13:] == 0).all()
    jax.tree.map(np.testing.assert_array_equal, train(multiple=4).batch(step), reference)
    for processes, multiple in ((2, 4), (4, 32)):  # 16 and 32 global rows: the 13 real rows first, the same.
      split_up = together([train(process=p, processes=processes, multiple=multiple).batch(step)
                           for p in range(processes)])
      jax.tree.map(lambda a, b: np.testing.assert_array_equal(a[:13], b[:13]), split_up, reference)
  # The same rows at another step, or with another seed: other choices.
  rows = batching.TrainBatches(split, 13, bounds, 0).batch(0)
  first, second, other_seed = (m.mask(rows, seed, masking.TRAIN, step, 0) for seed, step in ((0, 1), (0, 2), (1, 1)))
  assert not np.array_equal(first.positions, second.positions)
  assert not np.array_equal(first.positions, other_seed.positions)

  def dev(purpose=masking.DEV, process=0, processes=1):
    return masking.masked_eval_batches(split, 8, bounds, batching.Sharding(process, processes, 2), m, 0, purpose)

  jax.tree.map(np.testing.assert_array_equal, dev(), dev())
  halves = [together(parts) for parts in zip(dev(process=0, processes=2), dev(process=1, processes=2))]
  jax.tree.map(np.testing.assert_array_equal, halves, dev())
  assert not all(np.array_equal(a.positions, b.positions) for a, b in zip(dev(), dev(masking.TEST)))


def tiny_model(param_dtype=jnp.float32):
  return registry.build_model('transformer_mlm', vocab_size=VOCAB, num_classes=0, embed_dim=16, dropout=0.0,
                              num_layers=1, num_heads=2, intermediate_dim=8, max_positions=16, attention_dropout=0.0,
                              param_dtype=param_dtype)


@pytest.fixture(scope='module')
def masked_batch():
  """Three rows (the last a filler row), padded to 12 with junk ids past each length."""
  batch = masker().mask(padded_rows([12, 7, 0], 12), 0, masking.TRAIN, 0, 0)
  junk = np.where(np.arange(12)[None] >= batch.lengths[:, None], 17, batch.token_ids).astype(np.int32)
  return batch._replace(token_ids=junk)


def row_alone(batch: Batch, row: int) -> Batch:
  """Row `row` of a batch as a batch of its own, cut to its length."""
  one = jax.tree.map(lambda x: x[row:row + 1], batch)
  return one._replace(token_ids=one.token_ids[:, :int(batch.lengths[row])])


@pytest.fixture(scope='module')
def mlm_outputs(masked_batch):
  """One compiled computation for the tests below (compiling is most of their cost): a fresh init's
  shapes, and with random parameters every position's MLM logits, the task's loss and sums, and
  each real row's loss within the batch and alone."""
  model = tiny_model()
  fns = registry.model_fns(model, 'transformer_mlm')
  fresh = jax.eval_shape(fns.init, jax.random.PRNGKey(0), masked_batch.token_ids, masked_batch.lengths)
  params = random_params(model, masked_batch.token_ids, masked_batch.lengths,
                         method=lambda m, i, l: m.mlm_logits(i, l, jnp.zeros((len(l), 1), jnp.int32)))

  @jax.jit
  def outputs(params):
    full = model.apply({'params': params}, masked_batch.token_ids, masked_batch.lengths, method='mlm_logits')
    only_row = lambda row: masked_batch._replace(target_weights=masked_batch.target_weights * (
        np.arange(3) == row)[:, None])
    return (full, TASK.loss(fns, params, masked_batch, None), TASK.eval_sums(fns, params, masked_batch),
            [TASK.loss(fns, params, only_row(row), None)[0] for row in range(2)],
            [TASK.loss(fns, params, row_alone(masked_batch, row), None)[0] for row in range(2)])

  return fns, fresh, jax.tree.map(np.asarray, outputs(params))


def test_the_loss_is_the_cross_entropy_at_the_chosen_positions_by_hand(masked_batch, mlm_outputs):
  """The gathered logits are the full-width MLM logits at the chosen positions; the loss is their
  summed NLL, the count the chosen tokens, perplexity exp(mean NLL)."""
  fns, fresh, (full, (loss, sums), eval_sums, _, _) = mlm_outputs
  assert registry.names(registry.MASKED_LM) == ('transformer_mlm',) and fns.logits is None
  assert 'mlm_head' in fresh and 'head' not in fresh and 'pooler_dense' not in fresh
  rows, slots = np.nonzero(masked_batch.target_weights)
  logits = full.astype(np.float64)[rows, masked_batch.positions[rows, slots]]  # full: [B, T, V].
  log_probs = logits - logits.max(-1, keepdims=True)
  log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
  nll = -log_probs[np.arange(len(rows)), masked_batch.targets[rows, slots]]
  np.testing.assert_allclose(float(loss), nll.sum(), rtol=1e-5)
  assert float(TASK.count(masked_batch)) == len(rows) == 2 + 1  # round(0.15 x 12) + round(0.15 x 7).
  report = TASK.report(eval_sums)
  np.testing.assert_allclose(report['loss'], nll.mean(), rtol=1e-5)
  np.testing.assert_allclose(report['perplexity'], np.exp(nll.mean()), rtol=1e-5)
  correct = logits.argmax(-1) == masked_batch.targets[rows, slots]
  assert report['accuracy'] == correct.mean() and float(sums['correct']) == correct.sum()


def test_each_row_of_a_padded_batch_gets_the_loss_it_gets_alone(mlm_outputs):
  _, _, (_, (total, _), _, in_batch, alone) = mlm_outputs
  np.testing.assert_allclose(in_batch, alone, rtol=1e-5)
  np.testing.assert_allclose(sum(in_batch), total, rtol=1e-5)
  assert abs(float(in_batch[0] - in_batch[1])) > 1e-3


def test_gradients_match_finite_differences(masked_batch):
  """Central differences along random directions match the gradient's projection on them
  (float64; as tests/test_transformer.py checks the classifier)."""
  rng = np.random.default_rng(2)
  with jax.enable_x64():
    model = tiny_model(jnp.float64)
    fns = registry.model_fns(model, 'transformer_mlm')
    params = jax.tree.map(np.asarray, random_params(
        model, masked_batch.token_ids, masked_batch.lengths, dtype=np.float64,
        method=lambda m, i, l: m.mlm_logits(i, l, jnp.zeros((len(l), 1), jnp.int32))))
    value_and_grad = jax.jit(jax.value_and_grad(lambda p: TASK.loss(fns, p, masked_batch, None)[0]))
    _, grad = value_and_grad(params)
    assert np.abs(np.asarray(grad['mlm_head']['bias'])).max() > 0.0
    assert_directional_derivatives(value_and_grad, params, grad, rng)


# Compiling is most of these runs' time: one layer, and no attention dropout, whose random masks
# double a step's compile time (test_transformer.py trains with them).
QUICK = {'model.transformer.num_layers': 1, 'model.transformer.attention_dropout': 0.0}


def quick_config(module, data):
  config = module.get_config('tiny')
  config.data.path = data
  for key, value in QUICK.items():
    section, name = key.rsplit('.', 1)
    checks.config_value(config, section)[name] = value
  return config


@pytest.fixture(scope='module')
def pretrained(tmp_path_factory):
  """mlm_imdb.py:tiny on a small corpus: an uninterrupted run (in process, as tests/test_reliability.py's
  reference), and a run stopped at step 5 (the loop's stop_after_steps, as tests/test_train.py stops
  runs) then resumed by experiments.pretrain."""
  tmp = tmp_path_factory.mktemp('mlm')
  data = write_reviews(str(tmp / 'data'))
  config = quick_config(mlm_imdb, data)
  # The entry point's compilation cache (this session's): it loads the steps these runs compile.
  cli.use_compilation_cache(config)
  training.run_training(config, str(tmp / 'straight'))
  stopped = training.run_training(config, str(tmp / 'resumed'), stop_after_steps=5)
  assert stopped['step'] == 5 and 'stopped' in stopped
  argv = ['--config=experiments/configs/mlm_imdb.py:tiny', f'--config.data.path={data}',
          f'--workdir={tmp / "resumed"}'] + [f'--config.{key}={value}' for key, value in QUICK.items()]
  outcome = run_cases({'resumed': ('experiments.pretrain', argv)}, str(tmp))['resumed']
  assert outcome['rc'] == 0, outcome['output'][-3000:]
  assert 'resuming from step 5' in outcome['output']
  read = lambda run, name: json.loads((tmp / run / name).read_text())
  return {run: {'results': read(run, 'results.json'), 'config': read(run, 'config.json')}
          for run in ('straight', 'resumed')}, tmp, data


def test_a_stopped_and_resumed_pretraining_ends_bit_identical_to_an_uninterrupted_one(pretrained):
  records, _, _ = pretrained
  straight, resumed = records['straight']['results'], records['resumed']['results']
  assert straight['step'] == resumed['step'] == 12
  assert resumed['params_fingerprint'] == straight['params_fingerprint']
  assert resumed['best_step'] == straight['best_step'] and resumed['dev'] == straight['dev']
  assert straight['task'] == 'masked_lm' and straight['selection']['metric'] == 'dev_perplexity'
  for split in ('dev', 'test'):
    report = straight[split]
    assert report['targets'] > 0 and 0.0 <= report['accuracy'] <= 1.0
    np.testing.assert_allclose(report['perplexity'], np.exp(report['loss']), rtol=1e-9)
  derived = records['straight']['config']['derived']
  assert derived['masked_lm']['max_predictions'] == 5 and derived['masked_lm']['mask_id'] == MASK_ID
  assert derived['masked_lm']['rows']['train'] >= derived['documents']['train']


def test_a_classifier_finetuned_from_the_masked_lm_starts_from_its_encoder_and_tokenizer(pretrained, tmp_path):
  """transformer_imdb.py:tiny with init.checkpoint: config.json records the encoder copied, the
  pooler and head fresh and the MLM head left behind; the start is the masked LM's values. (It
  stops before its first step: a finetuning run's training is any classifier's.)"""
  _, tmp, data = pretrained
  config = quick_config(transformer_imdb, data)
  config.init.checkpoint = str(tmp / 'straight')
  checks.check_config(config)
  assert training.run_training(config, str(tmp_path / 'finetuned'), stop_after_steps=0)['step'] == 0
  init = json.loads((tmp_path / 'finetuned' / 'config.json').read_text())['derived']['init']
  assert init['checkpoint'] == str(tmp / 'straight') and init['drop'] == ['^head/', '^pooler_dense/']
  encoder = {'embedding/embedding', 'position_embedding', 'type_embedding', 'embedding_norm/scale',
             'layers_0/query/kernel', 'layers_0/output_norm/bias'}
  assert encoder <= set(init['copied'])
  assert sorted(init['dropped']) == ['head/bias', 'head/kernel', 'pooler_dense/bias', 'pooler_dense/kernel']
  assert init['unused'] and all(path.startswith('mlm_head/') for path in init['unused'])
  assert (tmp_path / 'finetuned' / 'tokenizer.json').read_bytes() == (tmp / 'straight' / 'tokenizer.json').read_bytes()
  start = transfer.leaf_paths(experiment.build(config, None).init_state().params)
  source = transfer.leaf_paths(runs.load_run(str(tmp / 'straight')).params)
  assert set(start) == set(init['copied']) | set(init['dropped'])
  for path in init['copied']:
    np.testing.assert_array_equal(start[path], source[path], err_msg=path)
