"""Kill trial: SIGKILL a training run at random moments, resume each time, compare with an uninterrupted run.

  python -m benchmarks.kill_trial --config=experiments/configs/mlp_sst2.py --set=train.epochs=3 \
      --set=train.log_every_steps=10 --kills=10 --workdir=/tmp/kill_trial

Runs `python -m experiments.train` as a user would: once uninterrupted (the reference),
then in a second workdir N times killed (SIGKILL, no warning) at a random step of what is
left, then to the end. Exact resume means the same params_fingerprint, best step and test
accuracy. Prints a report; --json_out also writes it.

Each run is followed through WORKDIR/metrics.jsonl, never its log: the attempt's 'start'
record says where it resumed from (and that training started); its 'train' and 'dev'
records say how far it got. A kill comes once a 'train' or 'dev' record of at least the
target step is written, so write them often (--set=train.log_every_steps=10). stderr is
kept only to show when a run fails.
"""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time

from absl import app
from absl import flags

from benchmarks.peers import MetricsFollower

_CONFIG = flags.DEFINE_string('config', None, 'Config file, as for experiments.train.')
_SET = flags.DEFINE_multi_string('set', [], 'KEY=VALUE: passed on as --config.KEY=VALUE.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Holds reference/ and killed/ (emptied first).')
_KILLS = flags.DEFINE_integer('kills', 10, 'SIGKILLs before the run may finish.')
_SEED = flags.DEFINE_integer('seed', None, 'Seed of the kill delays (default: random, and reported).')
_JSON_OUT = flags.DEFINE_string('json_out', '', 'Also write the report here.')

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _Run:
  """The entry point in the background, followed through its workdir's metrics.jsonl.

  A thread polls the file for the records of this attempt (written after it was launched:
  a resume keeps earlier attempts' records); another collects stderr, to show on failure
  (the pipe must not fill up).
  """

  def __init__(self, workdir: str):
    args = [f'--config={_CONFIG.value}', f'--workdir={workdir}'] + [f'--config.{kv}' for kv in _SET.value]
    self.start = time.monotonic()
    metrics = MetricsFollower(os.path.join(workdir, 'metrics.jsonl'), since=time.time())
    self.proc = subprocess.Popen([sys.executable, '-m', 'experiments.train', *args], cwd=_ROOT, text=True,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    self.log = []
    self.training = threading.Event()  # Set at this attempt's 'start' record (or when the run ends without one).
    self.resumed_from = 0  # The 'start' record's start_step: 0 from scratch.
    self.logged_step = 0  # The newest step of this attempt's 'train' and 'dev' records.
    self._changed = threading.Condition()
    self._ended = False  # Set once the run ended and its last records were taken.
    self._threads = [threading.Thread(target=self._read_log, daemon=True),
                     threading.Thread(target=self._follow, args=(metrics,), daemon=True)]
    for thread in self._threads:
      thread.start()

  def _read_log(self):
    for line in self.proc.stderr:
      self.log.append(line)

  def _take(self, records: list[dict]) -> None:
    with self._changed:
      for record in records:
        if record.get('kind') == 'start':
          self.resumed_from = int(record['start_step'])
          self.logged_step = max(self.logged_step, self.resumed_from)
          self.training.set()
        elif record.get('kind') in ('train', 'dev') and self.training.is_set():
          self.logged_step = max(self.logged_step, int(record['step']))
      self._changed.notify_all()

  def _follow(self, metrics: MetricsFollower):
    while self.proc.poll() is None:
      self._take(metrics.poll())
      time.sleep(0.005)
    self._take(metrics.poll())  # What it wrote before it ended.
    with self._changed:
      self.training.set()
      self._ended = True
      self._changed.notify_all()

  def wait_for_step(self, step: int) -> None:
    """Until a 'train' or 'dev' record of at least `step` is written, or the run ends."""
    with self._changed:
      self._changed.wait_for(lambda: self.logged_step >= step or self._ended)

  def wait(self) -> int:
    code = self.proc.wait()
    for thread in self._threads:  # The last records and log lines.
      thread.join(timeout=10)
    return code


def _results(workdir: str) -> dict:
  with open(os.path.join(workdir, 'results.json'), encoding='utf-8') as f:
    return json.load(f)


def main(argv):
  del argv
  seed = _SEED.value if _SEED.value is not None else random.randrange(10**6)
  rng = random.Random(seed)
  shutil.rmtree(_WORKDIR.value, ignore_errors=True)
  reference_dir, killed_dir = os.path.join(_WORKDIR.value, 'reference'), os.path.join(_WORKDIR.value, 'killed')

  reference = _Run(reference_dir)
  reference.training.wait()
  training_started = time.monotonic()
  if reference.wait() != 0:
    sys.exit('the reference run failed:\n' + ''.join(reference.log[-20:]))
  train_seconds = time.monotonic() - training_started
  expected = _results(reference_dir)
  total_steps = expected['step']
  print(f'reference: {total_steps} steps, {train_seconds:.1f} s of training (after startup), fingerprint '
        f'{expected["params_fingerprint"]}, best step {expected["best_step"]}, test accuracy '
        f'{expected["test"]["accuracy"]:.4f}', flush=True)

  kills = []
  while len(kills) < _KILLS.value:
    run = _Run(killed_dir)
    run.training.wait()
    # A random step of what is left (the final evaluation included), then a random bit
    # more, so that some kills land in the middle of an asynchronous save.
    # A run that resumed from the last step has only its final evaluation left: it is
    # killed at once, since that evaluation could end within a random delay.
    only_evaluation_left = run.resumed_from >= total_steps
    target = total_steps if only_evaluation_left else rng.randint(run.resumed_from + 1, total_steps)
    run.wait_for_step(target)
    delay = 0.0 if only_evaluation_left else rng.uniform(0, 0.3)
    time.sleep(delay)
    if run.proc.poll() is not None:
      sys.exit(f'run {len(kills) + 1} ended before its kill (target step {target}):\n' + ''.join(run.log[-10:]))
    run.proc.send_signal(signal.SIGKILL)
    run.wait()
    kills.append({'resumed_from': run.resumed_from, 'target_step': target, 'extra_delay_s': round(delay, 2),
                  'last_logged_step': run.logged_step})
    print(f'kill {len(kills)}: resumed from step {run.resumed_from}, killed {delay:.2f} s after step {target} '
          f'was logged; last logged step {run.logged_step}', flush=True)

  final = _Run(killed_dir)
  if final.wait() != 0:
    sys.exit('the final run failed:\n' + ''.join(final.log[-20:]))
  got = _results(killed_dir)
  checks = {'params_fingerprint': (got['params_fingerprint'], expected['params_fingerprint']),
            'best_step': (got['best_step'], expected['best_step']),
            'test_accuracy': (got['test']['accuracy'], expected['test']['accuracy'])}
  same = all(a == b for a, b in checks.values())
  print(f'final run: resumed from step {final.resumed_from}; ' + '; '.join(
      f'{name} {a} vs {b}' for name, (a, b) in checks.items()))
  print('SAME as the uninterrupted run' if same else 'DIFFERENT from the uninterrupted run')
  report = {'config': _CONFIG.value, 'set': _SET.value, 'seed': seed, 'kills': kills,
            'final_resumed_from': final.resumed_from, 'checks': checks, 'same': same,
            'reference_train_seconds': round(train_seconds, 1)}
  if _JSON_OUT.value:
    with open(_JSON_OUT.value, 'w', encoding='utf-8') as f:
      json.dump(report, f, indent=2)
  sys.exit(0 if same else 1)


if __name__ == '__main__':
  flags.mark_flags_as_required(['config', 'workdir'])
  app.run(main)
