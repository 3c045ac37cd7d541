"""Orbax checkpoints of {state, meta}: periodic saves, latest-N plus best-N by dev accuracy.

Retention uses a preservation policy that keeps the latest N *and* the best N: Orbax's
`max_to_keep` together with `best_fn` was seen to delete the newest step, which breaks
resume after preemption (docs/FACTS.md).

Damage. Saves are atomic (Orbax writes `<step>.orbax-checkpoint-tmp` and renames it when
complete); the leftovers of a killed save are removed when the next run opens the folder.
Orbax does not validate what it reads back: `latest_step()` returns a truncated or empty
step, and a flipped byte in an array file restores silently with wrong values (seen with
orbax 0.12.8). So each save stores a sha256 of the state in its meta, each restore checks
it, and resuming walks back from the newest step until one restores and matches. Damaged
newer steps are moved aside to `<step>.damaged` (never deleted): the run then saves those
steps afresh, and retention does not count them.
"""
import contextlib
import errno
import glob
import hashlib
import logging
import os
import shutil
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

from bigjax.errors import CheckpointError

BEST_METRIC = 'dev_accuracy'
DIGEST_KEY = 'state_sha256'
DAMAGED_SUFFIX = '.damaged'
_TMP_SUFFIX = '.orbax-checkpoint-tmp'


def abstract_like(tree):
  """Shape/dtype/sharding target: restores onto the caller's devices, whatever wrote it."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, 'sharding', None)),
                      tree)


def inspect_state(state) -> tuple[str, list[str]]:
  """sha256 over every leaf's dtype, shape and bytes; and the paths of float leaves holding NaN/Inf.

  Paths stay out of the hash: a restored optax state has other container types than the
  saved one, but the same leaves in the same order.
  """
  digest = hashlib.sha256()
  nonfinite = []
  for path, leaf in jax.tree_util.tree_flatten_with_path(jax.device_get(state))[0]:
    leaf = np.ascontiguousarray(leaf)
    digest.update(f'{leaf.dtype}:{leaf.shape};'.encode())
    digest.update(leaf.reshape(-1).view(np.uint8))
    if jnp.issubdtype(leaf.dtype, jnp.inexact) and not np.isfinite(leaf).all():
      nonfinite.append(jax.tree_util.keystr(path))
  return digest.hexdigest(), nonfinite


def _best_metric(metrics) -> float:
  return metrics[BEST_METRIC]


class _DropMissingMetricsWarning(logging.Filter):
  """Saves made on a stop request skip the dev evaluation on purpose; Orbax warns about it."""

  def filter(self, record):
    return 'did not provide metrics' not in record.getMessage()


@contextlib.contextmanager
def _without_missing_metrics_warning():
  absl_logger, dropper = logging.getLogger('absl'), _DropMissingMetricsWarning()
  absl_logger.addFilter(dropper)
  try:
    yield
  finally:
    absl_logger.removeFilter(dropper)


def _short_cause(e: BaseException) -> str:
  """One line for a write failure: Orbax's messages embed whole TensorStore specs."""
  text = str(e)
  if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT) or 'No space left on device' in text:
    return 'no space left on device'
  if 'Disk quota exceeded' in text:
    return 'disk quota exceeded'
  first = text.strip().splitlines()[0] if text.strip() else ''
  return f'{type(e).__name__}: {first[:200]}'


class Checkpointer:

  def __init__(self, directory: str, *, keep_latest: int = 2, keep_best: int = 1, async_save: bool = True):
    policy = pp.AnyPreservationPolicy([
        pp.LatestN(n=keep_latest),
        # reverse=False sorts ascending and keeps the last n: the highest accuracies.
        pp.BestN(get_metric_fn=_best_metric, reverse=False, n=keep_best,
                 keep_checkpoints_without_metrics=False),
    ])
    # best_fn is what makes Orbax write each step's metrics to disk, so that the best
    # step is still known (and kept) after a restart; retention itself is `policy`.
    # cleanup_tmp_directories: a save killed midway left `<step>.orbax-checkpoint-tmp`; it is
    # never a checkpoint, and saving that step again must not trip over it.
    options = ocp.CheckpointManagerOptions(preservation_policy=policy, enable_async_checkpointing=async_save,
                                           best_fn=_best_metric, best_mode='max', create=True,
                                           cleanup_tmp_directories=True)
    self._manager = ocp.CheckpointManager(directory, options=options, item_names=('state', 'meta'))
    self.directory = directory
    self._pending_step: Optional[int] = None  # The save in flight, to name it if it fails.

  def save(self, step: int, state, meta: dict, dev_accuracy: Optional[float] = None,
           digest: Optional[str] = None) -> bool:
    """Starts an async save of state and meta (plus the state's sha256, for restore to check).

    dev_accuracy=None (a save on a stop request): the step is kept as one of the latest,
    never as the best. Raises CheckpointError if this save or the previous one fails.
    """
    self.wait()  # A failed earlier save is reported as itself, not as this one.
    if digest is None:
      digest, _ = inspect_state(state)
    metrics = None if dev_accuracy is None else {BEST_METRIC: float(dev_accuracy)}
    self._pending_step = step
    quiet = _without_missing_metrics_warning() if metrics is None else contextlib.nullcontext()
    try:
      with quiet:
        return self._manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(dict(meta, **{DIGEST_KEY: digest}))),
                                  metrics=metrics, force=True)
    except Exception as e:  # Orbax and TensorStore raise ValueError, OSError, ...
      raise self._save_failed(e) from e

  def wait(self):
    """Waits for the save in flight; raises CheckpointError if it failed."""
    try:
      self._manager.wait_until_finished()
    except Exception as e:
      raise self._save_failed(e) from e
    self._pending_step = None

  def wait_quietly(self):
    """wait() on an error path: another error is already on its way to the user."""
    try:
      self.wait()
    except CheckpointError as e:
      logging.warning('%s', e)

  def _save_failed(self, e: BaseException) -> CheckpointError:
    step, self._pending_step = self._pending_step, None
    if step is not None:  # A half-written save only takes space (a full disk is the usual cause).
      for tmp in glob.glob(os.path.join(glob.escape(self.directory), f'{step}{_TMP_SUFFIX}*')):
        shutil.rmtree(tmp, ignore_errors=True)
    self._manager.reload()
    cause = _short_cause(e)
    todo = 'free some space (or move --workdir)' if 'space' in cause or 'quota' in cause else 'fix the cause'
    steps = self.all_steps()
    kept = (f'the checkpoints at steps {steps} are intact; {todo} and rerun the same command to resume from '
            f'step {steps[-1]}') if steps else f'no earlier checkpoint exists; {todo} and rerun the same command'
    return CheckpointError(f'{self.directory}: saving the checkpoint of step {step} failed ({cause}); {kept}.')

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def _ranked_steps(self) -> list[int]:
    """Kept steps that have a dev accuracy, best first (earliest first among equals)."""
    ranked = [(-info.metrics[BEST_METRIC], info.step)
              for info in self._manager._checkpoints  # pylint: disable=protected-access
              if info.metrics and BEST_METRIC in info.metrics]
    return [step for _, step in sorted(ranked)]

  def best_step(self) -> Optional[int]:
    """The step with the highest dev accuracy among the kept checkpoints."""
    ranked = self._ranked_steps()
    return ranked[0] if ranked else None

  def restore(self, step: int, target) -> tuple[Any, dict]:
    """The state and meta of `step`; CheckpointError if the state does not match its saved sha256."""
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_like(target)), meta=ocp.args.JsonRestore()))
    state, meta = restored['state'], dict(restored['meta'])
    expected = meta.pop(DIGEST_KEY, None)  # Absent in checkpoints written before it existed.
    if expected is not None and inspect_state(state)[0] != expected:
      raise CheckpointError(f'{self.directory}: step {step} does not match the sha256 saved with it (a damaged '
                            'file)')
    return state, meta

  def read_meta(self, step: int) -> dict:
    meta = dict(self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta'])
    meta.pop(DIGEST_KEY, None)
    return meta

  def restore_latest(self, target, check_meta: Callable[[int, dict], None] = lambda step, meta: None
                     ) -> Optional[tuple[int, Any, dict]]:
    """Newest step that restores, falling back past damaged ones; None if there is none.

    check_meta(step, meta) runs before the state is read and raises if the checkpoint
    belongs to another kind of run: that is the user's mistake, not damage to skip.
    Damaged steps newer than the one restored are moved aside (see the module docstring).
    """
    steps = self.all_steps()
    damaged = []
    for step in reversed(steps):
      try:
        meta = self.read_meta(step)
      except Exception as e:  # A damaged meta file: fall back like any damage.
        logging.warning('checkpoint step %d in %s has unreadable metadata (%s); trying an older one', step,
                        self.directory, _short_cause(e))
        damaged.append(step)
        continue
      check_meta(step, meta)
      try:
        state, meta = self.restore(step, target)
      except Exception as e:  # Orbax raises several types for damaged files.
        logging.warning('checkpoint step %d in %s cannot be restored (%s); trying an older one', step,
                        self.directory, _short_cause(e))
        damaged.append(step)
        continue
      self._set_aside(damaged)
      return step, state, meta
    if steps:
      raise CheckpointError(f'{self.directory}: none of the checkpoints {steps} can be restored into this '
                            'run (see the warnings above); use a new --workdir, or move them away to start over')
    return None

  def restore_best(self, target) -> tuple[int, Any]:
    """The best kept step that restores (the next best if it is damaged), and its state."""
    for step in self._ranked_steps():
      try:
        return step, self.restore(step, target)[0]
      except Exception as e:  # Damaged after it was saved: the next best will do, with a warning.
        logging.warning('best checkpoint step %d in %s cannot be restored (%s); trying the next best', step,
                        self.directory, _short_cause(e))
    raise CheckpointError(f'{self.directory}: no checkpoint with a dev accuracy can be restored for the final '
                          'test; rerun the same command to train again from the newest one')

  def _set_aside(self, steps: list[int]) -> None:
    """Renames damaged steps so that Orbax no longer lists them; nothing is deleted."""
    if steps and jax.process_index() == 0:
      for step in steps:
        source = os.path.join(self.directory, str(step))
        target, n = source + DAMAGED_SUFFIX, 1
        while os.path.exists(target):
          target, n = f'{source}{DAMAGED_SUFFIX}{n}', n + 1
        try:
          os.rename(source, target)
        except OSError as e:
          raise CheckpointError(f'{source} is damaged and cannot be moved aside ({e.strerror}); move it away '
                                'yourself and rerun the same command') from e
        logging.warning('moved the damaged checkpoint %s to %s; delete it once you no longer need it', source,
                        target)
    if steps:
      if jax.process_count() > 1:  # Every process lists the steps only after the renames.
        from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
        multihost_utils.sync_global_devices('bigjax_checkpoint_set_aside')
      self._manager.reload()

  def close(self):
    self._manager.close()
