"""Language-model pretraining: BPTT streams with carried state, the sampled softmax,
experiments.pretrain, and a classifier that starts from the pretrained encoder."""
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bigjax import experiment
from bigjax import runs
from bigjax import training
from bigjax.data import batching, streams
from bigjax.data import from_config
from bigjax.errors import ConfigError
from bigjax.metrics import MetricWriter
from bigjax.models import registry
from bigjax.tasks.language_model import LanguageModeling, sampling_distribution
from bigjax.train import loop, parallel
from bigjax.train import step as step_lib
from bigjax.types import Batch
from experiments.configs import lm_imdb
from tests.entry_points import run_module

WORDS = 'the a movie film good bad great awful acting plot story love hate it was is and but not very'.split()


def lm_fns(vocab=20, layers=2, tie=True, dropout=0.0):
  section = {'name': 'lstm_lm', 'embed_dim': 8, 'dropout': dropout,
             'lstm': {'hidden_dim': 6, 'num_layers': layers, 'bidirectional': False, 'forget_bias': 0.0,
                      'dtype': 'float32', 'tie_embeddings': tie, 'token_dropout': 0.0}}
  return registry.model_fns(registry.from_section(section, vocab_size=vocab, num_classes=0))


def documents(count=12, vocab=20, seed=0):
  rng = np.random.default_rng(seed)
  rows = [rng.integers(5, vocab, rng.integers(3, 30)).astype(np.int32) for _ in range(count)]
  return batching.EncodedSplit.from_rows(rows, np.full(count, -1))


def whole_rows_batch(rows: np.ndarray, width: int) -> Batch:
  n = len(rows)
  return Batch(rows[:, :width], np.full(n, width, np.int32), np.zeros(n, np.int32), np.ones(n, np.float32),
               rows[:, 1:width + 1], np.ones((n, width), np.float32))


@pytest.mark.parametrize('tie', [True, False])
def test_bptt_windows_with_carried_state_give_the_loss_of_one_long_sequence(tie):
  fns, task = lm_fns(tie=tie), LanguageModeling()
  loss_fn = jax.jit(lambda params, batch, carry: task.loss(fns, params, batch, None, carry=carry))
  stream = streams.StreamBatches(documents(), eos_id=3, batch_size=2, window=5, seed=0)
  params = fns.init(jax.random.PRNGKey(0), jnp.zeros((2, 5), jnp.int32), jnp.full(2, 5))
  carry, windowed = fns.initial_carry(2), 0.0
  for step in range(stream.steps_per_epoch):
    batch = stream.batch(step)
    assert batch.continues[0] == (step > 0)
    loss, (_, carry) = loss_fn(params, batch, carry)
    windowed += float(loss)
  width = stream.steps_per_epoch * 5
  whole, _ = task.loss(fns, params, whole_rows_batch(stream.epoch_rows(0), width), None)
  np.testing.assert_allclose(windowed, float(whole), rtol=1e-5)
  # Without the carry each window starts from zeros, and the loss is another one.
  zeros = fns.initial_carry(2)
  cold = sum(float(loss_fn(params, stream.batch(s)._replace(continues=np.zeros(2, np.float32)), zeros)[0])
             for s in range(stream.steps_per_epoch))
  assert abs(cold - windowed) > 1e-3


def test_a_stream_epoch_is_every_document_once_each_followed_by_eos_and_targets_are_the_next_tokens():
  split = documents()
  stream = streams.StreamBatches(split, eos_id=3, batch_size=2, window=4, seed=5)
  rows = stream.epoch_rows(1)
  assert rows.shape == (2, stream.row_length)
  full = streams.concatenate(split, 3, np.random.default_rng([5, 1]).permutation(len(split)))
  np.testing.assert_array_equal(rows.reshape(-1), full[:2 * stream.row_length])
  assert (full == 3).sum() == len(split)
  batch = stream.batch(stream.steps_per_epoch + 2)  # Epoch 1, window 2.
  np.testing.assert_array_equal(batch.token_ids, rows[:, 8:12])
  np.testing.assert_array_equal(batch.targets, rows[:, 9:13])


def test_eval_windows_score_every_token_once_with_its_context():
  split = documents(count=9)
  stream = streams.concatenate(split, 3)
  batches = streams.eval_windows(split, 3, batch_size=3, window=5, context=4)
  scored = []
  for batch in batches:
    for row in range(len(batch.weights)):
      for t in np.flatnonzero(batch.target_weights[row]):
        scored.append(int(batch.targets[row, t]))
  np.testing.assert_array_equal(scored, stream[1:])  # Each next token once, in order.
  assert {b.token_ids.shape for b in batches} == {(3, 9)}  # One compiled shape.


def test_a_carried_state_is_checkpointed_and_a_resumed_run_equals_an_uninterrupted_one(tmp_path):
  fns, task, tx = lm_fns(), LanguageModeling(), optax.adam(1e-2)
  stream = streams.StreamBatches(documents(count=30), eos_id=3, batch_size=4, window=5, seed=0)
  dev = streams.eval_windows(documents(count=4, seed=1), 3, 4, 5, 3)
  example = stream.batch(0)

  def run(workdir, stop_after=None):
    return loop.train_and_evaluate(
        driver=parallel.task_driver('none', task, fns, tx), task=task,
        init_state=lambda: step_lib.create_train_state(fns, tx, jax.random.PRNGKey(0), example, carry_rows=4),
        batch_at=stream.batch, dev=dev, test=dev,
        config=loop.LoopConfig(loop.Periods(24, 8, 4), stop_after_steps=stop_after), workdir=str(workdir), meta={},
        writer=MetricWriter(str(workdir)))

  whole = run(tmp_path / 'whole')
  assert run(tmp_path / 'split', stop_after=11)['step'] == 11  # Stops mid-epoch, carry in flight.
  resumed = run(tmp_path / 'split')
  assert resumed['params_fingerprint'] == whole['params_fingerprint']
  assert whole['dev']['perplexity'] < 20  # Below a uniform guess over the 20 ids.


@pytest.mark.parametrize('mode', ['pmap', 'mesh'])
def test_carried_state_under_pmap_and_mesh_gives_the_single_device_parameters(mode):
  fns, task, tx = lm_fns(dropout=0.0), LanguageModeling(), optax.sgd(0.5)
  stream = streams.StreamBatches(documents(count=60), eos_id=3, batch_size=8, window=5, seed=0)
  results = {}
  for name in ('none', mode):
    driver = parallel.task_driver(name, task, fns, tx)
    state = driver.put_state(step_lib.create_train_state(fns, tx, jax.random.PRNGKey(0), stream.batch(0),
                                                         carry_rows=8))
    for step in range(6):
      state, _ = driver.train_step(state, stream.batch(step))
    results[name] = jax.device_get(driver.get_state(state))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-5), results['none'].params,
               results[mode].params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-5), results['none'].carry,
               results[mode].carry)


def test_sampled_logits_are_the_full_logits_of_the_targets_and_the_negatives():
  fns = lm_fns(tie=False)
  split = documents()
  batch = streams.StreamBatches(split, 3, 2, 5, 0).batch(1)
  params = fns.init(jax.random.PRNGKey(0), batch.token_ids, batch.lengths)
  params = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(jax.random.PRNGKey(1), p.shape), params)
  carry = fns.initial_carry(2)
  full, _ = fns.token_logits_carried(params, batch.token_ids, batch.lengths, carry)
  negatives = jnp.array([7, 3, 19, 7], jnp.int32)
  sampled, _ = fns.token_logits_carried(params, batch.token_ids, batch.lengths, carry, targets=batch.targets,
                                        negatives=negatives)
  np.testing.assert_allclose(sampled[..., 0], np.take_along_axis(np.asarray(full), batch.targets[..., None], -1)[..., 0],
                             atol=1e-5)
  np.testing.assert_allclose(sampled[..., 1:], np.asarray(full)[..., negatives], atol=1e-5)


def test_the_sampled_softmax_trains_the_full_softmax_model():
  """Trained on sampled negatives only, the full-softmax NLL falls well below the uniform log V."""
  vocab = 20
  fns = lm_fns(vocab=vocab, layers=1)
  cycle = np.tile(np.arange(5, vocab), 40).astype(np.int32)  # A learnable order.
  split = batching.EncodedSplit.from_rows([cycle], np.array([-1]))
  stream = streams.StreamBatches(split, 3, 4, 10, 0)
  task = LanguageModeling(negatives=6, log_q=sampling_distribution(cycle, vocab))
  tx = optax.adam(2e-2)
  driver = parallel.task_driver('none', task, fns, tx)
  state = driver.put_state(step_lib.create_train_state(fns, tx, jax.random.PRNGKey(0), stream.batch(0),
                                                       carry_rows=4))
  for step in range(120):
    state, sums = driver.train_step(state, stream.batch(step))
  batch = streams.eval_windows(split, 3, 4, 10, 5)[0]
  totals = task.eval_sums(fns, state.params, batch)
  assert float(totals['loss'] / totals['targets']) < 0.25 * math.log(vocab)


def test_sampling_distribution_is_smoothed_unigram_to_a_power():
  log_q = sampling_distribution(np.array([1, 1, 1, 2]), 4, power=1.0)
  np.testing.assert_allclose(np.exp(log_q), np.array([1, 4, 2, 1]) / 8, rtol=1e-6)


# --- Through the entry point. ------------------------------------------------------------

def write_reviews(folder) -> str:
  """A labelled TSV of word sequences in a fixed order (learnable) with some randomness."""
  rng = np.random.default_rng(0)
  os.makedirs(folder, exist_ok=True)
  path = os.path.join(folder, 'reviews.tsv')
  with open(path, 'w', encoding='utf-8') as f:
    f.write('label\ttext\n')
    for i in range(240):
      start = rng.integers(len(WORDS))
      words = [WORDS[(start + k) % len(WORDS)] for k in range(rng.integers(8, 40))]
      f.write(f'{i % 2}\t{" ".join(words)}\n')
  return path


def lm_config(data: str, **overrides):
  config = lm_imdb.get_config('tiny')
  config.data.path = data
  config.train.steps, config.checkpoint.every_steps = 40, 20
  config.optim.learning_rate, config.optim.warmup_steps = 1e-2, 0
  for key, value in overrides.items():
    node = config
    *parents, last = key.split('.')
    for part in parents:
      node = node[part]
    node[last] = value
  return config


def dev_nll_by_hand(run, config, direction: str = 'forward') -> float:
  """The run's own carve of the same text, its dev documents read in `direction` as one
  sequence, full softmax, numpy."""
  texts = experiment.language_model_corpus(config)
  docs = batching.EncodedSplit.from_rows(run.tokenizer.encode(texts, 1 << 30, direction=direction),
                                         np.full(len(texts), -1))
  _, dev_docs, _ = streams.carve(docs, config.lm.heldout_fraction, config.seed)
  sequence = streams.concatenate(dev_docs, run.tokenizer.token_id('</s>'))
  logits = np.asarray(run.fns.token_logits(run.params, sequence[None, :-1], np.array([len(sequence) - 1])),
                      np.float64)[0]
  log_probs = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) - \
      logits.max(-1, keepdims=True)
  return float(-log_probs[np.arange(len(sequence) - 1), sequence[1:]].mean())


@pytest.fixture(scope='module')
def pretrained(tmp_path_factory):
  tmp = tmp_path_factory.mktemp('pretrain')
  data = write_reviews(str(tmp / 'data'))
  workdir = str(tmp / 'lm')
  # A single evaluation window holds the whole dev stream: its loss is one long sequence's.
  results = training.run_training(lm_config(data, **{'lm.eval_context': 4000}), workdir,
                                build=experiment.build_lm_experiment)
  return data, workdir, results


def test_pretraining_lowers_the_loss_and_dev_perplexity_is_exp_of_the_mean_nll_by_hand(pretrained):
  data, workdir, results = pretrained
  metrics = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8')]
  train = [m for m in metrics if m.get('kind') == 'train']
  assert train[-1]['sampled_loss'] < 0.5 * train[0]['sampled_loss']
  assert results['dev']['perplexity'] < 0.5 * len(WORDS)  # The word order is learnt.
  run = runs.load_run(workdir)
  assert run.step == results['best_step']
  nll = dev_nll_by_hand(run, lm_config(data, **{'lm.eval_context': 4000}))
  np.testing.assert_allclose(results['dev']['loss'], nll, rtol=1e-4)
  np.testing.assert_allclose(results['dev']['perplexity'], math.exp(nll), rtol=1e-4)


def test_a_classifier_from_the_pretrained_encoder_copies_exactly_the_encoder_leaves(pretrained):
  data, lm_dir, _ = pretrained
  from test_train import tiny_config  # pylint: disable=g-import-not-at-top
  config = tiny_config(data, 'lstm')
  config.data.tokenizer = 'wordpunct'
  config.model.embed_dim, config.model.lstm.hidden_dim = 16, 16
  config.model.lstm.forget_bias = 1.0
  config.init.checkpoint, config.init.drop = lm_dir, '^head/'
  config.train.steps = 1
  config.optim.learning_rate = 1e-12  # One step that moves nothing: the start is what is compared.
  exp = experiment.build_experiment(config, None)
  start = exp.init_state().params
  source = runs.load_run(lm_dir).params
  init_key, _ = jax.random.split(jax.random.PRNGKey(config.seed))  # As create_train_state splits it.
  example = exp.train_batches.batch(0)
  scratch = jax.tree.map(np.asarray, exp.fns.init(init_key, example.token_ids, example.lengths))
  copied = {'embedding', 'layers_0_0'}
  for name, leaves in start.items():
    for leaf, value in leaves.items():
      if name in copied:
        np.testing.assert_array_equal(value, source[name][leaf])
      else:  # The head is the classifier's own fresh one.
        np.testing.assert_array_equal(value, scratch[name][leaf])
  assert set(start) == copied | {'head'}
  assert exp.tokenizer.vocab_size == runs.load_run(lm_dir).tokenizer.vocab_size


def run_entry(*args):
  return run_module('experiments.pretrain', args, timeout=300)


def test_a_language_model_from_a_mismatched_checkpoint_gets_one_clear_error(pretrained, tmp_path):
  data, lm_dir, _ = pretrained
  out = run_entry('--config=experiments/configs/lm_imdb.py:tiny', f'--config.data.path={data}',
                  f'--config.init.checkpoint={lm_dir}', '--config.model.lstm.hidden_dim=12',
                  f'--workdir={tmp_path / "b"}')
  last = out.stderr.strip().splitlines()[-1]
  assert out.returncode == 2 and last.startswith('error: ') and 'layers_0_0' in last, out.stderr[-2000:]
  assert 'Traceback' not in out.stderr


# --- ULMFiT's finetuning pieces. ---------------------------------------------------------

def test_slanted_triangular_rates_have_the_shape_howard_and_ruder_define():
  from bigjax.train import optim  # pylint: disable=g-import-not-at-top
  schedule = optim.make_schedule('slanted_triangular', 0.01, total_steps=1000)  # cut = 100, ratio 32.
  at = lambda step: float(schedule(step))
  np.testing.assert_allclose(at(0), 0.01 / 32, rtol=1e-6)
  np.testing.assert_allclose(at(50), 0.01 * (1 + 0.5 * 31) / 32, rtol=1e-6)
  np.testing.assert_allclose(at(100), 0.01, rtol=1e-6)
  np.testing.assert_allclose(at(550), 0.01 * (1 + 0.5 * 31) / 32, rtol=1e-6)  # Halfway down the 900-step fall.
  np.testing.assert_allclose(at(1000), 0.01 / 32, rtol=1e-6)
  assert at(10) < at(20) < at(100) > at(200) > at(900)


def test_gradual_unfreezing_keeps_a_group_bit_identical_until_its_epoch_then_trains_it():
  from bigjax.train import optim  # pylint: disable=g-import-not-at-top
  groups = optim.parse_param_groups('^embedding=0.5@2,^layers=0.7@1')
  assert [(g.lr_multiplier, g.from_epoch) for g in groups] == [(0.5, 2.0), (0.7, 1.0)]
  tx = optim.make_optimizer('adam', optim.make_schedule('slanted_triangular', 1e-2, 40), groups=groups,
                            steps_per_epoch=10)
  params = {'embedding': jnp.ones((3, 2)), 'layers_0_0': jnp.ones((2, 2)), 'head': jnp.ones((2,))}
  state, history = tx.init(params), []
  for _ in range(30):
    grads = jax.tree.map(jnp.ones_like, params)
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    history.append(jax.tree.map(lambda x: np.asarray(x).tobytes(), params))
  ones = lambda shape: np.ones(shape, np.float32).tobytes()
  assert all(h['embedding'] == ones((3, 2)) for h in history[:20])  # Frozen for epochs 0 and 1.
  assert history[20]['embedding'] != ones((3, 2))
  assert all(h['layers_0_0'] == ones((2, 2)) for h in history[:10]) and history[10]['layers_0_0'] != ones((2, 2))
  assert history[0]['head'] != ones((2,))  # The default group trains from the start.


@pytest.mark.parametrize('spec, message', [('^emb=0.5@x', 'not an epoch number'), ('^emb=freeze@1', 'never unfreezes'),
                                           ('^emb=1@-1', '>= 0')])
def test_bad_unfreezing_specs_are_refused(spec, message):
  from bigjax.train import optim  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match=message):
    optim.parse_param_groups(spec)


def test_concat_pooling_reads_last_max_and_mean_and_ignores_padding():
  section = {'name': 'lstm', 'embed_dim': 8, 'dropout': 0.0,
             'lstm': {'hidden_dim': 6, 'num_layers': 1, 'bidirectional': False, 'forget_bias': 0.0,
                      'dtype': 'float32', 'pooling': 'concat'}}
  module = registry.from_section(section, vocab_size=20, num_classes=2)
  fns = registry.model_fns(module)
  ids = np.array([[5, 6, 7, 0, 0], [8, 9, 10, 11, 12]], np.int32)
  lengths = np.array([3, 5], np.int32)
  params = fns.init(jax.random.PRNGKey(0), ids, lengths)
  assert params['head']['kernel'].shape == (18, 2)  # last, max, mean: 3 x 6.
  logits = fns.logits(params, ids, lengths)
  wider = np.pad(ids, ((0, 0), (0, 4)))
  np.testing.assert_allclose(fns.logits(params, wider, lengths), logits, atol=1e-6)
  states = np.asarray(fns.sequence_states(params, ids, lengths))[0, :3]
  features = np.concatenate([states[-1], states.max(0), states.mean(0)])
  np.testing.assert_allclose(logits[0], features @ params['head']['kernel'] + params['head']['bias'], atol=1e-5)


def test_train_limit_takes_a_seeded_class_balanced_subset_and_leaves_dev_and_test_alone():
  from bigjax.data import sources  # pylint: disable=g-import-not-at-top
  labels = np.array([0] * 70 + [1] * 20 + [2] * 10, np.int32)
  split = lambda n: sources.Split([f'text {i}' for i in range(n)], labels[:n] if n == 100 else np.zeros(n, np.int32))
  dataset = sources.TextDataset({'train': split(100), 'dev': split(7), 'test': split(9)}, 3, 'toy')
  limited = sources.with_train_limit(dataset, 31, seed=4)
  counts = np.bincount(limited.splits['train'].labels, minlength=3)
  np.testing.assert_array_equal(counts, [11, 10, 10])
  assert limited.splits['dev'] is dataset.splits['dev'] and limited.splits['test'] is dataset.splits['test']
  assert sources.with_train_limit(dataset, 31, seed=4).splits['train'].texts == limited.splits['train'].texts
  assert sources.with_train_limit(dataset, 31, seed=5).splits['train'].texts != limited.splits['train'].texts
  assert 'train limited to 31' in limited.description


# --- A backward language model (ULMFiT's second direction). --------------------------------

@pytest.fixture(scope='module')
def pretrained_backward(tmp_path_factory):
  tmp = tmp_path_factory.mktemp('pretrain_backward')
  data = write_reviews(str(tmp / 'data'))
  workdir = str(tmp / 'lm')
  config = lm_config(data, **{'lm.eval_context': 4000, 'data.direction': 'backward'})
  return data, workdir, training.run_training(config, workdir, build=experiment.build_lm_experiment), config


def test_a_backward_language_model_reads_every_document_last_token_first(pretrained_backward):
  _, workdir, results, config = pretrained_backward
  run = runs.load_run(workdir)
  backward, forward = dev_nll_by_hand(run, config, 'backward'), dev_nll_by_hand(run, config, 'forward')
  np.testing.assert_allclose(results['dev']['loss'], backward, rtol=1e-4)
  assert results['dev']['perplexity'] < 0.5 * len(WORDS)  # Each word's predecessor is learnt...
  assert forward > backward + 1.0  # ... and its successor is not what it predicts.


def test_a_classifier_reads_its_texts_in_its_language_models_direction(pretrained_backward):
  data, lm_dir, _, _ = pretrained_backward
  from test_train import tiny_config  # pylint: disable=g-import-not-at-top
  config = tiny_config(data, 'lstm')
  config.data.tokenizer = 'wordpunct'
  config.model.embed_dim, config.model.lstm.hidden_dim = 16, 16
  config.init.checkpoint, config.init.drop = lm_dir, '^head/'
  with pytest.raises(ConfigError, match='reads its texts backward.*--config.data.direction=backward'):
    experiment.build_experiment(config, None)
  config.data.direction = 'backward'
  exp = experiment.build_experiment(config, None)
  texts = from_config.load_data(config.data, config.seed).splits['train'].texts
  rows = exp.tokenizer.encode(texts, config.data.max_len, config.data.keep)
  split = exp.train_batches.split
  np.testing.assert_array_equal(split.tokens[split.offsets[0]:split.offsets[1]], rows[0][::-1])


def test_the_hidden_head_is_a_relu_layer_on_the_pooled_features_and_starts_fresh(pretrained):
  section = {'name': 'lstm', 'embed_dim': 8, 'dropout': 0.0,
             'lstm': {'hidden_dim': 6, 'num_layers': 1, 'bidirectional': False, 'forget_bias': 0.0,
                      'dtype': 'float32', 'pooling': 'concat', 'head_hidden_dim': 5}}
  fns = registry.model_fns(registry.from_section(section, vocab_size=20, num_classes=3))
  ids = np.array([[5, 6, 7, 0], [8, 9, 10, 11]], np.int32)
  lengths = np.array([3, 4], np.int32)
  params = fns.init(jax.random.PRNGKey(0), ids, lengths)
  assert params['head_hidden']['kernel'].shape == (18, 5) and params['head']['kernel'].shape == (5, 3)
  states = np.asarray(fns.sequence_states(params, ids, lengths))[0, :3]
  features = np.concatenate([states[-1], states.max(0), states.mean(0)])
  hidden = np.maximum(features @ params['head_hidden']['kernel'] + params['head_hidden']['bias'], 0)
  np.testing.assert_allclose(fns.logits(params, ids, lengths)[0],
                             hidden @ params['head']['kernel'] + params['head']['bias'], atol=1e-5)
  # From the language model, init.drop=^head keeps both head layers fresh and copies the encoder.
  data, lm_dir, _ = pretrained
  from test_train import tiny_config  # pylint: disable=g-import-not-at-top
  config = tiny_config(data, 'lstm')
  config.data.tokenizer = 'wordpunct'
  config.model.embed_dim, config.model.lstm.hidden_dim = 16, 16
  config.model.lstm.forget_bias, config.model.lstm.head_hidden_dim = 1.0, 7
  config.init.checkpoint, config.init.drop = lm_dir, '^head'
  exp = experiment.build_experiment(config, None)
  start = exp.init_state().params
  source = runs.load_run(lm_dir).params
  assert set(start) == {'embedding', 'layers_0_0', 'head_hidden', 'head'}
  for name in ('embedding', 'layers_0_0'):
    for leaf, value in start[name].items():
      np.testing.assert_array_equal(value, source[name][leaf])
  assert start['head_hidden']['kernel'].shape == (16, 7)
  config.init.drop = '^head/'  # The hidden layer is not in the language model: one clear error.
  with pytest.raises(ConfigError, match='head_hidden/kernel is not in'):
    experiment.build_experiment(config, None).init_state()
