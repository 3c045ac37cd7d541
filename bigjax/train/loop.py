"""The training loop: steps, periodic log / eval / checkpoint, resume, final test.

It knows models only through the driver's steps and data only through a step->batch
function, so pretraining, finetuning and compression plug in as other loss functions
and other states, not as other loops.

Reliability (docs/reliability.md): SIGTERM/SIGINT save at the next step boundary and
return; a run killed at any moment resumes bit-exactly from its newest complete
checkpoint, because batch(step) and the dropout key are pure functions of the step; a
checkpoint is never written from NaN/Inf parameters.
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
import jax.numpy as jnp
import numpy as np

from bigjax import checkpoint as checkpoint_lib
from bigjax import metrics as metrics_lib
from bigjax.checkpoint import Checkpointer
from bigjax.errors import BigjaxError, CheckpointError, ConfigError
from bigjax.train.parallel import Driver
from bigjax.types import Batch

# What a step whose loss or gradients are NaN/Inf does (the step itself never applies it):
# 'stop' the run with an error naming it, or 'skip' it with a warning and go on.
NAN_POLICIES = ('stop', 'skip')


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
  """SIGTERM/SIGINT set a flag; the loop saves at the next step boundary and stops.

  A second signal raises KeyboardInterrupt at once: the way out when a save hangs.
  """

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
    name = signal.Signals(signum).name
    if self.signal_name is not None:
      raise KeyboardInterrupt(f'{name} after {self.signal_name}')
    self.signal_name = name  # Logging here could deadlock: the handler may interrupt a log call.

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


def _accumulate(total: Optional[dict], sums: dict) -> dict:
  """Adds a step's sums to the log window's, on device; 'first_*' entries keep the minimum."""
  if total is None:
    return sums
  return {k: jnp.minimum(total[k], v) if k.startswith('first_') else total[k] + v for k, v in sums.items()}


def _differences(saved: dict, ours: dict, prefix: str = '') -> list[str]:
  """'key: saved X, this run Y' for each entry that differs, nested dicts flattened."""
  out = []
  for key in sorted(set(saved) | set(ours), key=str):
    a, b = saved.get(key), ours.get(key)
    if isinstance(a, dict) and isinstance(b, dict):
      out += _differences(a, b, f'{prefix}{key}.')
    elif a != b:
      out.append(f'{prefix}{key}: saved {a!r}, this run {b!r}')
  return out


def train_and_evaluate(*, driver: Driver, init_state: Callable, batch_at: Callable[[int], Batch],
                       dev: Sequence[Batch], test: Sequence[Batch], schedule: Schedule, workdir: str,
                       meta: dict, writer: metrics_lib.MetricWriter,
                       stop_after_steps: Optional[int] = None, nan_policy: str = 'stop',
                       test_at_checkpoints: bool = False, on_start: Optional[Callable[[], None]] = None) -> dict:
  """Trains to schedule.total_steps, resuming from workdir's checkpoints, then tests the best.

  init_state() -> fresh host TrainState (also the restore target).
  batch_at(step) -> the global batch of that step (a pure function of the step).
  meta: JSON facts stored with each checkpoint; on resume, its 'compatibility' entry must match.
  stop_after_steps: stop (after a checkpoint) once this many steps ran in this call; for tests.
  nan_policy: one of NAN_POLICIES.
  test_at_checkpoints: also evaluate test at each checkpoint, for a test-accuracy curve over
    time (time-to-accuracy races). Model selection still uses dev only.
  on_start(): called once the workdir's checkpoints are known to belong to this run, so
    that a refused run writes nothing over the files of the run it refused.
  Returns the results dict, also written to workdir/results.json.
  """
  if nan_policy not in NAN_POLICIES:
    raise ConfigError(f'train.nan_policy={nan_policy!r} is unknown; use one of {NAN_POLICIES}')
  checkpointer = Checkpointer(os.path.join(workdir, 'checkpoints'), keep_latest=schedule.keep_latest,
                              keep_best=schedule.keep_best)
  fresh = init_state()

  def check_compatible(step, saved_meta):
    saved, ours = saved_meta.get('compatibility') or {}, meta.get('compatibility') or {}
    if saved != ours:
      raise CheckpointError(
          f'{checkpointer.directory}: the checkpoint at step {step} was written by an incompatible run '
          f'({"; ".join(_differences(saved, ours))}); use another --workdir, or the config that wrote it')

  restored = checkpointer.restore_latest(fresh, check_compatible)
  if restored is None:
    start_step, state = 0, fresh
    logging.info('no checkpoint in %s: starting at step 0', workdir)
  else:
    start_step, state, _ = restored
    logging.info('resuming from step %d of %s', start_step, checkpointer.directory)
  if on_start is not None:
    on_start()
  device_state = driver.put_state(state)
  del state, fresh

  def intact() -> str:
    """Where the run can resume from, for error messages."""
    checkpointer.wait_quietly()
    steps = checkpointer.all_steps()
    if not steps:
      return f'no checkpoint was saved in {checkpointer.directory}'
    return f'the checkpoint at step {steps[-1]} in {checkpointer.directory} is intact'

  def save(step: int, device_state, evaluate_dev: bool = True) -> None:
    """evaluate_dev=False for stop requests: the exit must be quick, and the steps that
    compete for best-dev must not depend on when a run was interrupted."""
    state = driver.get_state(device_state)
    digest, nonfinite = checkpoint_lib.inspect_state(state)
    if nonfinite:  # Finite loss and gradients can still overflow the parameters.
      raise TrainingError(f'step {step}: {", ".join(nonfinite[:3])} hold NaN or Inf, so no checkpoint is saved '
                          f'from them; {intact()}. Lower optim.learning_rate or set optim.clip_norm.')
    dev_accuracy, curve = None, ''
    if evaluate_dev:
      dev_report = evaluate(driver, device_state, dev)
      dev_accuracy = dev_report['accuracy']
      writer.write(step, 'dev', {k: dev_report[k] for k in ('accuracy', 'macro_f1', 'loss')},
                   {'confusion': dev_report['confusion']})
      if test_at_checkpoints:
        test_report = evaluate(driver, device_state, test)
        writer.write(step, 'test_curve', {k: test_report[k] for k in ('accuracy', 'macro_f1', 'loss')})
        curve = f', test accuracy {test_report["accuracy"]:.4f} (curve only)'
    checkpointer.save(step, state, meta, dev_accuracy=dev_accuracy, digest=digest)
    if evaluate_dev:
      logging.info('step %d: dev accuracy %.4f, macro-F1 %.4f%s; checkpoint saved', step, dev_report['accuracy'],
                   dev_report['macro_f1'], curve)
    else:
      logging.info('step %d: checkpoint saved (no dev evaluation on a stop)', step)

  steady = {'seconds': 0.0, 'examples': 0.0, 'tokens': 0.0}
  last_train = {}
  shapes_seen = set()
  window_sums, window_start, window_compiled = None, time.perf_counter(), False
  end_step = schedule.total_steps
  if stop_after_steps is not None:
    end_step = min(end_step, start_step + stop_after_steps)
  stopped_by = None
  skipped_steps = 0
  step = start_step
  try:
    with _StopRequest() as stop:
      for batch in prefetch(map(batch_at, range(start_step, end_step))):
        shape = np.shape(batch.token_ids)
        if shape not in shapes_seen:  # A new shape compiles: keep its window out of steady state.
          shapes_seen.add(shape)
          window_compiled = True
        device_state, sums = driver.train_step(device_state, batch)
        window_sums = _accumulate(window_sums, sums)
        step += 1
        boundary = step % schedule.checkpoint_every_steps == 0 or step == schedule.total_steps
        if step % schedule.log_every_steps == 0 or boundary or stop.signal_name or step == end_step:
          host = jax.device_get(window_sums)  # The only host sync between evaluations.
          seconds = time.perf_counter() - window_start
          # Before any save: a NaN step must not reach a checkpoint (its update was not applied).
          bad = int(host.get('nonfinite_steps', 0))
          if bad and nan_policy == 'stop':
            raise TrainingError(
                f'step {int(host["first_nonfinite_step"])}: the loss or the gradients are NaN or Inf, so the run '
                f'stops (train.nan_policy=stop); {intact()}. Lower optim.learning_rate, set optim.clip_norm, or '
                'set train.nan_policy=skip to drop such steps.')
          if bad:
            skipped_steps += bad
            logging.warning('skipped %d step(s) with a NaN or Inf loss or gradients up to step %d (the first: '
                            'step %d); their updates were not applied', bad, step, int(host['first_nonfinite_step']))
          loss = host['loss'] / host['examples'] if host['examples'] else float('nan')
          if host['examples'] and not np.isfinite(loss):  # A step that does not count non-finite steps.
            raise TrainingError(f'non-finite training loss ({loss}) in the steps up to {step}; {intact()}. Lower '
                                'the learning rate or set optim.clip_norm.')
          if not window_compiled:
            steady = {'seconds': steady['seconds'] + seconds,
                      'examples': steady['examples'] + float(host['examples']),
                      'tokens': steady['tokens'] + float(host['tokens'])}
          last_train = {'loss': float(loss), 'accuracy': float(host['correct'] / max(host['examples'], 1)),
                        'examples_per_s': float(host['examples'] / seconds),
                        'tokens_per_s': float(host['tokens'] / seconds),
                        'grad_norm': float(host['grad_norm_sum'] / max(host['steps'] - bad, 1))}
          if bad:
            last_train['skipped_steps'] = float(bad)
          eta = (schedule.total_steps - step) * seconds / host['steps']
          logging.info('step %d/%d  loss %.4f  acc %.3f  %.0f examples/s  %.0f tokens/s  ETA %s%s', step,
                       schedule.total_steps, loss, last_train['accuracy'], last_train['examples_per_s'],
                       last_train['tokens_per_s'], _duration(eta), '  (compiling)' if window_compiled else '')
          writer.write(step, 'train', last_train)
          if boundary or stop.signal_name or step == end_step:
            save(step, device_state, evaluate_dev=boundary)
          window_sums, window_start, window_compiled = None, time.perf_counter(), False
        if stop.signal_name:
          stopped_by = stop.signal_name
          break
    checkpointer.wait()
  except Exception:  # Not KeyboardInterrupt: a second signal means "now", even if a save hangs.
    checkpointer.wait_quietly()  # A save in flight completes: the newest good checkpoint survives the error.
    raise
  if stopped_by or step < schedule.total_steps:
    checkpointer.close()
    reason = f'received {stopped_by}' if stopped_by else f'stopped after {step - start_step} steps as asked'
    logging.info('%s: checkpoint at step %d saved; rerun the same command to resume', reason, step)
    return {'step': step, 'stopped': reason}

  best_step, best_state = checkpointer.restore_best(driver.get_state(device_state))
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
          'skipped_steps': skipped_steps,  # In this invocation (train.nan_policy=skip).
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
