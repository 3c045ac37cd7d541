"""A run folder in a bucket (--workdir=gs://bucket/runs/x): every file bigjax itself writes or
reads there goes through etils.epath, so the claim, origin.json, config.json, metrics.jsonl,
TensorBoard's events, results.json and the tokenizer land in the bucket and are read back
from it, and a folder holding something else is refused there as it is locally.

The bucket is a stand-in: `etils.epath.testing.mock_epath` serves gs://test-bucket/... from a
local folder. Orbax's array data goes through TensorStore, which speaks to GCS itself and not
through epath, so the checkpoints are written by a Checkpointer given the stand-in's local
folder for the same place (docs/guides/training.md, "Scaling out", says what only a real
bucket can check).
"""
import json
import os

from etils import epath
from etils.epath import gpath
from etils.epath import testing as epath_testing
import pytest

from bigjax import checkpoint as checkpoint_lib
from bigjax import files
from bigjax import metrics
from bigjax import runs
from bigjax import training
from bigjax import workdirs
from bigjax.data import tokenizer as tokenizer_lib
from bigjax.errors import ConfigError
from bigjax.train import loop
from tests.test_train import tiny_config, write_corpus

BUCKET = 'gs://test-bucket'


@pytest.fixture
def bucket(tmp_path, monkeypatch):
  """The local folder that serves gs://test-bucket/..., and its path mapping."""
  root = tmp_path / 'bucket'
  root.mkdir()

  def local(path):
    path = os.fspath(path)
    return str(root) + path[len(BUCKET):] if path.startswith(BUCKET) else path

  def back(asked, path):
    """A path found under what was asked for, named as it was asked (a URL, or the local path)."""
    path = os.fspath(path)
    return BUCKET + path[len(str(root)):] if os.fspath(asked).startswith(BUCKET) else path

  one = lambda original, path, *args, **kwargs: original(local(path), *args, **kwargs)

  def open_object(original, path, mode):
    if os.fspath(path).startswith(BUCKET) and 'r' not in mode:  # An object's name makes its "folders".
      os.makedirs(os.path.dirname(local(path)), exist_ok=True)
    return original(local(path), mode)

  two = lambda original, path, dst, **kwargs: original(local(path), local(dst), **kwargs)

  def walk(original, top, **kwargs):
    for folder, dirs, names in original(local(top), **kwargs):
      yield back(top, folder), dirs, names

  # With TensorFlow installed, epath sends gs:// to tf.io.gfile rather than its (mocked) backends.
  monkeypatch.setattr(gpath, '_is_tf_installed', lambda: False)
  # A path handled by os.path rather than epath would land in the working directory ('gs:/...').
  (tmp_path / 'cwd').mkdir()
  monkeypatch.chdir(tmp_path / 'cwd')
  with epath_testing.mock_epath(
      open=open_object, exists=one, isdir=one, listdir=one, makedirs=one, mkdir=one, remove=one, rmtree=one, stat=one,
      rename=two, replace=two, copy=two, walk=walk,
      glob=lambda original, pattern: [back(pattern, p) for p in original(local(pattern))]):
    yield root, local


@pytest.fixture
def checkpoints_beside(bucket, monkeypatch):
  """Checkpointers that write where the stand-in keeps the bucket: TensorStore would go to GCS."""
  _, local = bucket

  class StandIn(checkpoint_lib.Checkpointer):

    def __init__(self, directory, *, best_directory=None, **kwargs):
      super().__init__(local(directory), best_directory=best_directory and local(best_directory), **kwargs)

  monkeypatch.setattr(loop, 'Checkpointer', StandIn)
  monkeypatch.setattr(checkpoint_lib, 'Checkpointer', StandIn)


def test_a_run_in_a_bucket_trains_resumes_and_is_read_back(tmp_path, bucket, checkpoints_beside):
  root, _ = bucket
  config = tiny_config(write_corpus(tmp_path / 'corpus'), **{
      'data.max_len': 16, 'data.smallest_bucket': 16, 'train.steps': 8, 'checkpoint.every_steps': 2,
      'train.log_every_steps': 2})
  workdir = f'{BUCKET}/runs/x'
  assert training.run_training(config, workdir, stop_after_steps=3)['step'] == 3  # Saved at step 3.
  folder = root / 'runs' / 'x'
  names = {'origin.json', 'config.json', 'tokenizer.json', 'metrics.jsonl', 'tensorboard', 'checkpoints', 'best'}
  assert set(os.listdir(folder)) == names  # Nothing else: no .tmp files, no write probes.
  assert json.loads((folder / 'origin.json').read_text()) == {'command': 'experiments.train (model mlp)',
                                                              'inputs': []}
  results = training.run_training(config, workdir)  # Resumes at 3: metrics.jsonl is rewritten from there.
  assert results['step'] == 8 and results['bytes_on_disk'] > 0
  assert json.loads((folder / 'results.json').read_text())['params_fingerprint'] == results['params_fingerprint']
  assert files.read_json(f'{workdir}/results.json')['step'] == 8
  records = [json.loads(line) for line in (folder / 'metrics.jsonl').read_text().splitlines()]
  assert [r['start_step'] for r in records if r['kind'] == 'start'] == [0, 3]
  train_steps = [r['step'] for r in records if r['kind'] == 'train']
  assert train_steps == sorted(set(train_steps)) and train_steps[-1] == 8  # Each step once, after the resume.
  assert {r['kind'] for r in records} == {'start', 'train', 'dev', 'test'}
  assert len([f for f in os.listdir(folder / 'tensorboard') if f.startswith('events.out.tfevents')]) == 2
  assert not os.listdir(tmp_path / 'cwd')

  run = runs.load_run(workdir)  # config.json and tokenizer.json from the bucket.
  assert run.workdir == workdir and run.derived.total_steps == 8 and run.step == results['best_step']
  assert run.tokenizer.fingerprint() == tokenizer_lib.Tokenizer.load(str(folder)).fingerprint()
  assert workdirs.read_origin(workdir) == workdirs.Origin('experiments.train (model mlp)')
  (folder / 'origin.json').unlink()  # A run from before origin.json: its config.json says what made it.
  assert workdirs.read_origin(workdir) == workdirs.Origin('experiments.train (model mlp)')

  # Refused there as locally: another command, another start, a folder of other files, a file.
  with pytest.raises(ConfigError, match=r'holds the output of experiments.train \(model mlp\)'):
    workdirs.claim(workdir, 'experiments.compress --method=quantize', {'--from': f'{BUCKET}/elsewhere'})
  with pytest.raises(ConfigError, match=r'this is experiments.train \(model mlp\) from gs://test-bucket/other'):
    workdirs.claim(workdir, 'experiments.train (model mlp)', {'init.checkpoint': f'{BUCKET}/other/'})
  (root / 'notes').mkdir()
  (root / 'notes' / 'todo.txt').write_text('x')
  with pytest.raises(ConfigError, match=r'holds files bigjax did not write \(todo.txt\)'):
    workdirs.claim(f'{BUCKET}/notes', 'experiments.train (model mlp)')
  with pytest.raises(ConfigError, match='is a file'):
    workdirs.claim(f'{BUCKET}/notes/todo.txt', 'experiments.train (model mlp)')
  with pytest.raises(ConfigError, match='lies inside'):
    workdirs.claim(f'{workdir}/sub', 'experiments.train (model mlp)', {'init.checkpoint': workdir})
  workdirs.check_apart(f'{workdir}2', {'init.checkpoint': workdir})  # A sibling, not inside.
  assert workdirs.claim(f'{BUCKET}/empty/', 'experiments.train') == f'{BUCKET}/empty'
  assert os.listdir(root / 'empty') == ['origin.json']


def test_metrics_in_a_bucket_are_rewritten_whole_and_resume_like_a_local_file(tmp_path, bucket):
  root, _ = bucket
  by_place = {}
  (tmp_path / 'local').mkdir()
  for place in (f'{BUCKET}/m', str(tmp_path / 'local')):
    writer = metrics.MetricWriter(place)
    writer.start(0)
    for step in (1, 2, 3, 4):
      writer.write(step, 'train', {'loss': 1.0 / step})
      assert len(epath_text(place).splitlines()) == step  # In the file at once: uploaded at each record.
    writer.close()
    text = epath_text(place)
    assert [json.loads(line)['step'] for line in text.splitlines()] == [1, 2, 3, 4]
    # A local run killed mid-line leaves a partial last line (a bucket's object is never partial): dropped.
    files.write_text(f'{place}/metrics.jsonl', text + '{"step": 5, "ki')
    writer = metrics.MetricWriter(place)
    writer.start(2)  # Resumed at 2: steps 3 and 4 (and the partial line) are written again.
    writer.write(3, 'train', {'loss': 0.5})
    writer.close()
    by_place[place] = [(r['step'], r['loss']) for r in map(json.loads, epath_text(place).splitlines())]
  # Named by the second they start in, as locally: here both attempts share one name.
  assert any(f.startswith('events.out.tfevents') for f in os.listdir(root / 'm' / 'tensorboard'))
  assert not os.listdir(tmp_path / 'cwd')
  assert by_place[f'{BUCKET}/m'] == by_place[str(tmp_path / 'local')] == [(1, 1.0), (2, 0.5), (3, 0.5)]


def test_json_and_tokenizer_files_in_a_bucket_are_written_whole(tmp_path, bucket):
  root, _ = bucket
  files.write_json(f'{BUCKET}/r/results.json', {'step': 1})
  assert os.listdir(root / 'r') == ['results.json']  # In place: no .tmp object to rename.
  assert files.read_json(f'{BUCKET}/r/results.json') == {'step': 1}
  tokenizer = tokenizer_lib.train_tokenizer(['a good film', 'a bad film'] * 4, 40, kind='word', min_frequency=1)
  tokenizer.save(f'{BUCKET}/r')
  local = tmp_path / 'local'
  local.mkdir()
  tokenizer._tok.save(str(local / 'tokenizer.json'))  # pylint: disable=protected-access
  assert (root / 'r' / 'tokenizer.json').read_bytes() == (local / 'tokenizer.json').read_bytes()
  assert tokenizer_lib.Tokenizer.load(f'{BUCKET}/r').fingerprint() == tokenizer.fingerprint()


def epath_text(folder: str) -> str:
  return epath.Path(folder, 'metrics.jsonl').read_text()
