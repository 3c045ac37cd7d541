"""Training end to end: resume equals an uninterrupted run, results, the entry point, errors."""
import json
import os

import numpy as np
import pytest

from bigjax import errors
from bigjax import training
from bigjax.config import schema
from tests.entry_points import run_module

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POSITIVE = 'good great fine superb lovely charming'.split()
NEGATIVE = 'bad awful dull boring weak tedious'.split()
FILLER = 'the a movie film plot is was and of it this acting story'.split()


def write_corpus(folder, sizes=(240, 40, 40), num_classes=2, seed=0):
  """A LABEL-text folder where the label is readable from the words (so models can learn it)."""
  rng = np.random.default_rng(seed)
  os.makedirs(folder, exist_ok=True)
  for name, n in zip(('train', 'dev', 'test'), sizes):
    with open(os.path.join(folder, f'{name}.txt'), 'w', encoding='utf-8') as f:
      for _ in range(n):
        label = int(rng.integers(num_classes))
        cue = POSITIVE if label % 2 else NEGATIVE
        words = list(rng.choice(FILLER, rng.integers(2, 20))) + list(rng.choice(cue, 2))
        if num_classes > 2:
          words.append(f'class{label}')
        rng.shuffle(words)
        f.write(f'{label} {" ".join(words)}\n')
  return folder


def tiny_config(data_path, model='mlp', **overrides):
  c = schema.get_config()
  c.data.path = str(data_path)
  c.data.vocab_size = 120
  c.data.max_len = 24
  c.data.smallest_bucket = 8
  c.model.name = model
  c.model.embed_dim = 16
  c.model.mlp.hidden_dim = c.model.lstm.hidden_dim = 16
  c.model.dropout = 0.3
  c.optim.learning_rate = 1e-2
  c.train.steps = 24
  c.train.batch_size = 16
  c.train.log_every_steps = 5
  c.checkpoint.every_steps = 5
  for key, value in overrides.items():
    *sections, name = key.split('.')
    node = c
    for section in sections:
      node = node[section]
    node[name] = value
  return c


# The Transformer at the tests' size: one layer of two heads (width 16), a position table as long
# as data.max_len, one bucket (each shape costs its own compilation, seconds on 2 cores).
TINY_TRANSFORMER = {'model.transformer.num_layers': 1, 'model.transformer.num_heads': 2,
                    'model.transformer.intermediate_dim': 32, 'model.transformer.max_positions': 16,
                    'model.transformer.pooling': 'mean', 'model.transformer.attention_dropout': 0.0,
                    'model.dropout': 0.0, 'data.max_len': 16, 'data.smallest_bucket': 16,
                    'checkpoint.every_steps': 24}


# The LSTM's resume is also checked through signals (test_reliability) and multi-host moves.
@pytest.mark.parametrize('model', ['mlp', pytest.param('lstm', marks=pytest.mark.slow)])
def test_resumed_run_equals_uninterrupted_run(tmp_path, model):
  data = write_corpus(tmp_path / 'data')
  config = tiny_config(data, model, **{'data.max_len': 16, 'data.smallest_bucket': 16})  # One shape: one compile.
  straight = training.run_training(config, str(tmp_path / 'straight'))
  interrupted = str(tmp_path / 'interrupted')
  first = training.run_training(config, interrupted, stop_after_steps=7)
  assert first['step'] == 7 and 'stopped' in first
  second = training.run_training(config, interrupted, stop_after_steps=9)  # Resumes at 7, stops at 16.
  assert second['step'] == 16
  resumed = training.run_training(config, interrupted)
  assert resumed['step'] == straight['step'] == 24
  # Dropout keys, data order and optimizer state all restored: bit-identical parameters.
  assert resumed['params_fingerprint'] == straight['params_fingerprint']
  assert resumed['test']['accuracy'] == straight['test']['accuracy']


def test_results_and_outputs(tmp_path):
  data = write_corpus(tmp_path / 'data', sizes=(400, 60, 60))
  workdir = tmp_path / 'run'
  results = training.run_training(tiny_config(data, **{'train.steps': 60}), str(workdir))
  saved = json.loads((workdir / 'results.json').read_text())
  assert saved['params_fingerprint'] == results['params_fingerprint']
  assert saved['step'] == 60 and saved['best_step'] % 5 == 0
  assert saved['test']['accuracy'] > 0.9  # The cue words make this easy; chance is 0.5.
  assert saved['dev']['accuracy'] >= 0.9 and len(saved['test']['confusion']) == 2
  assert saved['train']['examples_per_s'] > 0 and saved['train']['tokens_per_s'] > saved['train']['examples_per_s']
  assert saved['train']['loss'] < 0.5
  for name in ('tokenizer.json', 'config.json', 'metrics.jsonl'):
    assert (workdir / name).exists(), name
  assert any(f.startswith('events.out.tfevents') for f in os.listdir(workdir / 'tensorboard'))
  records = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
  assert {r['kind'] for r in records} == {'start', 'train', 'dev', 'test'}
  derived = json.loads((workdir / 'config.json').read_text())['derived']
  assert derived['num_classes'] == 2 and derived['total_steps'] == 60


def test_multiclass_data_trains(tmp_path):
  data = write_corpus(tmp_path / 'data', sizes=(600, 80, 80), num_classes=5)
  results = training.run_training(tiny_config(data, **{'train.steps': 120, 'checkpoint.every_steps': 40}),
                                str(tmp_path / 'run'))
  assert len(results['test']['confusion']) == 5
  assert results['test']['accuracy'] > 0.5  # Chance is 0.2.


def test_checkpoint_of_another_run_is_refused(tmp_path):
  data = write_corpus(tmp_path / 'data')
  workdir = str(tmp_path / 'run')
  training.run_training(tiny_config(data), workdir, stop_after_steps=5)
  with pytest.raises(errors.BigjaxError, match='incompatible'):
    training.run_training(tiny_config(data, **{'model.mlp.hidden_dim': 8}), workdir)


def run_entry_point(*args, timeout=300):
  return run_module('experiments.train', args, timeout=timeout)


def test_entry_point_trains_and_resumes(tmp_path):
  data = write_corpus(tmp_path / 'data')
  workdir = tmp_path / 'run'
  args = ['--config=experiments/configs/mlp_sst2.py', f'--workdir={workdir}', f'--config.data.path={data}',
          '--config.data.vocab_size=120', '--config.model.embed_dim=16', '--config.model.mlp.hidden_dim=16',
          '--config.train.steps=10', '--config.train.batch_size=16', '--config.checkpoint.every_steps=5']
  done = run_entry_point(*args)
  assert done.returncode == 0, done.stderr[-2000:]
  assert 'ETA' in done.stderr and 'test accuracy' in done.stderr  # What the user is shown.
  results = json.loads((workdir / 'results.json').read_text())
  assert results['step'] == 10
  again = run_entry_point(*args)  # Finished run: resumes at step 10, trains nothing, same answer.
  assert again.returncode == 0, again.stderr[-2000:]
  records = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
  assert [r['start_step'] for r in records if r['kind'] == 'start'] == [0, 10]
  assert json.loads((workdir / 'results.json').read_text())['params_fingerprint'] == results['params_fingerprint']


@pytest.mark.parametrize('args, expected', [
    (['--config.data.path=/nonexistent/corpus'], '/nonexistent/corpus'),
    (['--config.model.name=gpt'], 'model.name'),
])
def test_entry_point_user_errors_are_one_line(tmp_path, args, expected):
  done = run_entry_point('--config=experiments/configs/mlp_sst2.py', f'--workdir={tmp_path / "run"}', *args)
  assert done.returncode == 2
  assert expected in done.stderr and 'Traceback' not in done.stderr


def test_trains_from_tensorflow_datasets_by_name(tmp_path, monkeypatch):
  """data.path empty: tfds by name. mock_data fakes glue/sst2 offline (random text)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from bigjax.data.sources import tfds as tfds_source  # pylint: disable=g-import-not-at-top
  # mock_data leaves is_prepared() False; pretend the network is there so no probe runs.
  monkeypatch.setattr(tfds_source, '_network_available', lambda *a, **k: True)
  config = tiny_config('', **{'data.name': 'glue/sst2', 'train.steps': 6})
  with tfds.testing.mock_data(num_examples=40):
    results = training.run_training(config, str(tmp_path / 'run'))
  assert results['step'] == 6 and len(results['test']['confusion']) == 2
  assert results['test']['examples'] > 0
