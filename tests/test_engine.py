"""The engine's general parts: tasks, the model's named functions, a run that loads by
itself, transfer between runs, parameter groups, configs, and what a resume leaves."""
import glob
import json
import os
import runpy
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bigjax import experiment
from bigjax import runs
from bigjax import training
from bigjax import transfer
from bigjax.config import checks
from bigjax.data import batching
from bigjax.errors import ConfigError
from bigjax.metrics import MetricWriter
from bigjax.models import registry
from bigjax.tasks.classification import Classification
from bigjax.tasks.language_model import LanguageModeling
from bigjax.train import loop, optim, parallel
from bigjax.train import step as step_lib
from bigjax.types import Batch
from test_train import ROOT, tiny_config, write_corpus
from tests.entry_points import run_module

CONFIGS = sorted(p for p in glob.glob(os.path.join(ROOT, 'experiments', 'configs', '*.py'))
                 if not p.endswith('__init__.py'))


# --- A second task through the same loop: a next-token language model. -------------------

def toy_lm_batches(seed, count, rows=8, width=12, vocab=12):
  """Rows of a cyclic sequence 2, 3, ..., vocab-1, 2, ... from random offsets: the next token is learnable."""
  rng = np.random.default_rng(seed)
  cycle = np.arange(2, vocab)
  out = []
  for _ in range(count):
    starts = rng.integers(0, len(cycle), rows)
    seq = cycle[(starts[:, None] + np.arange(width + 1)[None, :]) % len(cycle)].astype(np.int32)
    lengths = rng.integers(width // 2, width + 1, rows).astype(np.int32)
    real = np.arange(width)[None, :] < lengths[:, None]
    out.append(Batch(token_ids=np.where(real, seq[:, :-1], 0), lengths=lengths, labels=np.zeros(rows, np.int32),
                     weights=np.ones(rows, np.float32), targets=np.where(real, seq[:, 1:], 0),
                     target_weights=real.astype(np.float32)))
  return out


def lm_fns(vocab=12):
  section = {'name': 'lstm_lm', 'embed_dim': 16, 'dropout': 0.0,
             'lstm': {'hidden_dim': 16, 'num_layers': 1, 'bidirectional': False, 'forget_bias': 0.0,
                      'dtype': 'float32', 'tie_embeddings': True}}
  return registry.model_fns(registry.from_section(section, vocab_size=vocab, num_classes=0))


def test_a_language_model_trains_through_the_same_loop_and_dev_perplexity_picks_the_checkpoint(tmp_path):
  task, fns = LanguageModeling(), lm_fns()
  tx = optax.adam(3e-3)
  train, dev = toy_lm_batches(0, 60), toy_lm_batches(1, 3)
  driver = parallel.task_driver('none', task, fns, tx)
  writer = MetricWriter(str(tmp_path))
  results = loop.train_and_evaluate(
      driver=driver, task=task, init_state=lambda: step_lib.create_train_state(fns, tx, jax.random.PRNGKey(0), train[0]),
      batch_at=lambda step: train[step], dev=dev, test=toy_lm_batches(2, 2), config=loop.LoopConfig(loop.Periods(60, 10, 10)),
      workdir=str(tmp_path), meta={}, writer=writer)
  writer.close()
  records = [json.loads(line) for line in open(tmp_path / 'metrics.jsonl')]
  train_loss = [r['loss'] for r in records if r['kind'] == 'train']
  assert train_loss[-1] < 0.5 * train_loss[0]
  dev_records = [r for r in records if r['kind'] == 'dev']
  best = min(dev_records, key=lambda r: (r['perplexity'], r['step']))
  assert results['best_step'] == best['step'] and results['selection']['higher_is_better'] is False
  assert results['dev']['perplexity'] == pytest.approx(best['perplexity'], rel=1e-5)
  # The first checkpoint is the worst: a 'higher is better' selection would have kept it.
  assert best['step'] != dev_records[0]['step'] and dev_records[0]['perplexity'] > 1.2 * best['perplexity']
  assert results['test']['perplexity'] < 2.0  # 10 tokens: chance is 10.


def test_perplexity_is_exp_of_the_mean_nll_computed_by_hand():
  task, fns = LanguageModeling(), lm_fns()
  batch = toy_lm_batches(3, 1)[0]
  params = fns.init(jax.random.PRNGKey(1), batch.token_ids, batch.lengths)
  report = task.report(jax.device_get(task.eval_sums(fns, params, batch)))
  logits = np.asarray(fns.token_logits(params, batch.token_ids, batch.lengths), np.float64)
  log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  nll = -np.take_along_axis(log_probs, batch.targets[..., None], -1)[..., 0]
  mean = (nll * batch.target_weights).sum() / batch.target_weights.sum()
  assert report['perplexity'] == pytest.approx(np.exp(mean), rel=1e-5)


# --- The model's named functions. -------------------------------------------------------

@pytest.mark.parametrize('name', ['mlp', 'lstm'])
def test_logits_from_embeddings_of_embed_are_the_logits_and_slots_fold_onto_tokens(name):
  config = tiny_config('', name, **{'model.mlp.bigram_buckets': 32})
  fns = registry.model_fns(experiment.build_model(config.model, 50, 3))
  ids = jnp.array([[5, 6, 7, 0], [8, 9, 0, 0]], jnp.int32)
  lengths = jnp.array([3, 2], jnp.int32)
  params = fns.init(jax.random.PRNGKey(0), ids, lengths)
  embeddings = fns.embed(params, ids)
  np.testing.assert_allclose(fns.logits_from_embeddings(params, embeddings, lengths), fns.logits(params, ids, lengths),
                             rtol=1e-6)
  fold = np.asarray(fns.slot_tokens(ids.shape[1]))
  assert fold.shape == (embeddings.shape[1], ids.shape[1])
  np.testing.assert_allclose(fold.sum(1), 1.0)  # Each slot's attribution is shared out whole.
  if name == 'mlp':  # Bigram slot 4 + 1 is the pair (token 1, token 2).
    assert fold[5, 1] == fold[5, 2] == 0.5


# --- A trained run loads by itself; transfer; evaluation. --------------------------------

@pytest.fixture(scope='module')
def trained_run(tmp_path_factory):
  tmp = tmp_path_factory.mktemp('engine')
  data = write_corpus(str(tmp / 'data'))
  workdir = str(tmp / 'run')
  results = training.run_training(tiny_config(data), workdir)
  return data, workdir, results


def test_best_checkpoints_hold_parameters_only(trained_run):
  _, workdir, results = trained_run
  best = os.listdir(os.path.join(workdir, 'best', str(results['best_step'])))
  assert 'params' in best and 'state' not in best
  assert results['bytes_on_disk'] > 0
  latest = sorted(int(s) for s in os.listdir(os.path.join(workdir, 'checkpoints')) if s.isdigit())
  assert latest == [20, 24]  # keep_latest=2 full states.


def test_load_run_needs_no_training_data(trained_run, tmp_path):
  data, workdir, results = trained_run
  copy = shutil.copytree(workdir, tmp_path / 'run')
  shutil.copy(os.path.join(data, 'test.txt'), tmp_path / 'test.txt')
  moved = tmp_path / 'gone'
  shutil.copytree(data, moved)
  with open(copy / 'config.json') as f:
    assert json.load(f)['config']['data']['path'] == data
  shutil.rmtree(moved)  # The run's data path below is one that never existed here.
  info = json.loads((copy / 'config.json').read_text())
  info['config']['data']['path'] = str(moved)
  (copy / 'config.json').write_text(json.dumps(info))
  done = run_module('experiments.evaluate', [f'--workdir={copy}', f'--data={tmp_path / "test.txt"}',
                                              f'--json_out={tmp_path / "report.json"}'])
  assert done.returncode == 0, done.stderr[-2000:]
  report = json.loads((tmp_path / 'report.json').read_text())
  assert report['step'] == results['best_step']
  assert report['confusion'] == results['test']['confusion']
  assert report['accuracy'] == results['test']['accuracy']
  assert report['loss'] == pytest.approx(results['test']['loss'], rel=1e-5)
  run = runs.load_run(str(copy))
  assert run.label_names == ['0', '1'] and run.step == results['best_step']


def test_a_run_told_another_max_len_reads_that_many_tokens_of_each_text(trained_run):
  data, workdir, _ = trained_run
  run = runs.load_run(workdir)
  with open(os.path.join(data, 'test.txt'), encoding='utf-8') as f:
    lines = [line.split(' ', 1)[1].strip() for line in f][:12]
  texts = [' '.join(lines[i:i + 6]) for i in range(0, 12, 6)] + lines[:2]  # Two texts past max_len 24.
  assert [len(row) for row in run.encode(texts)] == [24, 24] + [len(r) for r in run.tokenizer.encode(texts[2:], 24)]
  whole = run.with_max_len(200)
  rows = whole.encode(texts)
  assert min(len(row) for row in rows[:2]) > 24 and [len(r) for r in rows[2:]] == [len(r) for r in run.encode(texts[2:])]
  assert max(whole.derived.bucket_boundaries) == 200 and run.derived.bucket_boundaries[-1] == 24
  # Each text's probabilities are the model's on all of its tokens, whatever the batch's padding.
  alone = [np.asarray(jax.nn.softmax(run.fns.logits(run.params, jnp.asarray(row)[None], jnp.array([len(row)]), None)))[0]
           for row in rows]
  np.testing.assert_allclose(whole.probabilities(texts), alone, rtol=1e-5, atol=1e-6)
  assert not np.allclose(run.probabilities(texts)[:2], alone[:2], atol=1e-6)  # Cut at 24, the long ones differ.
  np.testing.assert_array_equal(run.with_max_len(24).probabilities(texts), run.probabilities(texts))
  assert max(len(row) for row in run.with_max_len(3).encode(texts)) == 3
  with pytest.raises(ConfigError, match='max_len must be at least 1'):
    run.with_max_len(0)


def test_finetuning_from_a_run_copies_all_but_the_dropped_output_layer(trained_run, tmp_path):
  _, workdir, _ = trained_run
  three_classes = write_corpus(str(tmp_path / 'data3'), sizes=(300, 60, 60), num_classes=3)
  config = tiny_config(three_classes, **{'init.checkpoint': workdir, 'init.drop': '^head/', 'train.steps': 10})
  claimed = training.claim_workdir(config, str(tmp_path / 'finetuned'))
  exp = experiment.build_experiment(config, claimed)
  source = runs.load_run(workdir)
  start = exp.init_state().params
  assert exp.derived.init['dropped'] == ['head/bias', 'head/kernel']
  assert 'embedding/embedding' in exp.derived.init['copied']
  for path, leaf in transfer.leaf_paths(start).items():
    if path.startswith('head/'):
      assert leaf.shape[-1] == 3
    else:
      np.testing.assert_array_equal(leaf, transfer.leaf_paths(source.params)[path])
  results = training.run_training(config, str(tmp_path / 'finetuned'))
  assert len(results['test']['confusion']) == 3
  recorded = json.loads((tmp_path / 'finetuned' / 'config.json').read_text())['derived']['init']
  assert recorded['checkpoint'] == workdir and recorded['step'] == source.step


def test_finetuning_without_init_drop_names_the_mismatched_leaves(trained_run, tmp_path):
  _, workdir, _ = trained_run
  three_classes = write_corpus(str(tmp_path / 'data3'), sizes=(300, 60, 60), num_classes=3)
  done = run_module('experiments.train', ['--config=experiments/configs/mlp_sst2.py', f'--workdir={tmp_path / "run"}',
                                           f'--config.data.path={three_classes}', f'--config.init.checkpoint={workdir}',
                                           '--config.model.embed_dim=16', '--config.model.mlp.hidden_dim=16',
                                           '--config.train.steps=2'])
  errors = [line for line in done.stderr.splitlines() if line.startswith('error: ')]
  assert done.returncode == 2 and len(errors) == 1 and 'Traceback' not in done.stderr, done.stderr[-2000:]
  assert 'head/bias is float32[3] here, float32[2] in' in errors[0] and 'init.drop' in errors[0]
  assert 'embedding' not in errors[0].split('cannot be copied:')[1].split('. Keep')[0]


def test_merge_params_refuses_a_leaf_missing_from_the_source():
  fresh = {'a': {'w': np.zeros(2, np.float32)}, 'b': {'w': np.zeros(3, np.float32)}}
  with pytest.raises(ConfigError, match='b/w is not in the source run'):
    transfer.merge_params(fresh, {'a': {'w': np.ones(2, np.float32)}})
  params, record = transfer.merge_params(fresh, {'a': {'w': np.ones(2, np.float32)}, 'c': {'w': np.ones(1)}},
                                         drop=['^b/'])
  np.testing.assert_array_equal(params['a']['w'], 1.0)
  assert record == {'copied': ['a/w'], 'dropped': ['b/w'], 'unused': ['c/w']}


# --- Parameter groups. -----------------------------------------------------------------

def test_a_frozen_group_keeps_its_bytes_and_a_multiplier_scales_its_updates():
  params = {'embedding': {'embedding': jnp.ones((4, 3))}, 'head': {'kernel': jnp.ones((3, 2))},
            'hidden_0': {'kernel': jnp.ones((3, 3))}}
  groups = optim.parse_param_groups('^embedding/=freeze,^head/=0.5')
  tx = optim.make_optimizer('sgd', 0.1, groups=groups)
  state = tx.init(params)
  grads = jax.tree.map(jnp.ones_like, params)
  for _ in range(3):
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
  np.testing.assert_array_equal(params['embedding']['embedding'], 1.0)
  head_step, hidden_step = 1.0 - params['head']['kernel'], 1.0 - params['hidden_0']['kernel']
  np.testing.assert_allclose(head_step, 0.5 * hidden_step[:, :2], rtol=1e-6)
  assert float(hidden_step[0, 0]) > 0


def test_adamw_leaves_layer_norms_and_biases_out_of_weight_decay():
  params = {'layers_0': {'attention_norm': {'scale': jnp.ones(3), 'bias': jnp.ones(3)},
                         'intermediate': {'kernel': jnp.ones((3, 3)), 'bias': jnp.ones(3)}}}
  tx = optim.make_optimizer('adamw', 0.1, weight_decay=0.5, no_decay='bias|norm')
  zeros = jax.tree.map(jnp.zeros_like, params)  # Only the decay moves a parameter.
  updates, _ = tx.update(zeros, tx.init(params), params)
  moved = jax.tree.map(lambda u: float(jnp.abs(u).max()), updates)
  assert moved['layers_0']['intermediate']['kernel'] == pytest.approx(0.05)  # lr x decay x value.
  assert moved['layers_0']['intermediate']['bias'] == 0.0
  assert moved['layers_0']['attention_norm'] == {'scale': 0.0, 'bias': 0.0}


def test_freezing_through_the_config_keeps_the_embedding_table_bit_identical(tmp_path):
  data = write_corpus(tmp_path / 'data')
  config = tiny_config(data, **{'optim.param_groups': '^embedding/=freeze', 'train.steps': 10})
  claimed = training.claim_workdir(config, str(tmp_path / 'run'))
  exp = experiment.build_experiment(config, claimed)
  before = np.asarray(exp.init_state().params['embedding']['embedding'])
  training.run_training(config, str(tmp_path / 'run'))
  after = runs.load_run(str(tmp_path / 'run')).params
  assert after['embedding']['embedding'].tobytes() == before.tobytes()
  assert not np.array_equal(after['head']['kernel'], exp.init_state().params['head']['kernel'])


def test_a_frozen_encoder_takes_no_gradient_and_no_backward_pass():
  """Frozen leaves are constants of the step's loss: the trained leaves get the gradient they get
  without freezing, the frozen ones zero, and the compiled gradient skips the encoder's backward."""
  defaults = {k: (v[0] if isinstance(v, tuple) else v) for k, v in registry.sections()['transformer'].fields.items()}
  section = {'name': 'transformer', 'embed_dim': 32, 'dropout': 0.0,
             'transformer': dict(defaults, num_layers=2, num_heads=2, intermediate_dim=64, max_positions=16)}
  fns = registry.model_fns(registry.from_section(section, vocab_size=50, num_classes=2))
  rng = np.random.default_rng(0)
  batch = Batch(token_ids=jnp.asarray(rng.integers(1, 50, (8, 16)), jnp.int32), lengths=jnp.full((8,), 16, jnp.int32),
                labels=jnp.asarray(rng.integers(0, 2, 8), jnp.int32), weights=jnp.ones((8,), jnp.float32))
  params = fns.init(jax.random.PRNGKey(0), batch.token_ids, batch.lengths)
  frozen = optim.frozen_mask(optim.parse_param_groups(
      '^(embedding|embedding_norm)/|^(position|type)_embedding$|^layers_=freeze'))
  is_frozen = jax.tree.leaves(frozen(params))
  assert any(is_frozen) and not all(is_frozen)
  loss = lambda p: Classification(2).loss(fns, p, batch, None)[0]
  held = lambda p: parallel.without_frozen_gradients(lambda q, *a: Classification(2).loss(fns, q, *a), frozen)(
      p, batch, None)[0]
  full, partial = (jax.jit(jax.grad(f)) for f in (loss, held))
  for g, h, f in zip(jax.tree.leaves(full(params)), jax.tree.leaves(partial(params)), is_frozen):
    assert not np.any(h) if f else np.array_equal(g, h)
  flops = lambda f: f.lower(params).compile().cost_analysis()['flops']
  assert flops(partial) < 0.5 * flops(full)


@pytest.mark.parametrize('spec, message', [('embedding', 'is not REGEX=MULTIPLIER'), ('[=freeze', 'regular'),
                                           ('head=fast', 'neither a number'), ('head=-1', '>= 0')])
def test_bad_param_groups_are_refused(spec, message):
  with pytest.raises(ValueError, match=message):
    optim.parse_param_groups(spec)


# --- Configs. --------------------------------------------------------------------------

@pytest.mark.parametrize('path', CONFIGS, ids=os.path.basename)
@pytest.mark.parametrize('arg', ['', 'tiny'])
def test_every_shipped_config_loads_and_passes_its_checks(path, arg):
  config = runpy.run_path(path)['get_config'](arg)
  checks.check_config(config)
  if arg == 'tiny':
    assert config.train.steps <= 20 and config.model.embed_dim <= 16


def test_unknown_config_variant_is_refused():
  with pytest.raises(ValueError, match="unknown config variant 'huge'"):
    runpy.run_path(CONFIGS[0])['get_config']('huge')


@pytest.mark.parametrize('key, value, message', [
    ('optim.learning_rate', 0.0, r'optim.learning_rate=0.0 must be > 0.0'),
    ('optim.learning_rate', -1e-3, 'must be > 0.0'),
    ('model.dropout', 1.0, r'model.dropout=1.0 must be in \[0.0, 1.0\)'),
    ('model.mlp.word_dropout', -0.1, 'must be in'),
    ('data.bucket_growth', 1.0, r'must be > 1.0'),
    ('checkpoint.keep_best', 0, '>= 1'),
    ('data.max_len', 0, '>= 1'),
    ('train.max_skipped_in_a_row', 0, '>= 1'),
])
def test_out_of_range_values_are_refused_before_any_data_is_read(key, value, message):
  config = tiny_config('/nonexistent', **{key: value})
  with pytest.raises(ConfigError, match=message):
    checks.check_config(config)


# --- What a resume leaves in metrics.jsonl; NaN skips have a cap. ----------------------

def test_metrics_hold_each_step_once_after_a_kill_and_a_resume(tmp_path):
  data = write_corpus(tmp_path / 'data')
  config = tiny_config(data, **{'train.log_every_steps': 1})
  workdir = tmp_path / 'run'
  training.run_training(config, str(workdir), stop_after_steps=10)
  with open(workdir / 'metrics.jsonl', 'a') as f:  # As a killed run leaves it: steps past the checkpoint, half a line.
    f.write(json.dumps({'step': 11, 'kind': 'train', 'loss': 1.0}) + '\n' + '{"step": 12, "kind": "tr')
  training.run_training(config, str(workdir))
  records = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
  seen = [(r['step'], r['kind']) for r in records if r['kind'] != 'start']
  assert len(seen) == len(set(seen))
  assert [r['step'] for r in records if r['kind'] == 'train'] == list(range(1, 25))
  assert [r['start_step'] for r in records if r['kind'] == 'start'] == [0, 10]


def test_nan_skip_stops_after_too_many_in_a_row(tmp_path, monkeypatch):
  original = batching.TrainBatches.batch

  def poisoned(self, step):
    b = original(self, step)
    return b._replace(weights=np.full_like(np.asarray(b.weights), np.nan)) if step >= 12 else b

  monkeypatch.setattr(batching.TrainBatches, 'batch', poisoned)
  data = write_corpus(tmp_path / 'data')
  config = tiny_config(data, **{'train.nan_policy': 'skip', 'train.max_skipped_in_a_row': 3,
                                'train.log_every_steps': 1})
  with pytest.raises(loop.TrainingError, match=r'step 15: 3 steps in a row.*train\.max_skipped_in_a_row=3.*'
                                               r'the checkpoint at step 10 .* is intact'):
    training.run_training(config, str(tmp_path / 'run'))


# --- Constants: inputs that are neither trained nor donated (a teacher). ----------------

@pytest.mark.parametrize('mode', parallel.MODES)
def test_a_teachers_parameters_reach_the_loss_and_stay_as_they_were(mode):
  import dataclasses  # pylint: disable=g-import-not-at-top
  from bigjax.tasks.classification import Classification  # pylint: disable=g-import-not-at-top
  config = tiny_config('', 'mlp')
  fns = registry.model_fns(experiment.build_model(config.model, 30, 2))

  @dataclasses.dataclass(frozen=True)
  class MatchTheTeacher(Classification):
    def loss(self, model, params, batch, dropout_key, constants=None):
      ours = model.logits(params, batch.token_ids, batch.lengths, None)
      theirs = model.logits(constants, batch.token_ids, batch.lengths, None)
      loss_sum = jnp.sum(jnp.square(ours - theirs).sum(-1) * batch.weights)
      return loss_sum, {'loss': loss_sum, 'correct': jnp.zeros(())}

  rng = np.random.default_rng(0)
  batch = Batch(rng.integers(1, 30, (16, 8)).astype(np.int32), np.full(16, 8, np.int32),
                np.zeros(16, np.int32), np.ones(16, np.float32))
  task, tx = MatchTheTeacher(2), optax.adam(1e-2)
  teacher = fns.init(jax.random.PRNGKey(7), batch.token_ids, batch.lengths)
  teacher_bytes = jax.tree.map(lambda x: np.asarray(x).tobytes(), teacher)
  driver = parallel.task_driver(mode, task, fns, tx)
  state = driver.put_state(step_lib.create_train_state(fns, tx, jax.random.PRNGKey(0), batch))
  constants = driver.put_constants(teacher)
  losses = []
  for _ in range(30):
    state, sums = driver.train_step(state, batch, constants)
    losses.append(float(driver.fetch([sums])[0]['loss']))
  assert losses[-1] < 0.1 * losses[0]  # The student moves towards the teacher...
  assert jax.tree.map(lambda x: np.asarray(x).tobytes(), teacher) == teacher_bytes  # ...which stays put.
  jax.block_until_ready(constants)  # Not donated: still alive after 30 steps.


def test_the_tensorboard_writer_does_not_import_torch(tmp_path):
  # tensorboardX imports torch where it is installed (2.4 s before a first step); the writer
  # skips that import, and torch stays importable afterwards.
  code = (
      'import importlib.util, sys\n'
      'from bigjax.metrics import MetricWriter\n'
      f'w = MetricWriter({str(tmp_path)!r}, enabled=True)\n'
      'w.start(0)\n'
      'w.write(3, "train", {"loss": 0.5})\n'
      'w.close()\n'
      'print("torch loaded:", "torch" in sys.modules)\n'
      'if importlib.util.find_spec("torch") is not None:\n'
      '  import torch\n'
      '  print("torch importable:", torch.zeros(1).shape == (1,))\n')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert out.returncode == 0, out.stderr[-2000:]
  assert 'torch loaded: False' in out.stdout
  assert 'torch importable: False' not in out.stdout
  assert glob.glob(str(tmp_path / 'tensorboard' / 'events.out.tfevents.*'))


@pytest.mark.parametrize('total_steps,peak', [(40, 4), (704, 70)])
def test_a_warmup_fraction_follows_the_run_length(total_steps, peak):
  """optim.warmup_fraction = 0.1: the learning rate peaks a tenth of the way into any run."""
  config = tiny_config('unused')
  config.optim.update(schedule='linear', learning_rate=1.0, warmup_steps=0, warmup_fraction=0.1)
  assert experiment.warmup(config.optim, total_steps) == peak
  schedule = optim.make_schedule('linear', 1.0, total_steps, experiment.warmup(config.optim, total_steps))
  rates = [float(schedule(step)) for step in range(total_steps + 1)]
  assert int(np.argmax(rates)) == peak and rates[-1] == 0.0
