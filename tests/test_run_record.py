"""config.json as one versioned record (bigjax.run_record): what is written reads back equal,
an older run's file reads with the documented defaults, and a damaged one is one DataError
naming the file and the entry. No training: the records are written here.
"""
import json
import os

import pytest

from bigjax import run_record
from bigjax import workdirs
from bigjax.config import schema
from bigjax.errors import ConfigError, DataError


def resolved_config(**data) -> dict:
  """A resolved config as config.json holds it (the ConfigDict's JSON)."""
  config = schema.get_config('tiny')
  config.data.update(data)
  return json.loads(config.to_json())


def every_field() -> run_record.Derived:
  """A classifier's fields, the optional ones included (one run has not all of them, a record may)."""
  return run_record.Derived(
      vocab_size=120, num_classes=3, label_names=['neg', 'neutral', 'pos'], task='classification',
      selection_metric='dev_accuracy', higher_is_better=True, total_steps=60, steps_per_epoch=12,
      checkpoint_every_steps=6, data_fingerprint='0123456789abcdef',
      train_batches={'batches': 12, 'distinct_shapes': 3, 'padding_fraction': 0.25, 'real_tokens': 900},
      bucket_boundaries=[16, 24], devices=8, processes=1, global_batch_rows=16,
      init={'checkpoint': '/runs/source', 'step': 30, 'drop': '^head/', 'copied': ['embedding/embedding'],
            'dropped': ['head/bias', 'head/kernel']},
      data_from_cache={'tokenizer': True, 'splits': False}, train_examples=180,
      documents={'train': 10, 'dev': 1, 'test': 1}, tokens={'train': 900, 'dev': 90, 'test': 90},
      distill={'teacher': '/runs/teacher'},
      quantization={'method': 'quantize', 'mode': 'int8', 'activations': 'dynamic', 'source': '/runs/source',
                    'source_step': 30, 'calibration_examples': 0, 'stored_bytes': 1234})


def todays_file(config: dict) -> dict:
  """config.json as bigjax wrote it before the record (format version 0): no format_version,
  a classifier's derived without the optional entries."""
  derived = {'vocab_size': 120, 'num_classes': 2, 'label_names': ['negative', 'positive'],
             'task': 'classification', 'selection_metric': 'dev_accuracy', 'higher_is_better': True,
             'total_steps': 60, 'steps_per_epoch': 12, 'checkpoint_every_steps': 6, 'data_fingerprint': 'ab12',
             'train_batches': {'batches': 12, 'distinct_shapes': 2, 'padding_fraction': 0.3, 'real_tokens': 700},
             'bucket_boundaries': [16, 24], 'devices': 8, 'processes': 1, 'global_batch_rows': 16, 'init': {}}
  return {'config': config, 'derived': derived, 'argv': ['experiments/train.py', '--workdir=/runs/x'],
          'versions': {'jax': '0.10.2'}}


def write_file(folder, value) -> str:
  os.makedirs(folder, exist_ok=True)
  path = os.path.join(folder, run_record.FILE)
  with open(path, 'w', encoding='utf-8') as f:
    json.dump(value, f)
  return path


def test_a_record_written_reads_back_equal(tmp_path):
  record = run_record.new_record(resolved_config(direction='backward'), every_field())
  run_record.write(str(tmp_path), record)
  assert not os.path.exists(tmp_path / 'config.json.tmp')
  assert run_record.read(str(tmp_path)) == record
  written = json.loads((tmp_path / 'config.json').read_text())
  assert list(written) == ['format_version', 'config', 'derived', 'argv', 'versions']
  assert written['format_version'] == run_record.FORMAT_VERSION == 1
  assert written['derived']['quantization']['stored_bytes'] == 1234
  # The optional fields that do not apply are not written: a language model's record has no
  # train_examples, a run that was not distilled no distill.
  plain = run_record.RunRecord(config=record.config, derived=run_record.Derived(
      vocab_size=50, num_classes=0, task='language_model', bucket_boundaries=[16]))
  os.makedirs(tmp_path / 'lm')
  run_record.write(str(tmp_path / 'lm'), plain)
  derived = json.loads((tmp_path / 'lm' / 'config.json').read_text())['derived']
  assert not set(derived) & {'data_from_cache', 'train_examples', 'documents', 'tokens', 'distill', 'quantization'}
  assert run_record.read(str(tmp_path / 'lm')) == plain


def test_todays_file_reads_as_it_was_written(tmp_path):
  info = todays_file(resolved_config())
  write_file(tmp_path, info)
  record = run_record.read(str(tmp_path))
  assert record.format_version == run_record.FORMAT_VERSION  # Upgraded: today's layout in memory.
  assert record.config == info['config'] and record.argv == info['argv'] and record.versions == info['versions']
  assert record.derived.to_json() == info['derived']
  assert record.model_name == 'mlp' and record.pruning is None
  # Written back (a quantized copy does so), it is version 1 with the same content.
  os.makedirs(tmp_path / 'copy')
  run_record.write(str(tmp_path / 'copy'), record)
  assert json.loads((tmp_path / 'copy' / 'config.json').read_text()) == {'format_version': 1, **info}


def test_an_older_run_reads_with_the_documented_defaults(tmp_path):
  """A run from before data.direction, data.text_form, the selection metric and the label names
  were recorded, and with null label names and bucket widths."""
  info = todays_file(resolved_config(max_len=40))
  for key in ('direction', 'text_form'):
    del info['config']['data'][key]
  info['config'].pop('prune')
  for key in ('task', 'selection_metric', 'higher_is_better', 'init', 'devices', 'processes', 'global_batch_rows',
              'train_batches', 'data_fingerprint', 'checkpoint_every_steps', 'total_steps', 'steps_per_epoch'):
    del info['derived'][key]
  info['derived'].update(label_names=None, bucket_boundaries=None)
  del info['argv'], info['versions']
  record = run_record.read(os.path.dirname(write_file(tmp_path, info)))
  assert record.data['direction'] == 'forward' and record.data['text_form'] == 'plain'
  assert record.data['keep'] == 'first' and record.data['max_len'] == 40
  assert record.pruning is None and record.argv == [] and record.versions == {}
  assert record.derived == run_record.Derived(vocab_size=120, num_classes=2, bucket_boundaries=[40])
  derived = record.derived
  assert (derived.task, derived.selection_metric, derived.higher_is_better) == ('classification', 'dev_accuracy', True)
  assert derived.label_names == [] and derived.init == {} and derived.train_batches == {}
  assert (derived.total_steps, derived.steps_per_epoch, derived.global_batch_rows) == (0, 0, 0)
  assert derived.quantization is None and derived.train_examples is None


def damage_derived(**entries):
  return lambda info: info['derived'].update(entries)


def drop(section, key):
  """Removes derived.KEY, or config.SECTION.KEY."""
  return lambda info: (info['derived'] if section == 'derived' else info['config'][section]).pop(key)


# name: (damage(info), substrings of the error).
DAMAGE = {
    'vocab_size_missing': (drop('derived', 'vocab_size'), ("(its derived): has no 'vocab_size' entry",)),
    'total_steps_a_string': (damage_derived(total_steps='60'), ("derived.total_steps is '60', not an integer",)),
    'higher_is_better_a_number': (damage_derived(higher_is_better=1), ('derived.higher_is_better is 1',)),
    'num_classes_negative': (damage_derived(num_classes=-2), ('derived.num_classes is -2, not a count',)),
    'label_names_too_few': (damage_derived(label_names=['negative']),
                            ('derived.label_names', 'not the names of the 2 classes')),
    'bucket_boundaries_strings': (damage_derived(bucket_boundaries=['16']),
                                  ("derived.bucket_boundaries is ['16'], not a list of integers",)),
    'quantization_without_mode': (damage_derived(quantization={'source': '/runs/a', 'activations': 'dynamic'}),
                                  ("(its derived.quantization): has no 'mode' entry",)),
    'train_examples_a_list': (damage_derived(train_examples=[1]), ('derived.train_examples is [1]',)),
    'derived_missing': (lambda info: info.pop('derived'), ("has no 'derived' entry",)),
    'model_name_missing': (drop('model', 'name'), ("(its config.model): has no 'name' entry",)),
    'max_len_missing': (drop('data', 'max_len'), ("(its config.data): has no 'max_len' entry",)),
    'max_len_zero': (lambda info: info['config']['data'].update(max_len=0), ('config.data.max_len is 0',)),
    'argv_a_string': (lambda info: info.update(argv='train.py'), ("argv is 'train.py', not a command line",)),
    'format_version_a_string': (lambda info: info.update(format_version='1'),
                                ("format_version is '1', not a version number",)),
    'format_version_newer': (lambda info: info.update(format_version=2),
                             ('format_version 2 is newer than this bigjax reads (up to 1)',)),
}


@pytest.mark.parametrize('name', sorted(DAMAGE))
def test_a_damaged_entry_is_one_error_naming_the_file_and_the_entry(tmp_path, name):
  damage, expected = DAMAGE[name]
  info = todays_file(resolved_config())
  damage(info)
  path = write_file(tmp_path, info)
  with pytest.raises(DataError) as raised:
    run_record.read(str(tmp_path))
  message = str(raised.value)
  assert message.startswith(path), message
  for part in expected:
    assert part in message, message


def test_a_folder_without_config_json_is_no_run(tmp_path):
  with pytest.raises(ConfigError, match='is not a bigjax run: it has no config.json'):
    run_record.read(str(tmp_path))
  (tmp_path / 'config.json').write_text('{"config": {"model": ')
  with pytest.raises(DataError, match='config.json: not valid JSON .* cut short'):
    run_record.read(str(tmp_path))


def test_an_older_folders_origin_comes_from_its_record(tmp_path):
  """A folder from before origin.json: the claim reads what made it from config.json."""
  trained = todays_file(resolved_config(path='/data/sst2'))
  trained['config']['init']['checkpoint'] = str(tmp_path / 'source')
  write_file(tmp_path / 'trained', trained)
  assert workdirs.read_origin(str(tmp_path / 'trained')) == workdirs.Origin(
      'experiments.train (model mlp)', frozenset([str(tmp_path / 'source')]))
  quantized = todays_file(resolved_config())
  quantized['argv'] = ['experiments/compress.py', '--method=quantize']
  quantized['derived']['quantization'] = {'mode': 'int8', 'activations': 'dynamic', 'source': str(tmp_path / 'a')}
  write_file(tmp_path / 'quantized', quantized)
  assert workdirs.read_origin(str(tmp_path / 'quantized')) == workdirs.Origin(
      'experiments.compress --method=quantize', frozenset([str(tmp_path / 'a')]))
  damaged = todays_file(resolved_config())
  del damaged['derived']['num_classes']
  write_file(tmp_path / 'damaged', damaged)
  with pytest.raises(DataError, match="has no 'num_classes' entry; the file is damaged: restore it"):
    workdirs.read_origin(str(tmp_path / 'damaged'))
