"""Start-up work done once: tokenized splits and compiled steps cached, and nothing stale ever read."""
import json
import os

import numpy as np

from bigjax import experiment
from bigjax import training
from bigjax.data import cache as cache_lib
from bigjax.data import sources
from tests.entry_points import run_cases
from tests.test_reliability import config_args
from tests.test_train import tiny_config, write_corpus


def config_with_cache(data, cache_dir, **overrides):
  return tiny_config(data, **{'data.max_len': 16, 'data.smallest_bucket': 16, 'cache.dir': str(cache_dir),
                              **overrides})


def derived(workdir):
  with open(os.path.join(workdir, 'config.json'), encoding='utf-8') as f:
    return json.load(f)['derived']


def forbid_reading_data(monkeypatch):
  def refuse(**kwargs):
    raise AssertionError(f'the data was read again: {kwargs.get("path")}')
  monkeypatch.setattr(sources, 'load_text_dataset', refuse)


def test_another_seed_and_a_resume_read_the_cache_and_equal_runs_that_tokenized(tmp_path, monkeypatch):
  data = write_corpus(tmp_path / 'data')
  cache_dir = tmp_path / 'cache'
  uncached = training.run_training(config_with_cache(data, cache_dir, **{'cache.data': False}), str(tmp_path / 'plain'))
  assert not os.path.exists(cache_dir / 'encoded')

  first = training.run_training(config_with_cache(data, cache_dir), str(tmp_path / 'first'), stop_after_steps=7)
  assert first['step'] == 7 and derived(tmp_path / 'first')['data_from_cache'] == {'tokenizer': False, 'splits': False}
  assert len(os.listdir(cache_dir / 'encoded')) == 1 and len(os.listdir(cache_dir / 'tokenizers')) == 1

  forbid_reading_data(monkeypatch)  # From here on, everything comes from the cache.
  resumed = training.run_training(config_with_cache(data, cache_dir), str(tmp_path / 'first'))
  assert derived(tmp_path / 'first')['data_from_cache']['splits']
  assert resumed['params_fingerprint'] == uncached['params_fingerprint']
  assert resumed['test'] == uncached['test']

  other_seed = training.run_training(config_with_cache(data, cache_dir, seed=3), str(tmp_path / 'seed3'))
  assert derived(tmp_path / 'seed3')['data_from_cache'] == {'tokenizer': True, 'splits': True}
  assert derived(tmp_path / 'seed3')['data_fingerprint'] == derived(tmp_path / 'plain')['data_fingerprint']
  assert other_seed['params_fingerprint'] != uncached['params_fingerprint']  # Another seed, the same split.


def test_changed_data_or_settings_are_not_read_from_the_cache(tmp_path):
  data = write_corpus(tmp_path / 'data')
  cache_dir = tmp_path / 'cache'
  experiment.build_experiment(config_with_cache(data, cache_dir), None)
  again = experiment.build_experiment(config_with_cache(data, cache_dir), None)
  assert again.dataset is None  # All from the cache: no texts read.

  longer = experiment.build_experiment(config_with_cache(data, cache_dir, **{'data.max_len': 8}), None)
  assert longer.dataset is not None and longer.train_batches.batch(0).token_ids.shape[1] <= 8

  with open(data / 'train.txt', 'a', encoding='utf-8') as f:  # One more example: a new key.
    f.write('1 good great\n')
  changed = experiment.build_experiment(config_with_cache(data, cache_dir), None)
  assert changed.dataset is not None and len(changed.dataset.splits['train'].texts) == 241
  assert len(os.listdir(cache_dir / 'encoded')) == 3


def test_an_unwritable_cache_is_skipped(tmp_path):
  data = write_corpus(tmp_path / 'data')
  blocked = tmp_path / 'not_a_folder'
  blocked.write_text('a file where the cache folder would be')
  exp = experiment.build_experiment(config_with_cache(data, blocked), None)
  assert len(exp.train_batches.batch(0).token_ids) == 16


def test_cache_entries_are_complete_or_absent(tmp_path):
  cache = cache_lib.Cache(str(tmp_path))

  def fails(folder):
    np.save(os.path.join(folder, 'part.npy'), np.zeros(3))
    raise OSError('disk full')
  assert cache.put('encoded', 'k', fails, {}) is None
  assert cache.get('encoded', 'k') is None and os.listdir(tmp_path / 'encoded') == []
  where = cache.put('encoded', 'k', lambda folder: np.save(os.path.join(folder, 'part.npy'), np.ones(3)), {'a': 1})
  assert cache.get('encoded', 'k') == where
  assert json.load(open(os.path.join(where, 'key.json'))) == {'a': 1}


def test_compiled_steps_go_to_the_persistent_cache_unless_it_is_off(tmp_path):
  data = write_corpus(tmp_path / 'data')
  on, off = tmp_path / 'cache_on', tmp_path / 'cache_off'
  # Through the command: the persistent cache is a process-wide JAX setting, which the
  # command makes (the library never touches JAX's global settings).
  cases = {name: ('experiments.train', config_args(config_with_cache(data, folder, **{'train.steps': 4, **extra}))
                  + [f'--workdir={tmp_path / name}'])
           for name, folder, extra in (('on', on, {}), ('off', off, {'cache.compilation': False}))}
  for name, outcome in run_cases(cases, str(tmp_path)).items():
    assert outcome['rc'] == 0, (name, outcome['output'][-3000:])
  assert len(os.listdir(on / 'jax')) > 0
  assert not (off / 'jax').exists()


def test_a_backward_run_does_not_read_a_forward_runs_cached_rows(tmp_path):
  data = write_corpus(tmp_path / 'data')
  cache_dir = tmp_path / 'cache'
  forward = experiment.build_experiment(config_with_cache(data, cache_dir), None)
  backward = experiment.build_experiment(config_with_cache(data, cache_dir, **{'data.direction': 'backward'}), None)
  assert backward.dataset is not None  # Its own key: tokenized again, in its order.
  assert experiment.build_experiment(config_with_cache(data, cache_dir, **{'data.direction': 'backward'}),
                                 None).dataset is None  # Then read back from the cache.
  f, b = forward.train_batches.split, backward.train_batches.split
  assert len(f.lengths) == len(b.lengths) and (f.lengths > 1).any()
  for i in range(len(f.lengths)):
    np.testing.assert_array_equal(b.tokens[b.offsets[i]:b.offsets[i + 1]], f.tokens[f.offsets[i]:f.offsets[i + 1]][::-1])
