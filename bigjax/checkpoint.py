"""Orbax checkpoints of {state, meta}: periodic saves, latest-N plus best-N by dev accuracy.

Retention uses a preservation policy that keeps the latest N *and* the best N: Orbax's
`max_to_keep` together with `best_fn` was seen to delete the newest step, which breaks
resume after preemption (docs/FACTS.md). `latest_step()` does not validate a step, so
restoring walks back from the newest step until one restores.
"""
import logging
from typing import Any, Callable, Optional

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

from bigjax.errors import CheckpointError

BEST_METRIC = 'dev_accuracy'


def abstract_like(tree):
  """Shape/dtype/sharding target: restores onto the caller's devices, whatever wrote it."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, 'sharding', None)),
                      tree)


def _best_metric(metrics) -> float:
  return metrics[BEST_METRIC]


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
    options = ocp.CheckpointManagerOptions(preservation_policy=policy, enable_async_checkpointing=async_save,
                                           best_fn=_best_metric, best_mode='max', create=True)
    self._manager = ocp.CheckpointManager(directory, options=options, item_names=('state', 'meta'))
    self.directory = directory

  def save(self, step: int, state, meta: dict, dev_accuracy: Optional[float] = None) -> bool:
    metrics = None if dev_accuracy is None else {BEST_METRIC: float(dev_accuracy)}
    return self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                            meta=ocp.args.JsonSave(meta)),
                              metrics=metrics, force=True)

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def best_step(self) -> Optional[int]:
    """The step with the highest dev accuracy among the kept checkpoints."""
    best = None
    for info in self._manager._checkpoints:  # pylint: disable=protected-access
      if info.metrics and BEST_METRIC in info.metrics:
        if best is None or info.metrics[BEST_METRIC] > best[1]:
          best = (info.step, info.metrics[BEST_METRIC])
    return None if best is None else best[0]

  def restore(self, step: int, target) -> tuple[Any, dict]:
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_like(target)), meta=ocp.args.JsonRestore()))
    return restored['state'], dict(restored['meta'])

  def read_meta(self, step: int) -> dict:
    return dict(self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta'])

  def restore_latest(self, target, check_meta: Callable[[int, dict], None] = lambda step, meta: None
                     ) -> Optional[tuple[int, Any, dict]]:
    """Newest step that restores, falling back past damaged ones; None if there is none.

    check_meta(step, meta) runs before the state is read and raises if the checkpoint
    belongs to another kind of run: that is the user's mistake, not damage to skip.
    """
    steps = self.all_steps()
    for step in reversed(steps):
      try:
        meta = self.read_meta(step)
      except Exception as e:  # A damaged meta file: fall back like any damage.
        logging.warning('checkpoint step %d in %s has unreadable metadata (%s); trying an older one', step,
                        self.directory, e)
        continue
      check_meta(step, meta)
      try:
        state, meta = self.restore(step, target)
        return step, state, meta
      except Exception as e:  # Orbax raises several types for damaged files.
        logging.warning('checkpoint step %d in %s cannot be restored (%s: %s); trying an older one',
                        step, self.directory, type(e).__name__, e)
    if steps:
      raise CheckpointError(f'{self.directory}: none of the checkpoints {steps} can be restored into this '
                            'run (see warnings above); use a new workdir or delete them to start over')
    return None

  def wait(self):
    self._manager.wait_until_finished()

  def close(self):
    self._manager.close()
