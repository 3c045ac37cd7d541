"""Damaged files of a run folder or an artifact, through the real entry points.

Run folders and artifacts are copied between machines and arrive cut short or overwritten.
Each case damages one file of a copy of a tiny trained run (or of its artifact), runs the
command that reads it as `python -m experiments.X`, and expects exit status 2, one line
`error: FILE: ...` naming the file, no traceback, no other output, and the folder
unchanged to the byte. bigjax.files reads the run's JSON files; the artifact's loader has
its own reader (it imports no bigjax).

Speed: one tiny run (2 steps) and its artifact per module; the cases run in the session's
entry-point helper (tests/entry_points.py), which imported JAX once and replays what that
import printed, as a fresh process would print it.
"""
import hashlib
import json
import os
import shutil

import pytest

from bigjax import metrics
from bigjax import runs
from bigjax import training
from bigjax.errors import DataError
from bigjax.export import export
from tests.entry_points import run_cases
from tests.test_reliability import config_args
from tests.test_train import tiny_config, write_corpus

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cut_short(path):
  """The first half of the file, as an interrupted copy leaves it."""
  with open(path, 'rb') as f:
    content = f.read()
  with open(path, 'wb') as f:
    f.write(content[:len(content) // 2])


def edit_json(path, edit):
  with open(path, encoding='utf-8') as f:
    value = json.load(f)
  with open(path, 'w', encoding='utf-8') as f:
    json.dump(edit(value), f)


def write(path, text):
  with open(path, 'w', encoding='utf-8') as f:
    f.write(text)


def without(key):
  return lambda value: {k: v for k, v in value.items() if k != key}


def damaged_metrics(path):
  """Garbage where a record was, before the last line: not what a killed run leaves."""
  with open(path, encoding='utf-8') as f:
    lines = f.read().splitlines(True)
  lines[1] = '\x00' * 40 + '\n'
  write(path, ''.join(lines))


def wrong_label_names(value):
  value['derived']['label_names'] = ['negative']  # One name for two classes.
  return value


# name: (command, folder ('run' or 'artifact'), file, damage(path), substrings of the error line).
CASES = {
    'evaluate_config_cut_short': ('evaluate', 'run', 'config.json', cut_short, ('not valid JSON', 'cut short')),
    'evaluate_config_a_list': ('evaluate', 'run', 'config.json', lambda p: write(p, '[1, 2]\n'), ('a JSON list',)),
    'evaluate_label_names_damaged': ('evaluate', 'run', 'config.json', lambda p: edit_json(p, wrong_label_names),
                                     ('derived.label_names', 'not the names of the 2 classes')),
    'evaluate_tokenizer_cut_short': ('evaluate', 'run', 'tokenizer.json', cut_short,
                                     ('cannot load the tokenizer', 'copy it again')),
    'explain_config_without_derived': ('explain', 'run', 'config.json', lambda p: edit_json(p, without('derived')),
                                       ("has no 'derived' entry",)),
    'export_results_cut_short': ('export', 'run', 'results.json', cut_short, ('not valid JSON',)),
    'train_resume_metrics_damaged': ('train', 'run', 'metrics.jsonl', damaged_metrics,
                                     ('metrics.jsonl:2: not valid JSON', 'delete that line')),
    'predict_metadata_cut_short': ('predict', 'artifact', 'metadata.json', cut_short, ('not valid JSON', 'cut short')),
    'predict_metadata_without_labels': ('predict', 'artifact', 'metadata.json',
                                        lambda p: edit_json(p, without('labels')),
                                        ("has no 'labels' entry", 'export the run again')),
    'serve_metadata_a_list': ('serve', 'artifact', 'metadata.json', lambda p: write(p, '["labels"]'), ('a JSON list',)),
}


def snapshot(folder):
  """{relative path: sha256} of every file under folder, and each folder."""
  digests = {}
  for root, dirs, names in os.walk(folder):
    digests.update({os.path.relpath(os.path.join(root, d), folder) + '/': '' for d in dirs})
    for name in names:
      with open(os.path.join(root, name), 'rb') as f:
        digests[os.path.relpath(os.path.join(root, name), folder)] = hashlib.sha256(f.read()).hexdigest()
  return digests


@pytest.fixture(scope='module')
def outcomes(tmp_path_factory):
  """Damages a copy per case, runs every case's command in the entry-point helper (tests/entry_points.py:
  a forked child each, as `python -m experiments.X`); {name: (result, folder, before)}."""
  tmp = tmp_path_factory.mktemp('damaged')
  data = write_corpus(str(tmp / 'data'))
  config = tiny_config(data, **{'train.steps': 2, 'checkpoint.every_steps': 2, 'train.log_every_steps': 2})
  training.run_training(config, str(tmp / 'run'))
  export.write_artifact(runs.load_run(str(tmp / 'run')), str(tmp / 'artifact'))
  test_file = os.path.join(data, 'test.txt')
  cases, before = {}, {}
  for name, (command, kind, file, damage, _) in CASES.items():
    folder = str(tmp / name)
    shutil.copytree(tmp / kind, folder)
    damage(os.path.join(folder, file))
    argv = {'evaluate': [f'--workdir={folder}', f'--data={test_file}'],
            'explain': [f'--workdir={folder}', '--text=a fine film'],
            'export': [f'--workdir={folder}', f'--out={tmp / name}_artifact'],
            'train': config_args(config) + [f'--workdir={folder}'],
            'predict': [f'--model={folder}', f'--input={test_file}'],
            'serve': [f'--model={folder}', '--port=0']}[command]
    cases[name] = (f'experiments.{command}', argv, str(tmp / f'{name}.stdout'))
    before[name] = (folder, snapshot(folder))
  done = run_cases(cases, str(tmp), case_timeout=300)
  results = {}
  for name, (folder, snapshot_before) in before.items():
    with open(cases[name][2], encoding='utf-8') as f:
      stdout = f.read()
    results[name] = (done[name]['rc'], stdout, done[name]['output'], folder, snapshot_before)
  return results


@pytest.mark.parametrize('name', sorted(CASES))
def test_a_damaged_file_is_one_error_line_naming_it(outcomes, name):
  _, _, file, _, expected = CASES[name]
  rc, stdout, stderr, folder, before = outcomes[name]
  assert rc == 2, stderr[-3000:]
  assert 'Traceback' not in stderr, stderr[-3000:]
  lines = [line for line in stderr.splitlines() if line.strip()]
  if CASES[name][0] == 'train':  # Training logs its progress (INFO lines) before it meets the file.
    assert not [line for line in lines if line.startswith(('W', 'E')) or 'warning' in line.lower()], stderr[-3000:]
  else:  # The tools log warnings only: nothing beside the error.
    assert len(lines) == 1 and not stdout, stderr[-3000:]
  error = lines[-1]
  assert error.startswith(f'error: {os.path.join(folder, file)}'), error
  assert sum(line.startswith('error:') for line in lines) == 1, stderr[-3000:]
  for needle in expected:
    assert needle in error, (needle, error)
  assert snapshot(folder) == before  # Nothing rewritten, added or removed.
  assert not os.path.exists(f'{folder}_artifact')  # export: no partial artifact either.


def test_metrics_keep_tolerating_the_partial_last_line_of_a_killed_run(tmp_path):
  path = tmp_path / 'metrics.jsonl'
  records = [{'step': 0, 'kind': 'start'}, {'step': 5, 'kind': 'dev'}, {'step': 10, 'kind': 'dev'}]
  path.write_text(''.join(json.dumps(r) + '\n' for r in records) + '{"step": 15, "ki')
  writer = metrics.MetricWriter(str(tmp_path))
  writer.start(10)  # Resuming at 10: the partial line is dropped, step 10's dev record kept.
  writer.close()
  assert [json.loads(line) for line in path.read_text().splitlines()] == records
  # A damaged line before the last is not what a killed run leaves: an error, and the file kept.
  damaged = json.dumps(records[0]) + '\n' + '[1, 2]\n' + json.dumps(records[1]) + '\n'
  path.write_text(damaged)
  with pytest.raises(DataError, match=r'metrics.jsonl:2: a JSON list where the run writes an object'):
    metrics.MetricWriter(str(tmp_path)).start(10)
  assert path.read_text() == damaged
