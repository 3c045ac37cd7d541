"""The training loop: steps, periodic log / eval / checkpoint, resume, final test.

It knows models only through the driver's steps and data only through a step->batch
function, so pretraining, finetuning and compression plug in as other loss functions
and other states, not as other loops.
"""
import dataclasses
import hashlib
import json
import logging
import os
import queue
import signal
import threading
import time
from typing import Callable, Iterator, Optional, Sequence

import jax
import numpy as np

from bigjax import metrics as metrics_lib
from bigjax.checkpoint import Checkpointer
from bigjax.errors import BigjaxError, CheckpointError
from bigjax.train.parallel import Driver
from bigjax.types import Batch


class TrainingError(BigjaxError):
  """Training cannot go on (a non-finite loss, say)."""


@dataclasses.dataclass(frozen=True)
class Schedule:
  total_steps: int
  checkpoint_every_steps: int  # Also the eval period: each checkpoint carries its dev accuracy.
  log_every_steps: int = 50
  keep_latest: int = 2
  keep_best: int = 1


def params_fingerprint(params) -> str:
  """sha256 of every parameter's name, dtype, shape and bytes: equal runs, equal hashes."""
  digest = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(jax.device_get(params))[0]:
    leaf = np.ascontiguousarray(leaf)
    digest.update(f'{jax.tree_util.keystr(path)}:{leaf.dtype}:{leaf.shape}'.encode())
    digest.update(leaf.tobytes())
  return digest.hexdigest()[:16]


def prefetch(batches: Iterator[Batch], size: int = 4) -> Iterator[Batch]:
  """Builds batches on a background thread so the device never waits for numpy padding."""
  buffer: queue.Queue = queue.Queue(maxsize=size)
  done = object()

  def produce():
    try:
      for b in batches:
        buffer.put(b)
    except BaseException as e:  # Re-raised in the consumer, where it can be seen.
      buffer.put(e)
    buffer.put(done)

  threading.Thread(target=produce, daemon=True).start()
  while (item := buffer.get()) is not done:
    if isinstance(item, BaseException):
      raise item
    yield item


class _StopRequest:
  """SIGTERM/SIGINT set a flag; the loop saves at the next step boundary and stops."""

  def __init__(self):
    self.signal_name: Optional[str] = None
    self._previous = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    self.signal_name = signal.Signals(signum).name

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def evaluate(driver: Driver, device_state, batches: Sequence[Batch]) -> dict:
  totals = None
  for batch in batches:
    sums = driver.eval_step(device_state, batch)
    totals = sums if totals is None else jax.tree.map(np.add, totals, sums)
  totals = jax.device_get(totals)
  report = metrics_lib.classification_report(totals['confusion'])
  report['loss'] = float(totals['loss'] / max(totals['examples'], 1))
  return report


def train_and_evaluate(*, driver: Driver, init_state: Callable, batch_at: Callable[[int], Batch],
                       dev: Sequence[Batch], test: Sequence[Batch], schedule: Schedule, workdir: str,
                       meta: dict, writer: metrics_lib.MetricWriter,
                       stop_after_steps: Optional[int] = None) -> dict:
  """Trains to schedule.total_steps, resuming from workdir's checkpoints, then tests the best.

  init_state() -> fresh host TrainState (also the restore target).
  batch_at(step) -> the global batch of that step (a pure function of the step).
  meta: JSON facts stored with each checkpoint; on resume, its 'compatibility' entry must match.
  stop_after_steps: stop (after a checkpoint) once this many steps ran in this call; for tests.
  Returns the results dict, also written to workdir/results.json.
  """
  checkpointer = Checkpointer(os.path.join(workdir, 'checkpoints'), keep_latest=schedule.keep_latest,
                              keep_best=schedule.keep_best)
  fresh = init_state()

  def check_compatible(step, saved_meta):
    if saved_meta.get('compatibility') != meta.get('compatibility'):
      raise CheckpointError(
          f'{checkpointer.directory}: the checkpoint at step {step} was written by an incompatible run '
          f'(saved {saved_meta.get("compatibility")}, this run {meta.get("compatibility")}); use another '
          '--workdir, or the config that wrote it')

  restored = checkpointer.restore_latest(fresh, check_compatible)
  if restored is None:
    start_step, state = 0, fresh
    logging.info('no checkpoint in %s: starting from scratch', workdir)
  else:
    start_step, state, _ = restored
    logging.info('resuming from step %d of %s', start_step, checkpointer.directory)
  device_state = driver.put_state(state)
  del state, fresh

  def save(step: int, device_state) -> dict:
    dev_report = evaluate(driver, device_state, dev)
    writer.write(step, 'dev', {k: dev_report[k] for k in ('accuracy', 'macro_f1', 'loss')},
                 {'confusion': dev_report['confusion']})
    checkpointer.save(step, driver.get_state(device_state), meta, dev_accuracy=dev_report['accuracy'])
    logging.info('step %d: dev accuracy %.4f, macro-F1 %.4f; checkpoint saved', step, dev_report['accuracy'],
                 dev_report['macro_f1'])
    return dev_report

  steady = {'seconds': 0.0, 'examples': 0.0, 'tokens': 0.0}
  last_train = {}
  shapes_seen = set()
  window_sums, window_start, window_compiled = None, time.perf_counter(), False
  end_step = schedule.total_steps
  if stop_after_steps is not None:
    end_step = min(end_step, start_step + stop_after_steps)
  stopped_by = None
  step = start_step
  with _StopRequest() as stop:
    for batch in prefetch(map(batch_at, range(start_step, end_step))):
      shape = np.shape(batch.token_ids)
      if shape not in shapes_seen:  # A new shape compiles: keep its window out of steady state.
        shapes_seen.add(shape)
        window_compiled = True
      device_state, sums = driver.train_step(device_state, batch)
      window_sums = sums if window_sums is None else jax.tree.map(lambda a, b: a + b, window_sums, sums)
      step += 1
      boundary = step % schedule.checkpoint_every_steps == 0 or step == schedule.total_steps
      if step % schedule.log_every_steps == 0 or boundary or stop.signal_name or step == end_step:
        host = jax.device_get(window_sums)  # The only host sync between evaluations.
        seconds = time.perf_counter() - window_start
        loss = host['loss'] / max(host['examples'], 1)
        if not np.isfinite(loss):
          raise TrainingError(f'non-finite training loss ({loss}) in the steps up to {step}; the last '
                              f'checkpoint in {checkpointer.directory} is intact. Lower the learning rate '
                              'or set optim.clip_norm.')
        if not window_compiled:
          steady = {'seconds': steady['seconds'] + seconds,
                    'examples': steady['examples'] + float(host['examples']),
                    'tokens': steady['tokens'] + float(host['tokens'])}
        last_train = {'loss': float(loss), 'accuracy': float(host['correct'] / max(host['examples'], 1)),
                      'examples_per_s': float(host['examples'] / seconds),
                      'tokens_per_s': float(host['tokens'] / seconds),
                      'grad_norm': float(host['grad_norm_sum'] / host['steps'])}
        eta = (schedule.total_steps - step) * seconds / host['steps']
        logging.info('step %d/%d  loss %.4f  acc %.3f  %.0f examples/s  %.0f tokens/s  ETA %s%s', step,
                     schedule.total_steps, loss, last_train['accuracy'], last_train['examples_per_s'],
                     last_train['tokens_per_s'], _duration(eta), '  (compiling)' if window_compiled else '')
        writer.write(step, 'train', last_train)
        if boundary or stop.signal_name or step == end_step:
          save(step, device_state)
        window_sums, window_start, window_compiled = None, time.perf_counter(), False
      if stop.signal_name:
        stopped_by = stop.signal_name
        break
  checkpointer.wait()
  if stopped_by or step < schedule.total_steps:
    checkpointer.close()
    reason = f'received {stopped_by}' if stopped_by else f'stopped after {step - start_step} steps as asked'
    logging.info('%s: checkpoint at step %d saved; rerun the same command to resume', reason, step)
    return {'step': step, 'stopped': reason}

  best_step = checkpointer.best_step()
  best_state, _ = checkpointer.restore(best_step, driver.get_state(device_state))
  best_device_state = driver.put_state(best_state)
  dev_report, test_report = evaluate(driver, best_device_state, dev), evaluate(driver, best_device_state, test)
  final_params = driver.get_state(device_state).params
  checkpointer.close()
  results = {
      'step': step,
      'best_step': best_step,
      'dev': dev_report,
      'test': test_report,
      'train': {
          'loss': last_train.get('loss'),
          'examples_per_s': steady['examples'] / steady['seconds'] if steady['seconds'] else None,
          'tokens_per_s': steady['tokens'] / steady['seconds'] if steady['seconds'] else None,
          'steady_state_seconds': steady['seconds'],
          'compiled_shapes': len(shapes_seen),
      },
      'params_fingerprint': params_fingerprint(final_params),
      # Per-parameter L2 norms: compare runs that should agree to a tolerance, not bitwise.
      'params_l2': {jax.tree_util.keystr(path): float(np.linalg.norm(np.asarray(leaf)))
                    for path, leaf in jax.tree_util.tree_flatten_with_path(jax.device_get(final_params))[0]},
  }
  writer.write(step, 'test', {k: test_report[k] for k in ('accuracy', 'macro_f1', 'loss')},
               {'best_step': best_step, 'confusion': test_report['confusion']})
  logging.info('best dev step %d: dev accuracy %.4f, test accuracy %.4f (macro-F1 %.4f)', best_step,
               dev_report['accuracy'], test_report['accuracy'], test_report['macro_f1'])
  if writer.enabled:
    _write_json(os.path.join(workdir, 'results.json'), results)
  return results


def _write_json(path: str, obj) -> None:
  tmp = path + '.tmp'
  with open(tmp, 'w', encoding='utf-8') as f:
    json.dump(obj, f, indent=2)
  os.replace(tmp, path)


def _duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  return f'{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'
