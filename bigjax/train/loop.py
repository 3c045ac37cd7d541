"""The training loop: steps, the periodic work as hooks, resume, final test.

It knows a model only through the driver's steps, an objective only through its task
(bigjax.tasks: what evaluation sums up, its report, the metric that picks the kept
checkpoint), and data only through a step->batch function. Language-model pretraining,
finetuning and distillation are other tasks, states and constants, not other loops.

Read top to bottom: `train_and_evaluate` restores or initializes the state
(`restore_or_init`), runs the steps (`train_steps`: the control, which closes a window
whenever a hook is due and hands it to the hooks of bigjax.train.hooks: the NaN guard,
throughput, the progress log, checkpointing), and tests the best checkpoint (`final_test`).

Reliability (docs/guides/training.md, "Reliability"): SIGTERM/SIGINT save at the next step boundary and
return; a run killed at any moment resumes bit-exactly from its newest complete
checkpoint, because batch(step) and the dropout key are pure functions of the step; a
checkpoint is never written from NaN/Inf parameters.
"""
import dataclasses
import hashlib
import logging
import os
import queue
import signal
import threading
import time
from typing import Callable, Iterator, Optional, Sequence

from etils import epath
import jax
import numpy as np

from bigjax import clock
from bigjax import files
from bigjax import metrics as metrics_lib
from bigjax.checkpoint import Checkpointer, to_host
from bigjax.errors import CheckpointError, ConfigError
from bigjax.tasks import Task
from bigjax.train import hooks as hooks_lib
from bigjax.train.hooks import NAN_POLICIES, NanPolicy, TrainingError, evaluate  # pylint: disable=unused-import
from bigjax.train.parallel import Driver
from bigjax.types import Batch


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
class LoopConfig:
  """How the loop runs, beside what it runs.

  stop_after_steps: stop (after a checkpoint) once this many steps ran in this call; for tests.
  test_at_checkpoints: also evaluate test at each checkpoint, for a test curve over time
    (time-to-accuracy races). Model selection still uses dev only.
  """
  periods: Periods
  nan: NanPolicy = NanPolicy()
  test_at_checkpoints: bool = False
  stop_after_steps: Optional[int] = None


def params_fingerprint(params) -> str:
  """sha256 of every parameter's name, dtype, shape and bytes: equal runs, equal hashes."""
  digest = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(to_host(params))[0]:
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


def restore_or_init(checkpointer: Checkpointer, init_state: Callable, compatibility: dict,
                    target: Callable = lambda state: state):
  """(step, state): the newest intact checkpoint of this run, or a fresh state at step 0.

  target(fresh state) -> what to restore onto (its shapes and shardings: a driver's
  abstract_state, so a sharded state is read straight into its shards, whatever mesh wrote it).
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

  restored = checkpointer.restore_latest(target(fresh), check_compatible)
  if restored is None:
    logging.info('no checkpoint in %s: starting at step 0', checkpointer.directory)
    return 0, fresh
  step, state, _ = restored
  logging.info('resuming from step %d of %s', step, checkpointer.directory)
  return step, state


def train_steps(device_state, batch_at: Callable[[int], Batch], *, driver: Driver, task: Task,
                start_step: int, end_step: int, periods: Periods, guard: hooks_lib.NanGuard,
                throughput: hooks_lib.Throughput, progress: hooks_lib.ProgressLog,
                checkpointing: hooks_lib.Checkpointing, constants=None, extra_hooks: Sequence[Callable] = ()):
  """Steps from start_step to end_step. A window closes every log_every_steps, at each
  checkpoint step (every checkpoint_every_steps, and the run's last), at a stop request and
  at end_step; the hooks then run in order (the module docstring of bigjax.train.hooks).

  Returns (device_state, step, the stop signal's name or None).
  """
  sums, window_start, window_compiled = [], time.perf_counter(), False
  step = start_step
  with _StopRequest() as stop:
    for batch in prefetch(map(batch_at, range(start_step, end_step))):
      window_compiled |= throughput.new_shape(batch)  # A new shape compiles: not steady state.
      throughput.step_launched()
      device_state, step_sums = driver.train_step(device_state, batch, constants)
      throughput.step_returned()
      sums.append(step_sums)
      step += 1
      checkpoint_due = step % periods.checkpoint_every_steps == 0 or step == periods.total_steps
      stopping = stop.signal_name  # Read once: a signal arriving later is handled at the next step.
      if step % periods.log_every_steps == 0 or checkpoint_due or stopping or step == end_step:
        window = hooks_lib.Window(step=step, sums=driver.fetch(sums), seconds=time.perf_counter() - window_start,
                                  compiled=window_compiled, checkpoint_due=checkpoint_due, stopping=stopping,
                                  last_of_call=step == end_step)
        guard(window)  # Before any save: a NaN step must not reach a checkpoint (its update was not applied).
        window.totals = hooks_lib.add(window.sums)
        window.report = task.train_report(window.totals)
        if (not all(np.isfinite(v) for v in window.report.values()) and window.totals['examples']
            and window.skipped < len(window.sums)):
          raise TrainingError(f'non-finite training loss ({window.report}) in the steps up to {step}; '
                              f'{checkpointing.intact()}. Lower the learning rate or set optim.clip_norm.')
        throughput(window)
        progress(window)
        for hook in extra_hooks:
          hook(window)
        checkpointing(window, device_state)
        sums, window_start, window_compiled = [], time.perf_counter(), False
      if stopping:
        checkpointing.checkpointer.wait()  # Inside the handler: a repeated signal must not kill the save.
        return device_state, step, stopping
    # The last save (its best parameters are written after the state) completes while a signal
    # is still only a request: a SIGTERM in that window killed the best save of the final step,
    # and the resumed run then tested an older best. A request arriving meanwhile is honoured.
    checkpointing.checkpointer.wait()
    return device_state, step, stop.signal_name


def final_test(checkpointing: hooks_lib.Checkpointing, device_state, step: int, throughput: hooks_lib.Throughput,
               skipped_steps: int, workdir: str, memory: Optional[dict] = None, extra_hooks: Sequence = ()) -> dict:
  """Evaluates the best checkpoint on dev and test; the results (also in results.json)."""
  driver, task, checkpointer, writer = (checkpointing.driver, checkpointing.task, checkpointing.checkpointer,
                                        checkpointing.writer)
  final_params = driver.get_state(device_state).params
  best_step, best_params = checkpointer.restore_best(final_params)
  best_device_state = driver.put_state(driver.get_state(device_state).replace(params=best_params))
  dev_report = evaluate(driver, task, best_device_state, checkpointing.dev)
  test_report = evaluate(driver, task, best_device_state, checkpointing.test)
  checkpointer.close()
  metric = task.selection_metric
  results = {
      'step': step,
      'best_step': best_step,
      'task': task.name,
      'selection': {'metric': f'dev_{metric}', 'higher_is_better': task.higher_is_better},
      'dev': dev_report,
      'test': test_report,
      'train': {
          # A sampled softmax's training loss is an estimate, named as such (bigjax.tasks.language_model).
          **{k: throughput.last[k] for k in ('loss', 'sampled_loss') if k in throughput.last},
          'examples_per_s': throughput.per_second('examples'),
          'tokens_per_s': throughput.per_second('tokens'),
          'steady_state_seconds': throughput.seconds,
          'compiled_shapes': len(throughput.shapes),
          'skipped_steps': skipped_steps,  # In this invocation (train.nan_policy=skip).
      },
      'params_fingerprint': params_fingerprint(final_params),
      # Per-parameter L2 norms: compare runs that should agree to a tolerance, not bitwise.
      'params_l2': {jax.tree_util.keystr(path): float(np.linalg.norm(np.asarray(leaf)))
                    for path, leaf in jax.tree_util.tree_flatten_with_path(to_host(final_params))[0]},
      'bytes_on_disk': _bytes_under(workdir),
      # Per device, as this invocation's driver placed the state and compiled its first step's shape.
      'memory': memory,
      # From this process's launch (a resumed run's own, not the first one's).
      'timing': {'launch_to_first_step_s': throughput.first_step_at,
                 'launch_to_first_step_done_s': throughput.first_step_done_at,
                 'launch_to_results_s': clock.process_age_s()},
  }
  for hook in extra_hooks:  # What a run's own hooks add (its privacy record, say).
    if hasattr(hook, 'results'):
      results.update(hook.results(step))
  writer.write(step, 'test', task.summary(test_report), dict(hooks_lib.extra(test_report), best_step=best_step))
  logging.info('best dev step %d: dev %s %.4f, test %s %.4f', best_step, metric, dev_report[metric], metric,
               test_report[metric])
  if writer.enabled:
    files.write_json(os.path.join(workdir, 'results.json'), results)
  return results


def train_and_evaluate(*, driver: Driver, task: Task, init_state: Callable, batch_at: Callable[[int], Batch],
                       dev: Sequence[Batch], test: Sequence[Batch], config: LoopConfig, workdir: str, meta: dict,
                       writer: metrics_lib.MetricWriter, constants=None, on_start: Optional[Callable[[], None]] = None,
                       train_shapes: Optional[Callable[[int], Sequence[Batch]]] = None,
                       extra_hooks: Sequence[Callable] = ()) -> dict:
  """Trains to config.periods.total_steps, resuming from workdir's checkpoints, then tests the best.

  init_state() -> fresh host TrainState (also the restore target).
  batch_at(step) -> the global batch of that step (a pure function of the step).
  meta: JSON facts stored with each checkpoint; on resume, its 'compatibility' entry must match.
  constants: passed to every train step, neither trained nor donated (a teacher's parameters).
  on_start(): called once the workdir's checkpoints are known to belong to this run, so
    that a refused run writes nothing over the files of the run it refused.
  train_shapes(start_step) -> one batch per shape the steps from start_step reach, in that
    order: the driver compiles them, and dev's and test's shapes, while the first ones train.
  extra_hooks: hook(window) after the progress log at every window (bigjax.train.hooks); one with
    results(step) -> dict adds that to the results.
  Returns the results dict, also written to workdir/results.json.
  """
  periods = config.periods
  if config.nan.policy not in NAN_POLICIES:
    raise ConfigError(f'train.nan_policy={config.nan.policy!r} is unknown; use one of {NAN_POLICIES}')
  checkpointer = Checkpointer(os.path.join(workdir, 'checkpoints'), best_directory=os.path.join(workdir, 'best'),
                              keep_latest=periods.keep_latest, keep_best=periods.keep_best,
                              metric=f'dev_{task.selection_metric}', higher_is_better=task.higher_is_better)
  start_step, state = restore_or_init(checkpointer, init_state, meta.get('compatibility') or {},
                                      driver.abstract_state)
  writer.start(start_step)
  # One record per attempt: tools see a resume (and from where) without reading the log.
  writer.write(start_step, 'start', {'start_step': start_step, 'total_steps': periods.total_steps})
  if on_start is not None:
    on_start()
  checkpointing = hooks_lib.Checkpointing(
      driver=driver, task=task, checkpointer=checkpointer, writer=writer, dev=dev, test=test, meta=meta,
      test_at_checkpoints=config.test_at_checkpoints,
      select_from_step=min(periods.select_from_step, periods.total_steps))
  throughput = hooks_lib.Throughput()
  guard = hooks_lib.NanGuard(config.nan, checkpointing.intact)
  progress = hooks_lib.ProgressLog(periods.total_steps, throughput, writer)
  device_state = driver.put_state(state)
  del state
  end_step = periods.total_steps
  if config.stop_after_steps is not None:
    end_step = min(end_step, start_step + config.stop_after_steps)
  if constants is not None:
    constants = driver.put_constants(constants)
  ahead = None
  if train_shapes is not None and start_step < end_step:
    ahead = driver.compile_ahead(device_state, train_shapes(start_step), _distinct_shapes([*dev, *test]), constants)
  try:
    memory = None
    if start_step < end_step:  # The first step's program, compiled here: the step finds it in jit's cache.
      memory = driver.memory(device_state, batch_at(start_step), constants)
      log_memory(memory)
    try:
      device_state, step, stopped_by = train_steps(
          device_state, batch_at, driver=driver, task=task, start_step=start_step, end_step=end_step,
          periods=periods, guard=guard, throughput=throughput, progress=progress, checkpointing=checkpointing,
          constants=constants, extra_hooks=extra_hooks)
      checkpointer.wait()
    except Exception:  # Not KeyboardInterrupt: a second signal means "now", even if a save hangs.
      checkpointer.wait_quietly()  # A save in flight completes: the newest good checkpoint survives the error.
      raise
    if stopped_by or step < periods.total_steps:
      checkpointer.close()
      reason = f'received {stopped_by}' if stopped_by else f'stopped after {step - start_step} steps as asked'
      logging.info('%s: checkpoint at step %d saved; rerun the same command to resume', reason, step)
      return {'step': step, 'stopped': reason}
    return final_test(checkpointing, device_state, step, throughput, guard.skipped_steps, workdir, memory,
                      extra_hooks)
  finally:
    if ahead is not None:
      ahead.close()


def log_memory(memory: dict) -> None:
  """One line: what each device holds, so a mesh shape's cost shows before a long job runs."""
  mib = lambda key: 'unknown' if memory.get(key) is None else f'{memory[key] / 2**20:.1f} MiB'
  where = f' on mesh {memory["mesh"]}' if 'mesh' in memory else ''
  logging.info('memory per device%s: parameters %s, optimizer state %s, train step temporaries %s', where,
               mib('params_bytes_per_device'), mib('optimizer_bytes_per_device'), mib('step_temp_bytes_per_device'))


def _distinct_shapes(batches: Sequence[Batch]) -> list[Batch]:
  """The first batch of each token-id shape, in order."""
  seen = {}
  for batch in batches:
    seen.setdefault(np.shape(batch.token_ids), batch)
  return list(seen.values())


def _bytes_under(folder: str) -> int:
  """Bytes of every file under folder: what a run costs on disk (or in its bucket)."""
  if files.is_url(folder):  # Objects, with no links among them: the store says each one's size.
    return sum((root / name).stat().length for root, _, names in epath.Path(folder).walk() for name in names)
  return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(folder) for name in names
             if not os.path.islink(os.path.join(root, name)))
