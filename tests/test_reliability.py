"""Preemption, kills, damaged checkpoints, NaN/Inf steps and a full disk (docs/guides/training.md, "Reliability").

The reference for "exact" is an uninterrupted in-process run of the same config: every
interrupted run must end with its params_fingerprint, best step and test accuracy.
"""
import glob
import json
import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import pytest

from benchmarks import peers
from bigjax import checkpoint as checkpoint_lib
from bigjax import experiment
from bigjax import training
from bigjax.config import schema
from bigjax.data import batching
from bigjax.train import loop
from test_train import tiny_config, write_corpus

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# One shape (one compile), 40 steps, a checkpoint every 5; a log line every step, so that
# a test can kill the entry point at a chosen step.
OVERRIDES = {'data.max_len': 16, 'data.smallest_bucket': 16, 'train.steps': 40, 'train.log_every_steps': 1}


def config_args(config) -> list[str]:
  """--config.KEY=VALUE flags that turn base.py into `config`."""
  def flat(c, prefix=''):
    for key, value in c.items():
      if hasattr(value, 'items'):
        yield from flat(value, f'{prefix}{key}.')
      else:
        yield f'{prefix}{key}', value
  defaults = dict(flat(schema.get_config()))
  return ['--config=experiments/configs/base.py'] + [f'--config.{k}={v}' for k, v in flat(config)
                                                     if defaults.get(k) != v]


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
  return write_corpus(tmp_path_factory.mktemp('corpus'))


@pytest.fixture(scope='module')
def reference(corpus, tmp_path_factory):
  """The uninterrupted run every interrupted one must match."""
  return training.run_training(tiny_config(corpus, **OVERRIDES), str(tmp_path_factory.mktemp('reference')))


def assert_same_run(results, reference):
  assert results['step'] == reference['step']
  assert results['params_fingerprint'] == reference['params_fingerprint']
  assert results['best_step'] == reference['best_step']
  assert results['test']['accuracy'] == reference['test']['accuracy']


# ---------------------------------------------------------------------------------------
# Preemption and kills, through the real entry point.


class EntryPoint:
  """`python -m experiments.train` in the background, followed through WORKDIR/metrics.jsonl.

  Only this attempt's records count (those written after it was launched: a resume keeps
  the earlier attempts'); stderr is collected, to show on failure.
  """

  def __init__(self, args, workdir):
    self.records = []
    self._metrics = peers.MetricsFollower(os.path.join(workdir, 'metrics.jsonl'), since=time.time())
    self.proc = subprocess.Popen([sys.executable, '-m', 'experiments.train', *args], cwd=ROOT, text=True,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    self._lines = []
    self._reader = threading.Thread(target=lambda: self._lines.extend(self.proc.stderr), daemon=True)
    self._reader.start()

  def _poll(self) -> None:
    self.records += self._metrics.poll()

  def train_steps(self) -> list[int]:
    return [r['step'] for r in self.records if r['kind'] == 'train']

  def wait_for_step(self, at_least: int, timeout: float = 240) -> int:
    """Until a 'train' record of step N >= at_least (or the run ends); returns N (or -1)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
      ended = self.proc.poll() is not None
      self._poll()
      reached = [step for step in self.train_steps() if step >= at_least]
      if reached:
        return reached[0]
      if ended:
        return -1
      time.sleep(0.005)
    raise TimeoutError(f'no step {at_least} within {timeout} s:\n{"".join(self._lines[-20:])}')

  def finish(self, timeout: float = 240) -> tuple[int, str]:
    """(exit status, stderr); self.records then holds all of this attempt's records."""
    self.proc.wait(timeout=timeout)
    self._reader.join(timeout=10)
    self._poll()
    return self.proc.returncode, ''.join(self._lines)

  def resumed_from(self) -> int:
    """The step of this attempt's 'start' record (0: from scratch); there must be exactly one."""
    starts = [r['start_step'] for r in self.records if r['kind'] == 'start']
    assert len(starts) == 1, (starts, ''.join(self._lines[-20:]))
    return starts[0]


@pytest.mark.slow
def test_sigterm_and_sigkills_resume_bit_exactly(corpus, reference, tmp_path):
  """SIGTERM saves and exits 0; then 3 SIGKILLs at random steps; the last run matches the reference."""
  seed = random.randrange(10**6)
  rng = random.Random(seed)
  note = f'(kill steps drawn with seed {seed})'
  workdir = tmp_path / 'run'
  args = config_args(tiny_config(corpus, **OVERRIDES)) + [f'--workdir={workdir}']

  run = EntryPoint(args, workdir)
  at = run.wait_for_step(rng.randint(2, 12))
  run.proc.send_signal(signal.SIGTERM)
  code, log = run.finish()
  assert code == 0, log[-3000:]
  assert run.resumed_from() == 0, note
  # A stop writes the 'train' record of the step it stops at, then saves that step: the
  # newest checkpoint. It stopped early (no final test, no results.json).
  saved = run.train_steps()[-1]
  assert saved >= at and 'Traceback' not in log, note
  assert checkpoint_lib.Checkpointer(str(workdir / 'checkpoints')).all_steps()[-1] == saved, note
  assert os.path.isdir(workdir / 'checkpoints' / str(saved)), note  # Waited for the save before exiting.
  assert not any(r['kind'] == 'test' for r in run.records) and not (workdir / 'results.json').exists(), note

  start = saved
  assert start < 34, f'the SIGTERM landed at step {start}, too late to leave room for 3 kills {note}'
  for target in sorted(rng.sample(range(start + 2, 39), 3)):
    run = EntryPoint(args, workdir)
    run.wait_for_step(target)
    time.sleep(rng.uniform(0, 0.05))  # Sometimes in the middle of an async save.
    run.proc.kill()
    code, log = run.finish()
    assert code == -signal.SIGKILL, log[-3000:]
    resumed = run.resumed_from()
    # The newest complete checkpoint: the SIGTERM save or a periodic one, never a later one.
    assert resumed == start or (resumed % 5 == 0 and start <= resumed <= target), (resumed, start, note)
    start = max(start, resumed)

  run = EntryPoint(args, workdir)
  code, log = run.finish()
  assert code == 0, log[-3000:]
  assert run.resumed_from() >= start and not glob.glob(str(workdir / 'checkpoints' / '*tmp*')), note
  assert_same_run(json.loads((workdir / 'results.json').read_text()), reference)


def test_sigint_saves_at_the_next_step_and_resumes_bit_exactly(corpus, reference, tmp_path):
  """In process: a SIGINT arriving mid-run stops at the next step boundary with a checkpoint."""
  workdir = tmp_path / 'run'
  sent = threading.Event()

  def interrupt_after_a_few_steps():
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not sent.is_set():
      metrics = workdir / 'metrics.jsonl'
      if metrics.exists() and metrics.read_text().count('"train"') >= 7:
        os.kill(os.getpid(), signal.SIGINT)  # The handler runs on the main thread, inside the loop.
        sent.set()
      time.sleep(0.005)

  late = []

  def after_the_loop(*_):  # A SIGINT that arrives after the loop lands here, not in pytest.
    late.append(True)

  previous = signal.signal(signal.SIGINT, after_the_loop)
  try:
    threading.Thread(target=interrupt_after_a_few_steps, daemon=True).start()
    config = tiny_config(corpus, **OVERRIDES)
    first = training.run_training(config, str(workdir))
    assert sent.is_set() and not late and first['stopped'] == 'received SIGINT' and 7 <= first['step'] < 40
    assert signal.getsignal(signal.SIGINT) is after_the_loop  # The loop restored the handler it found.
  finally:
    signal.signal(signal.SIGINT, previous)
  assert checkpoint_lib.Checkpointer(str(workdir / 'checkpoints')).all_steps()[-1] == first['step']
  assert_same_run(training.run_training(config, str(workdir)), reference)


def test_a_second_signal_interrupts_at_once():
  with loop._StopRequest() as stop:  # pylint: disable=protected-access
    os.kill(os.getpid(), signal.SIGTERM)
    assert stop.signal_name == 'SIGTERM'
    with pytest.raises(KeyboardInterrupt, match='SIGINT after SIGTERM'):
      os.kill(os.getpid(), signal.SIGINT)
      time.sleep(1)  # The handler runs at the next bytecode boundary.


# ---------------------------------------------------------------------------------------
# Damaged checkpoints.


def _array_file(step_dir):
  """The largest array data file of a step (OCDBT keeps array bytes under .../d/)."""
  return max(glob.glob(os.path.join(step_dir, 'state', '**', 'd', '*'), recursive=True), key=os.path.getsize)


def truncate_array_file(step_dir):
  path = _array_file(step_dir)
  os.truncate(path, os.path.getsize(path) // 2)


def flip_one_byte(step_dir):
  """Orbax restores this without complaint, with wrong values; only the saved sha256 sees it."""
  path = _array_file(step_dir)
  data = bytearray(open(path, 'rb').read())
  data[len(data) // 2] ^= 0x01
  open(path, 'wb').write(bytes(data))


def delete_state_manifest(step_dir):
  os.remove(os.path.join(step_dir, 'state', 'manifest.ocdbt'))


def delete_meta(step_dir):
  shutil.rmtree(os.path.join(step_dir, 'meta'))


def empty_step_dir(step_dir):
  shutil.rmtree(step_dir)
  os.mkdir(step_dir)


def corrupt_meta_json(step_dir):
  with open(os.path.join(step_dir, 'meta', 'metadata'), 'w') as f:
    f.write('{"compatibility": ')


@pytest.fixture(scope='module')
def saved_states(tmp_path_factory):
  """A checkpoint folder with steps 1, 2, 3 of a small state whose leaves differ by step."""
  folder = str(tmp_path_factory.mktemp('states') / 'checkpoints')
  state = {'w': np.arange(4000, dtype=np.float32), 'b': np.ones((3, 4), np.float32), 'n': np.int32(0)}
  checkpointer = checkpoint_lib.Checkpointer(folder, keep_latest=3)
  for step in (1, 2, 3):
    checkpointer.save(step, jax.tree.map(lambda x: x * step, state), {'step': step}, metric=0.1 * step)
  checkpointer.wait()
  checkpointer.close()
  return folder, state


@pytest.mark.parametrize('damage', [truncate_array_file, flip_one_byte, delete_state_manifest, delete_meta,
                                    corrupt_meta_json, empty_step_dir])
def test_damaged_newest_checkpoint_falls_back_and_is_kept_aside(saved_states, damage, tmp_path, caplog):
  original, state = saved_states
  folder = str(tmp_path / 'checkpoints')
  shutil.copytree(original, folder)
  damage(os.path.join(folder, '3'))
  checkpointer = checkpoint_lib.Checkpointer(folder, keep_latest=3)
  step, restored, meta = checkpointer.restore_latest(state)
  assert step == 2 and meta['step'] == 2
  np.testing.assert_array_equal(restored['w'], state['w'] * 2)
  assert 'checkpoint step 3' in caplog.text and 'trying an older one' in caplog.text
  # Moved aside, not deleted; Orbax no longer lists it, so step 3 can be saved again.
  assert os.path.isdir(os.path.join(folder, '3' + checkpoint_lib.DAMAGED_SUFFIX))
  assert checkpointer.all_steps() == [1, 2]
  checkpointer.save(3, state, {'step': 3}, metric=0.5)
  checkpointer.wait()
  assert checkpointer.restore_latest(state)[0] == 3
  checkpointer.close()


def test_leftover_of_a_killed_save_is_ignored_and_removed(saved_states, tmp_path):
  original, state = saved_states
  folder = str(tmp_path / 'checkpoints')
  shutil.copytree(original, folder)
  shutil.copytree(os.path.join(folder, '3'), os.path.join(folder, '4.orbax-checkpoint-tmp'))  # Looks complete.
  checkpointer = checkpoint_lib.Checkpointer(folder, keep_latest=3)
  assert checkpointer.restore_latest(state)[0] == 3
  checkpointer.save(4, state, {'step': 4}, metric=0.5)  # The same step again: no collision.
  checkpointer.wait()
  assert checkpointer.all_steps() == [2, 3, 4] and not glob.glob(os.path.join(folder, '*tmp*'))
  checkpointer.close()


def test_all_checkpoints_damaged_is_an_error_that_deletes_nothing(saved_states, tmp_path):
  original, state = saved_states
  folder = str(tmp_path / 'checkpoints')
  shutil.copytree(original, folder)
  for step in (1, 2, 3):
    truncate_array_file(os.path.join(folder, str(step)))
  before = sorted(os.listdir(folder))
  checkpointer = checkpoint_lib.Checkpointer(folder, keep_latest=3)
  with pytest.raises(checkpoint_lib.CheckpointError, match=r'none of the checkpoints \[1, 2, 3\] can be restored'):
    checkpointer.restore_latest(state)
  assert sorted(os.listdir(folder)) == before


def test_damaged_best_checkpoint_falls_back_to_the_next_best(tmp_path, caplog):
  state = {'w': np.arange(4000, dtype=np.float32), 'b': np.ones((3, 4), np.float32)}
  folder = str(tmp_path / 'checkpoints')
  checkpointer = checkpoint_lib.Checkpointer(folder, keep_latest=1, keep_best=2)
  for step, accuracy in ((1, 0.1), (2, 0.3), (3, 0.5)):
    scaled = jax.tree.map(lambda x, s=step: x * s, state)
    checkpointer.save(step, scaled, {'step': step}, metric=accuracy, best=scaled)
  checkpointer.wait()
  checkpointer.close()
  best = str(tmp_path / 'best')
  assert sorted(os.listdir(best)) == ['2', '3']  # Parameters of the 2 best only.
  path = max(glob.glob(os.path.join(best, '3', 'params', '**', 'd', '*'), recursive=True), key=os.path.getsize)
  data = bytearray(open(path, 'rb').read())
  data[len(data) // 2] ^= 0x01
  open(path, 'wb').write(bytes(data))
  checkpointer = checkpoint_lib.Checkpointer(folder, keep_latest=1, keep_best=2)
  step, restored = checkpointer.restore_best(state)
  assert step == 2 and 'best checkpoint step 3' in caplog.text
  np.testing.assert_array_equal(restored['w'], state['w'] * 2)


def test_a_lower_is_better_metric_keeps_the_lowest(tmp_path):
  state = {'w': np.zeros(3, np.float32)}
  checkpointer = checkpoint_lib.Checkpointer(str(tmp_path / 'checkpoints'), keep_best=2, metric='dev_perplexity',
                                             higher_is_better=False)
  for step, perplexity in ((1, 9.0), (2, 3.0), (3, 5.0), (4, 4.0)):
    checkpointer.save(step, state, {}, metric=perplexity, best=state)
  checkpointer.wait()
  assert checkpointer.ranked_best_steps() == [2, 4]
  checkpointer.close()


def test_training_resumes_past_a_damaged_checkpoint_bit_exactly(corpus, reference, tmp_path):
  config = tiny_config(corpus, **OVERRIDES)
  workdir = tmp_path / 'run'
  assert training.run_training(config, str(workdir), stop_after_steps=15)['step'] == 15
  flip_one_byte(str(workdir / 'checkpoints' / '15'))
  assert_same_run(training.run_training(config, str(workdir)), reference)
  assert (workdir / 'checkpoints' / '15.damaged').is_dir()


# ---------------------------------------------------------------------------------------
# NaN/Inf in the loss or gradients: a data row with a NaN weight at one step.


@pytest.fixture
def poison_step(monkeypatch):
  """Makes batch index `poison_step.at` carry a NaN example weight (so loss and gradients are NaN)."""
  original = batching.TrainBatches.batch

  def batch(self, step):
    b = original(self, step)
    if step == batch.at:
      weights = np.array(b.weights, np.float32)
      weights[0] = np.nan
      b = b._replace(weights=weights)
    return b

  batch.at = None
  monkeypatch.setattr(batching.TrainBatches, 'batch', batch)
  return batch


def fresh_state(config, workdir):
  """A restore target: the config's initial TrainState."""
  return experiment.build_experiment(config, str(workdir)).init_state()


def test_nan_stops_naming_the_step_and_keeps_the_last_checkpoint(corpus, reference, tmp_path, poison_step):
  config = tiny_config(corpus, **OVERRIDES)
  workdir = tmp_path / 'run'
  poison_step.at = 12  # The 13th step; checkpoints at 5 and 10 come before it.
  with pytest.raises(loop.TrainingError, match=r'step 13: the loss or the gradients are NaN or Inf.*'
                                               r'the checkpoint at step 10 .* is intact'):
    training.run_training(config, str(workdir))
  checkpointer = checkpoint_lib.Checkpointer(str(workdir / 'checkpoints'))
  assert checkpointer.all_steps() == [5, 10]
  step, state, _ = checkpointer.restore_latest(fresh_state(config, workdir))
  assert step == 10 and not checkpoint_lib.inspect_state(state)[1]  # Restores (sha256 checked), all finite.
  poison_step.at = None  # The data is fixed: the rerun resumes at 10 and matches.
  assert_same_run(training.run_training(config, str(workdir)), reference)


def test_nan_policy_skip_drops_the_step_and_goes_on(corpus, reference, tmp_path, poison_step, caplog):
  config = tiny_config(corpus, **OVERRIDES, **{'train.nan_policy': 'skip'})
  poison_step.at = 12
  results = training.run_training(config, str(tmp_path / 'run'))
  assert results['step'] == 40 and results['train']['skipped_steps'] == 1
  assert 'skipped 1 step(s) with a NaN or Inf loss or gradients up to step 13 (the first: step 13)' in caplog.text
  assert results['params_fingerprint'] != reference['params_fingerprint']  # One update fewer.
  assert all(np.isfinite(v) for v in results['params_l2'].values())


def test_inspect_state_finds_nonfinite_leaves():
  digest, bad = checkpoint_lib.inspect_state({'a': np.ones(3), 'b': np.array([1.0, np.inf]), 'c': np.arange(2)})
  assert bad == ["['b']"] and len(digest) == 64
  assert checkpoint_lib.inspect_state({'a': np.ones(3)})[0] != checkpoint_lib.inspect_state({'a': np.ones(4)})[0]


# ---------------------------------------------------------------------------------------
# A full disk: a real one, a small tmpfs in a private mount namespace.


def _can_mount_tmpfs() -> bool:
  if not shutil.which('unshare'):
    return False
  probe = subprocess.run(['unshare', '-rm', 'sh', '-c', 'mount -t tmpfs -o size=64k tmpfs /mnt'],
                         capture_output=True)
  return probe.returncode == 0


@pytest.mark.skipif(not _can_mount_tmpfs(), reason='needs unshare -rm and tmpfs mounts (user namespaces)')
def test_disk_full_during_a_save_keeps_the_previous_checkpoint(corpus, tmp_path):
  # Checkpoints of a few hundred KB (embeddings 120 x 512, with Adam's two moments) on a
  # 1.3 MB disk: a save or two fit, then one fails.
  config = tiny_config(corpus, **{**OVERRIDES, 'model.embed_dim': 512, 'train.steps': 20, 'train.log_every_steps': 5})
  mount = tmp_path / 'disk'
  mount.mkdir()
  out = tmp_path / 'out'
  out.mkdir()
  train = shlex.join([sys.executable, '-m', 'experiments.train', *config_args(config), f'--workdir={mount}/run'])
  script = f"""
    mount -t tmpfs -o size=1300k tmpfs {mount} || exit 99
    {train} 2> {out}/full.log; echo $? > {out}/full.rc
    ls {mount}/run/checkpoints > {out}/after_full.ls
    mount -o remount,size=64m {mount}
    {train} 2> {out}/again.log; echo $? > {out}/again.rc
    ls {mount}/run/checkpoints > {out}/after_again.ls
    cp {mount}/run/metrics.jsonl {mount}/run/results.json {out}/ || true
  """
  subprocess.run(['unshare', '-rm', 'sh', '-c', script], cwd=ROOT, timeout=400, check=True)
  full_log = (out / 'full.log').read_text()
  assert (out / 'full.rc').read_text().strip() == '2', full_log[-3000:]
  errors = [line for line in full_log.splitlines() if line.startswith('error: ')]
  assert len(errors) == 1 and 'Traceback' not in full_log, full_log[-3000:]
  match = re.search(r'saving the checkpoint of step (\d+) failed \(no space left on device\); the checkpoints at '
                    r'steps \[([\d, ]+)\] are intact; free some space .* resume from step (\d+)', errors[0])
  assert match, errors[0]
  intact = sorted(int(step) for step in match.group(2).split(', '))
  # Nothing but the intact steps: no half-written one left behind.
  assert sorted(int(name) for name in (out / 'after_full.ls').read_text().split()) == intact
  again_log = (out / 'again.log').read_text()
  assert (out / 'again.rc').read_text().strip() == '0', again_log[-3000:]
  records = [json.loads(line) for line in (out / 'metrics.jsonl').read_text().splitlines()]
  starts = [r['start_step'] for r in records if r['kind'] == 'start']
  assert starts[-1] == int(match.group(3)), starts  # The rerun resumed where the error said.
  results = json.loads((out / 'results.json').read_text())
  assert results['step'] == 20 and [r['step'] for r in records if r['kind'] == 'test'] == [20], records[-3:]


def test_a_sigterm_while_the_last_best_save_is_in_flight_loses_nothing(tmp_path, monkeypatch):
  """The final step's best parameters are written after its state; a SIGTERM arriving in
  between used to kill that save, and the resumed run tested an older best."""
  from tests.test_train import tiny_config, write_corpus  # pylint: disable=g-import-not-at-top
  data = write_corpus(tmp_path / 'data')
  config = tiny_config(data, **{'data.max_len': 16, 'data.smallest_bucket': 16, 'train.steps': 10,
                                'checkpoint.every_steps': 5})
  straight = training.run_training(config, str(tmp_path / 'straight'))
  real_wait = checkpoint_lib.Checkpointer.wait
  sent = []

  def wait_after_a_sigterm(self):
    if self._pending_step == 10 and not sent:  # pylint: disable=protected-access
      sent.append(True)
      os.kill(os.getpid(), signal.SIGTERM)
    return real_wait(self)
  monkeypatch.setattr(checkpoint_lib.Checkpointer, 'wait', wait_after_a_sigterm)
  workdir = str(tmp_path / 'signalled')
  first = training.run_training(config, workdir)
  assert sent and first['step'] == 10 and 'SIGTERM' in first['stopped']
  resumed = training.run_training(config, workdir)
  assert resumed['best_step'] == straight['best_step']
  assert resumed['test'] == straight['test']
