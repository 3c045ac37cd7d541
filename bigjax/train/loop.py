"""The training loop: steps, periodic log / eval / checkpoint, resume, final test.

It knows a model only through the driver's steps, an objective only through its task
(bigjax.tasks: what evaluation sums up, its report, the metric that picks the kept
checkpoint), and data only through a step->batch function. Language-model pretraining,
finetuning and distillation are other tasks, states and constants, not other loops.

Read top to bottom: `train_and_evaluate` restores or initializes the state
(`restore_or_init`), runs the steps with their periodic actions (`train_steps`: log,
evaluate and checkpoint), and tests the best checkpoint (`final_test`).

Reliability (docs/guides/training.md, "Reliability"): SIGTERM/SIGINT save at the next step boundary and
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
import numpy as np

from bigjax import checkpoint as checkpoint_lib
from bigjax import clock
from bigjax import metrics as metrics_lib
from bigjax.checkpoint import Checkpointer
from bigjax.errors import BigjaxError, CheckpointError, ConfigError
from bigjax.tasks import Task
from bigjax.train.parallel import Driver
from bigjax.types import Batch

# What a step whose loss or gradients are NaN/Inf does (the step itself never applies it):
# 'stop' the run with an error naming it, or 'skip' it with a warning and go on (until
# max_skipped_in_a_row steps in a row were skipped: then the run stops as with 'stop').
NAN_POLICIES = ('stop', 'skip')


class TrainingError(BigjaxError):
  """Training cannot go on (a non-finite loss, say)."""


@dataclasses.dataclass(frozen=True)
class Periods:
  """How long to train and how often to log, evaluate and checkpoint, in steps."""
  total_steps: int
  checkpoint_every_steps: int  # Also the eval period: each checkpoint carries its dev metric.
  log_every_steps: int = 50
  keep_latest: int = 2
  keep_best: int = 1
  # Checkpoints before this step are evaluated but never ranked best: a pruning run's model
  # is chosen among those at its final sparsity only.
  select_from_step: int = 0


@dataclasses.dataclass(frozen=True)
class NanPolicy:
  policy: str = 'stop'  # One of NAN_POLICIES.
  max_skipped_in_a_row: int = 10


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


def _add(trees: list) -> dict:
  """Sum of host sum-trees, in float64."""
  return jax.tree.map(lambda *xs: np.sum(np.asarray(xs, np.float64), axis=0), *trees)


def evaluate(driver: Driver, task: Task, device_state, batches: Sequence[Batch]) -> dict:
  """The task's report over every batch.

  Each batch's sums are fetched before the next is dispatched: hundreds of queued
  multi-device programs are what stalls XLA:CPU's pmap (see parallel.PmapDriver).
  """
  return task.report(_add([driver.fetch([driver.eval_step(device_state, batch)])[0] for batch in batches]))


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


def restore_or_init(checkpointer: Checkpointer, init_state: Callable, compatibility: dict):
  """(step, host state): the newest intact checkpoint of this run, or a fresh state at step 0.

  A checkpoint whose meta 'compatibility' differs from this run's is refused (the user's
  mistake, not damage to skip).
  """
  fresh = init_state()

  def check_compatible(step, saved_meta):
    saved = saved_meta.get('compatibility') or {}
    if saved != compatibility:
      raise CheckpointError(
          f'{checkpointer.directory}: the checkpoint at step {step} was written by an incompatible run '
          f'({"; ".join(_differences(saved, compatibility))}); use another --workdir, or the config that wrote it')

  restored = checkpointer.restore_latest(fresh, check_compatible)
  if restored is None:
    logging.info('no checkpoint in %s: starting at step 0', checkpointer.directory)
    return 0, fresh
  step, state, _ = restored
  logging.info('resuming from step %d of %s', step, checkpointer.directory)
  return step, state


@dataclasses.dataclass(frozen=True)
class _Run:
  """What the periodic actions and the final test share."""
  driver: Driver
  task: Task
  checkpointer: Checkpointer
  writer: metrics_lib.MetricWriter
  dev: Sequence[Batch]
  test: Sequence[Batch]
  meta: dict
  test_at_checkpoints: bool
  select_from_step: int = 0

  def intact(self) -> str:
    """Where the run can resume from, for error messages."""
    self.checkpointer.wait_quietly()
    steps = self.checkpointer.all_steps()
    if not steps:
      return f'no checkpoint was saved in {self.checkpointer.directory}'
    return f'the checkpoint at step {steps[-1]} in {self.checkpointer.directory} is intact'

  def save(self, step: int, device_state, evaluate_dev: bool = True) -> None:
    """Evaluates dev and saves. evaluate_dev=False for stop requests: the exit must be quick,
    and the steps that compete for best-dev must not depend on when a run was interrupted."""
    state = self.driver.get_state(device_state)
    digest, nonfinite = checkpoint_lib.inspect_state(state)
    if nonfinite:  # Finite loss and gradients can still overflow the parameters.
      raise TrainingError(f'step {step}: {", ".join(nonfinite[:3])} hold NaN or Inf, so no checkpoint is saved '
                          f'from them; {self.intact()}. Lower optim.learning_rate or set optim.clip_norm.')
    if not evaluate_dev:
      self.checkpointer.save(step, state, self.meta, digest=digest)
      logging.info('step %d: checkpoint saved (no dev evaluation on a stop)', step)
      return
    task, metric = self.task, self.task.selection_metric
    dev_report = evaluate(self.driver, task, device_state, self.dev)
    self.writer.write(step, 'dev', task.summary(dev_report), _extra(dev_report))
    curve = ''
    if self.test_at_checkpoints:
      test_report = evaluate(self.driver, task, device_state, self.test)
      self.writer.write(step, 'test_curve', task.summary(test_report))
      curve = f', test {metric} {test_report[metric]:.4f} (curve only)'
    ranked = step >= self.select_from_step
    self.checkpointer.save(step, state, self.meta, metric=dev_report[metric], best=state.params if ranked else None,
                           digest=digest)
    logging.info('step %d: dev %s; checkpoint saved%s', step,
                 ', '.join(f'{k} {v:.4f}' for k, v in task.summary(dev_report).items()) + curve,
                 '' if ranked else f' (not a best candidate before step {self.select_from_step})')


def _extra(report: dict) -> dict:
  """Non-scalar parts of a report (a confusion matrix) for metrics.jsonl."""
  return {k: v for k, v in report.items() if k == 'confusion'}


@dataclasses.dataclass
class _Throughput:
  """Steady-state speed: log windows that compiled nothing."""
  seconds: float = 0.0
  examples: float = 0.0
  tokens: float = 0.0
  shapes: set = dataclasses.field(default_factory=set)
  skipped_steps: int = 0
  skipped_in_a_row: int = 0
  last: dict = dataclasses.field(default_factory=dict)
  # Seconds from the process's start to its first train step's launch, and to that step's
  # return (its compilation, or its load from the persistent compilation cache, included).
  first_step_at: Optional[float] = None
  first_step_done_at: Optional[float] = None

  def per_second(self, what: str) -> Optional[float]:
    return getattr(self, what) / self.seconds if self.seconds else None


def _check_window(run: _Run, steps: list, first_step: int, nan: NanPolicy, throughput: _Throughput) -> int:
  """Raises for NaN steps as the policy says; returns how many of the window's steps were skipped."""
  skipped = 0
  for offset, sums in enumerate(steps):
    if sums['nonfinite_steps']:
      skipped += 1
      throughput.skipped_in_a_row += 1
      where = first_step + offset + 1  # The step that the update would have made.
      if nan.policy == 'stop':
        raise TrainingError(
            f'step {where}: the loss or the gradients are NaN or Inf, so the run stops (train.nan_policy=stop); '
            f'{run.intact()}. Lower optim.learning_rate, set optim.clip_norm, or set train.nan_policy=skip to '
            'drop such steps.')
      if throughput.skipped_in_a_row >= nan.max_skipped_in_a_row:
        raise TrainingError(
            f'step {where}: {throughput.skipped_in_a_row} steps in a row had a NaN or Inf loss or gradients, so '
            f'the run stops (train.max_skipped_in_a_row={nan.max_skipped_in_a_row}); {run.intact()}. Lower '
            'optim.learning_rate or set optim.clip_norm.')
    else:
      throughput.skipped_in_a_row = 0
  if skipped:
    first_bad = first_step + 1 + next(i for i, s in enumerate(steps) if s['nonfinite_steps'])
    logging.warning('skipped %d step(s) with a NaN or Inf loss or gradients up to step %d (the first: step %d); '
                    'their updates were not applied', skipped, first_step + len(steps), first_bad)
  return skipped


def train_steps(run: _Run, device_state, batch_at: Callable[[int], Batch], *, start_step: int, end_step: int,
                periods: Periods, nan: NanPolicy, constants=None):
  """Steps from start_step to end_step with the periodic actions: a log line (and metrics
  record) every log_every_steps, dev evaluation and a checkpoint every
  checkpoint_every_steps, and a checkpoint at the end or on a stop request.

  Returns (device_state, step, the stop signal's name or None, throughput).
  """
  throughput = _Throughput()
  window, window_start, window_compiled = [], time.perf_counter(), False
  step = start_step
  with _StopRequest() as stop:
    for batch in prefetch(map(batch_at, range(start_step, end_step))):
      shape = np.shape(batch.token_ids)
      if shape not in throughput.shapes:  # A new shape compiles: keep its window out of steady state.
        throughput.shapes.add(shape)
        window_compiled = True
      if throughput.first_step_at is None:
        throughput.first_step_at = clock.process_age_s()
      device_state, sums = run.driver.train_step(device_state, batch, constants)
      if throughput.first_step_done_at is None:
        throughput.first_step_done_at = clock.process_age_s()
      window.append(sums)
      step += 1
      boundary = step % periods.checkpoint_every_steps == 0 or step == periods.total_steps
      stopping = stop.signal_name  # Read once: a signal arriving later is handled at the next step.
      if step % periods.log_every_steps == 0 or boundary or stopping or step == end_step:
        steps = run.driver.fetch(window)  # The only host sync between evaluations.
        seconds = time.perf_counter() - window_start
        # Before any save: a NaN step must not reach a checkpoint (its update was not applied).
        skipped = _check_window(run, steps, step - len(steps), nan, throughput)
        throughput.skipped_steps += skipped
        totals = _add(steps)
        report = run.task.train_report(totals)
        if not all(np.isfinite(v) for v in report.values()) and totals['examples'] and skipped < len(steps):
          raise TrainingError(f'non-finite training loss ({report}) in the steps up to {step}; {run.intact()}. '
                              'Lower the learning rate or set optim.clip_norm.')
        if not window_compiled:
          throughput.seconds += seconds
          throughput.examples += float(totals['examples'])
          throughput.tokens += float(totals['tokens'])
        applied = max(len(steps) - skipped, 1)
        throughput.last = dict(report, examples_per_s=float(totals['examples'] / seconds),
                               tokens_per_s=float(totals['tokens'] / seconds),
                               grad_norm=float(totals['grad_norm_sum'] / applied))
        if skipped:
          throughput.last['skipped_steps'] = float(skipped)
        eta = (periods.total_steps - step) * seconds / len(steps)
        logging.info('step %d/%d  %s  %.0f examples/s  %.0f tokens/s  ETA %s%s', step, periods.total_steps,
                     '  '.join(f'{k} {v:.4f}' for k, v in report.items()), throughput.last['examples_per_s'],
                     throughput.last['tokens_per_s'], _duration(eta), '  (compiling)' if window_compiled else '')
        run.writer.write(step, 'train', throughput.last)
        if boundary or stopping or step == end_step:
          run.save(step, device_state, evaluate_dev=boundary)
        window, window_start, window_compiled = [], time.perf_counter(), False
      if stopping:
        run.checkpointer.wait()  # Inside the handler: a repeated signal must not kill the save.
        return device_state, step, stopping, throughput
    # The last save (its best parameters are written after the state) completes while a signal
    # is still only a request: a SIGTERM in that window killed the best save of the final step,
    # and the resumed run then tested an older best. A request arriving meanwhile is honoured.
    run.checkpointer.wait()
    return device_state, step, stop.signal_name, throughput


def final_test(run: _Run, device_state, step: int, throughput: _Throughput, workdir: str) -> dict:
  """Evaluates the best checkpoint on dev and test; the results (also in results.json)."""
  final_params = run.driver.get_state(device_state).params
  best_step, best_params = run.checkpointer.restore_best(final_params)
  best_device_state = run.driver.put_state(run.driver.get_state(device_state).replace(params=best_params))
  dev_report = evaluate(run.driver, run.task, best_device_state, run.dev)
  test_report = evaluate(run.driver, run.task, best_device_state, run.test)
  run.checkpointer.close()
  metric = run.task.selection_metric
  results = {
      'step': step,
      'best_step': best_step,
      'task': run.task.name,
      'selection': {'metric': f'dev_{metric}', 'higher_is_better': run.task.higher_is_better},
      'dev': dev_report,
      'test': test_report,
      'train': {
          # A sampled softmax's training loss is an estimate, named as such (bigjax.tasks.language_model).
          **{k: throughput.last[k] for k in ('loss', 'sampled_loss') if k in throughput.last},
          'examples_per_s': throughput.per_second('examples'),
          'tokens_per_s': throughput.per_second('tokens'),
          'steady_state_seconds': throughput.seconds,
          'compiled_shapes': len(throughput.shapes),
          'skipped_steps': throughput.skipped_steps,  # In this invocation (train.nan_policy=skip).
      },
      'params_fingerprint': params_fingerprint(final_params),
      # Per-parameter L2 norms: compare runs that should agree to a tolerance, not bitwise.
      'params_l2': {jax.tree_util.keystr(path): float(np.linalg.norm(np.asarray(leaf)))
                    for path, leaf in jax.tree_util.tree_flatten_with_path(jax.device_get(final_params))[0]},
      'bytes_on_disk': _bytes_under(workdir),
      # From this process's launch (a resumed run's own, not the first one's).
      'timing': {'launch_to_first_step_s': throughput.first_step_at,
                 'launch_to_first_step_done_s': throughput.first_step_done_at,
                 'launch_to_results_s': clock.process_age_s()},
  }
  run.writer.write(step, 'test', run.task.summary(test_report), dict(_extra(test_report), best_step=best_step))
  logging.info('best dev step %d: dev %s %.4f, test %s %.4f', best_step, metric, dev_report[metric], metric,
               test_report[metric])
  if run.writer.enabled:
    _write_json(os.path.join(workdir, 'results.json'), results)
  return results


def train_and_evaluate(*, driver: Driver, task: Task, init_state: Callable, batch_at: Callable[[int], Batch],
                       dev: Sequence[Batch], test: Sequence[Batch], periods: Periods, workdir: str, meta: dict,
                       writer: metrics_lib.MetricWriter, constants=None, stop_after_steps: Optional[int] = None,
                       nan: NanPolicy = NanPolicy(), test_at_checkpoints: bool = False,
                       on_start: Optional[Callable[[], None]] = None,
                       train_shapes: Optional[Callable[[int], Sequence[Batch]]] = None) -> dict:
  """Trains to periods.total_steps, resuming from workdir's checkpoints, then tests the best.

  init_state() -> fresh host TrainState (also the restore target).
  batch_at(step) -> the global batch of that step (a pure function of the step).
  meta: JSON facts stored with each checkpoint; on resume, its 'compatibility' entry must match.
  constants: passed to every train step, neither trained nor donated (a teacher's parameters).
  stop_after_steps: stop (after a checkpoint) once this many steps ran in this call; for tests.
  test_at_checkpoints: also evaluate test at each checkpoint, for a test curve over time
    (time-to-accuracy races). Model selection still uses dev only.
  on_start(): called once the workdir's checkpoints are known to belong to this run, so
    that a refused run writes nothing over the files of the run it refused.
  train_shapes(start_step) -> one batch per shape the steps from start_step reach, in that
    order: the driver compiles them, and dev's and test's shapes, while the first ones train.
  Returns the results dict, also written to workdir/results.json.
  """
  if nan.policy not in NAN_POLICIES:
    raise ConfigError(f'train.nan_policy={nan.policy!r} is unknown; use one of {NAN_POLICIES}')
  checkpointer = Checkpointer(os.path.join(workdir, 'checkpoints'), best_directory=os.path.join(workdir, 'best'),
                              keep_latest=periods.keep_latest, keep_best=periods.keep_best,
                              metric=f'dev_{task.selection_metric}', higher_is_better=task.higher_is_better)
  start_step, state = restore_or_init(checkpointer, init_state, meta.get('compatibility') or {})
  writer.start(start_step)
  # One record per attempt: tools see a resume (and from where) without reading the log.
  writer.write(start_step, 'start', {'start_step': start_step, 'total_steps': periods.total_steps})
  if on_start is not None:
    on_start()
  run = _Run(driver=driver, task=task, checkpointer=checkpointer, writer=writer, dev=dev, test=test, meta=meta,
             test_at_checkpoints=test_at_checkpoints, select_from_step=min(periods.select_from_step,
                                                                           periods.total_steps))
  device_state = driver.put_state(state)
  del state
  end_step = periods.total_steps
  if stop_after_steps is not None:
    end_step = min(end_step, start_step + stop_after_steps)
  if constants is not None:
    constants = driver.put_constants(constants)
  ahead = None
  if train_shapes is not None and start_step < end_step:
    ahead = driver.compile_ahead(device_state, train_shapes(start_step), _distinct_shapes([*dev, *test]), constants)
  try:
    try:
      device_state, step, stopped_by, throughput = train_steps(
          run, device_state, batch_at, start_step=start_step, end_step=end_step, periods=periods, nan=nan,
          constants=constants)
      checkpointer.wait()
    except Exception:  # Not KeyboardInterrupt: a second signal means "now", even if a save hangs.
      checkpointer.wait_quietly()  # A save in flight completes: the newest good checkpoint survives the error.
      raise
    if stopped_by or step < periods.total_steps:
      checkpointer.close()
      reason = f'received {stopped_by}' if stopped_by else f'stopped after {step - start_step} steps as asked'
      logging.info('%s: checkpoint at step %d saved; rerun the same command to resume', reason, step)
      return {'step': step, 'stopped': reason}
    return final_test(run, device_state, step, throughput, workdir)
  finally:
    if ahead is not None:
      ahead.close()


def _distinct_shapes(batches: Sequence[Batch]) -> list[Batch]:
  """The first batch of each token-id shape, in order."""
  seen = {}
  for batch in batches:
    seen.setdefault(np.shape(batch.token_ids), batch)
  return list(seen.values())


def _bytes_under(folder: str) -> int:
  """Bytes of every file under folder: what a run costs on disk."""
  return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(folder) for name in names
             if not os.path.islink(os.path.join(root, name)))


def _write_json(path: str, obj) -> None:
  tmp = path + '.tmp'
  with open(tmp, 'w', encoding='utf-8') as f:
    json.dump(obj, f, indent=2)
  os.replace(tmp, path)


def _duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  return f'{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'
