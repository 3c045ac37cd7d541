"""Orbax checkpoints: the latest N full train states (to resume) and the best N by a dev
metric as parameters alone (to test, finetune, compress, export).

Two folders, two managers: `checkpoints/` keeps the latest `keep_latest` steps of the whole
state (parameters, optimizer moments, step, key); `best/` keeps the parameters of the
`keep_best` steps with the best dev metric. A best checkpoint needs no optimizer state, which
for Adam is two more copies of every parameter. Each uses one plain preservation policy:
Orbax's `max_to_keep` together with `best_fn` in one manager was seen to delete the newest
step, which breaks resume after preemption.

Damage. Saves are atomic (Orbax writes `<step>.orbax-checkpoint-tmp` and renames it when
complete); the leftovers of a killed save are removed when the next run opens the folder.
Orbax does not validate what it reads back: `latest_step()` returns a truncated or empty
step, and a flipped byte in an array file restores silently with wrong values (seen with
orbax 0.12.8). So each save stores a sha256 of the state in its meta, each restore checks
it, and resuming walks back from the newest step until one restores and matches. Damaged
newer steps are moved aside to `<step>.damaged` (never deleted): the run then saves those
steps afresh, and retention does not count them.
"""
import errno
import hashlib
import logging
import os
from typing import Any, Callable, Optional

from etils import epath
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

from bigjax.errors import CheckpointError

DIGEST_KEY = 'state_sha256'
DAMAGED_SUFFIX = '.damaged'
_TMP_SUFFIX = '.orbax-checkpoint-tmp'


def abstract_like(tree):
  """Shape/dtype/sharding target: restores onto the caller's devices, whatever wrote it."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, 'sharding', None)),
                      tree)


def to_host(tree):
  """numpy copies of a tree's arrays. An array split over other processes' devices too (FSDP
  across hosts) is gathered whole: a collective, so every process must call this then."""
  def host(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return jax.device_get(x)
  return jax.tree.map(host, tree)


def inspect_state(state) -> tuple[str, list[str]]:
  """sha256 over every leaf's dtype, shape and bytes; and the paths of float leaves holding NaN/Inf.

  Paths stay out of the hash: a restored optax state has other container types than the
  saved one, but the same leaves in the same order.
  """
  digest = hashlib.sha256()
  nonfinite = []
  for path, leaf in jax.tree_util.tree_flatten_with_path(to_host(state))[0]:
    leaf = np.ascontiguousarray(leaf)
    digest.update(f'{leaf.dtype}:{leaf.shape};'.encode())
    digest.update(leaf.reshape(-1).view(np.uint8))
    if jnp.issubdtype(leaf.dtype, jnp.inexact) and not np.isfinite(leaf).all():
      nonfinite.append(jax.tree_util.keystr(path))
  return digest.hexdigest(), nonfinite


def _short_cause(e: BaseException) -> str:
  """One line for a write failure: Orbax's messages embed whole TensorStore specs."""
  text = str(e)
  if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT) or 'No space left on device' in text:
    return 'no space left on device'
  if 'Disk quota exceeded' in text:
    return 'disk quota exceeded'
  first = text.strip().splitlines()[0] if text.strip() else ''
  return f'{type(e).__name__}: {first[:200]}'


def _remove_leftovers(directory: str, prefix: str) -> None:
  """Removes what a failed save left in `directory` (names starting with `prefix`), as far as it can:
  only space is lost otherwise, and the save's own error is the one to report."""
  folder = epath.Path(directory)
  try:
    leftovers = [path for path in folder.iterdir() if path.name.startswith(prefix)] if folder.is_dir() else []
  except OSError:
    return
  for leftover in leftovers:
    try:
      leftover.rmtree(missing_ok=True)
    except OSError:
      pass


class Checkpointer:
  """Latest full states in `directory`, best parameters in `best_directory`.

  metric: the name of the selection metric (e.g. 'dev_accuracy'); higher_is_better its
  direction. Among equal values the earliest step ranks first.
  """

  def __init__(self, directory: str, *, best_directory: Optional[str] = None, keep_latest: int = 2,
               keep_best: int = 1, metric: str = 'dev_accuracy', higher_is_better: bool = True,
               async_save: bool = True):
    self.directory = directory
    self.best_directory = best_directory or os.path.join(os.path.dirname(directory.rstrip('/')), 'best')
    self.metric, self.higher_is_better, self.keep_best = metric, higher_is_better, keep_best
    # cleanup_tmp_directories: a save killed midway left `<step>.orbax-checkpoint-tmp`; it is
    # never a checkpoint, and saving that step again must not trip over it.
    common = dict(enable_async_checkpointing=async_save, create=True, cleanup_tmp_directories=True)
    self._latest = ocp.CheckpointManager(directory, item_names=('state', 'meta'), options=ocp.CheckpointManagerOptions(
        preservation_policy=pp.LatestN(n=keep_latest), **common))
    get_metric = lambda metrics: metrics[metric]
    # best_fn is what makes Orbax write each step's metric to disk, so that the ranking
    # survives a restart; retention itself is the policy. reverse=False sorts ascending
    # and keeps the last n, so a lower-is-better metric is ranked by its negation.
    self._best = ocp.CheckpointManager(self.best_directory, item_names=('params', 'meta'),
                                       options=ocp.CheckpointManagerOptions(
        preservation_policy=pp.BestN(get_metric_fn=lambda m: self._score(get_metric(m)), reverse=False,
                                     n=max(keep_best, 1), keep_checkpoints_without_metrics=False),
        best_fn=get_metric, best_mode='max' if higher_is_better else 'min', **common))
    self._managers = (self._latest, self._best)
    self._pending_step: Optional[int] = None  # The save in flight, to name it if it fails.

  def _score(self, value: float) -> float:
    """Higher is better, whatever the metric's direction."""
    return float(value) if self.higher_is_better else -float(value)

  def save(self, step: int, state, meta: dict, metric: Optional[float] = None, best=None,
           digest: Optional[str] = None) -> None:
    """Starts async saves: the full state as the latest step, and, when `metric` ranks among
    the best `keep_best`, `best` (the parameters) as a best step. Each carries a sha256.

    metric=None (a save on a stop request): the step is one of the latest, never a best.
    Raises CheckpointError if this save or the previous one fails.
    """
    self.wait()  # A failed earlier save is reported as itself, not as this one.
    if digest is None:
      digest, _ = inspect_state(state)
    self._pending_step = step
    try:
      self._latest.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(dict(meta, **{DIGEST_KEY: digest}))),
                        force=True)
      if metric is not None and best is not None and self._ranks_among_best(metric):
        # One save in flight at a time: in a multi-process job two managers saving the same
        # step at once mixed up each other's cross-process metadata (Orbax 0.12.8).
        self._latest.wait_until_finished()
        self._save_best(step, best, meta, metric)
    except Exception as e:  # Orbax and TensorStore raise ValueError, OSError, ...
      raise self._save_failed(e) from e

  def save_best(self, step: int, params, meta: dict, metric: float) -> None:
    """Parameters as a best step alone, with no train state: a run made without training
    (a quantized copy of another run). Waits until it is written."""
    self.wait()
    self._pending_step = step
    try:
      self._save_best(step, params, meta, metric)
      self._best.wait_until_finished()
    except Exception as e:
      raise self._save_failed(e) from e

  def _save_best(self, step: int, params, meta: dict, metric: float) -> None:
    self._best.save(step, args=ocp.args.Composite(
        params=ocp.args.StandardSave(params),
        meta=ocp.args.JsonSave(dict(meta, **{DIGEST_KEY: inspect_state(params)[0]}))),
                    metrics={self.metric: float(metric)}, force=True)

  def _ranks_among_best(self, metric: float) -> bool:
    if self.keep_best < 1:
      return False
    kept = [self._score(info.metrics[self.metric]) for info in self._best._checkpoints  # pylint: disable=protected-access
            if info.metrics and self.metric in info.metrics]
    return len(kept) < self.keep_best or self._score(metric) > min(kept)

  def wait(self):
    """Waits for the save in flight; raises CheckpointError if it failed."""
    try:
      for manager in self._managers:
        manager.wait_until_finished()
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
      for directory in (self.directory, self.best_directory):
        _remove_leftovers(directory, f'{step}{_TMP_SUFFIX}')
    for manager in self._managers:
      manager.reload()
    cause = _short_cause(e)
    todo = 'free some space (or move --workdir)' if 'space' in cause or 'quota' in cause else 'fix the cause'
    steps = self.all_steps()
    kept = (f'the checkpoints at steps {steps} are intact; {todo} and rerun the same command to resume from '
            f'step {steps[-1]}') if steps else f'no earlier checkpoint exists; {todo} and rerun the same command'
    return CheckpointError(f'{self.directory}: saving the checkpoint of step {step} failed ({cause}); {kept}.')

  def all_steps(self) -> list[int]:
    """The latest steps (full states)."""
    return sorted(self._latest.all_steps())

  def ranked_best_steps(self) -> list[int]:
    """Kept best steps, best first (earliest first among equals)."""
    ranked = [(-self._score(info.metrics[self.metric]), info.step)
              for info in self._best._checkpoints  # pylint: disable=protected-access
              if info.metrics and self.metric in info.metrics]
    return [step for _, step in sorted(ranked)]

  def restore(self, step: int, target) -> tuple[Any, dict]:
    """The full state and meta of latest `step`; CheckpointError if it does not match its sha256."""
    return self._restore(self._latest, 'state', step, target)

  def restore_params(self, step: int, target) -> tuple[Any, dict]:
    """The parameters and meta of best `step`, checked like `restore`."""
    return self._restore(self._best, 'params', step, target)

  def _restore(self, manager, item: str, step: int, target) -> tuple[Any, dict]:
    restored = manager.restore(step, args=ocp.args.Composite(
        **{item: ocp.args.StandardRestore(abstract_like(target)), 'meta': ocp.args.JsonRestore()}))
    tree, meta = restored[item], dict(restored['meta'])
    expected = meta.pop(DIGEST_KEY, None)  # Absent in checkpoints written before it existed.
    if expected is not None and inspect_state(tree)[0] != expected:
      raise CheckpointError(f'{manager.directory}: step {step} does not match the sha256 saved with it (a '
                            'damaged file)')
    return tree, meta

  def read_meta(self, step: int) -> dict:
    meta = dict(self._latest.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta'])
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
    """The best kept step that restores (the next best if it is damaged), and its parameters.

    target: the parameters' structure (a params pytree, or abstract arrays).
    """
    for step in self.ranked_best_steps():
      try:
        return step, self.restore_params(step, target)[0]
      except Exception as e:  # Damaged after it was saved: the next best will do, with a warning.
        logging.warning('best checkpoint step %d in %s cannot be restored (%s); trying the next best', step,
                        self.best_directory, _short_cause(e))
    raise CheckpointError(f'{self.best_directory}: no best checkpoint can be restored for the final test; rerun '
                          'the same command to train again from the newest one')

  def _set_aside(self, steps: list[int]) -> None:
    """Renames damaged steps so that Orbax no longer lists them; nothing is deleted."""
    if steps and jax.process_index() == 0:
      for step in steps:
        source = os.path.join(self.directory, str(step))
        target, n = source + DAMAGED_SUFFIX, 1
        while epath.Path(target).exists():
          target, n = f'{source}{DAMAGED_SUFFIX}{n}', n + 1
        try:
          # In a bucket a rename copies each object, then deletes it: not atomic, but a step
          # interrupted halfway is damaged either way.
          epath.Path(source).rename(target)
        except OSError as e:
          raise CheckpointError(f'{source} is damaged and cannot be moved aside ({e.strerror or e}); move it away '
                                'yourself and rerun the same command') from e
        logging.warning('moved the damaged checkpoint %s to %s; delete it once you no longer need it', source,
                        target)
    if steps:
      if jax.process_count() > 1:  # Every process lists the steps only after the renames.
        from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
        multihost_utils.sync_global_devices('bigjax_checkpoint_set_aside')
      self._latest.reload()

  def close(self):
    for manager in self._managers:
      manager.close()
