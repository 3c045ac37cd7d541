"""What the training loop does besides stepping, each part with its own state and cadence.

The loop (bigjax.train.loop) runs the steps and, whenever a hook is due, closes a window: it
fetches the window's per-step sums from the devices (the only host sync between
evaluations) and hands the window to its hooks, in order. The NaN guard comes first, so a
step whose update was not applied never reaches a log line or a checkpoint:

  NanGuard      every window   the train.nan_policy: stop, or skip and count
  Throughput    every window   steady-state speed (windows that compiled nothing), first-step times
  ProgressLog   every window   the log line with its ETA, and the 'train' metrics record
  Checkpointing its period     dev evaluation (and the test curve), a checkpoint; at a stop or
                               the end of the call, a checkpoint without evaluation

A window closes every log_every_steps, at each checkpoint step, at a stop request and at the
last step of the call.
"""
import dataclasses
import logging
from typing import Callable, Optional, Sequence

import jax
import numpy as np

from bigjax import checkpoint as checkpoint_lib
from bigjax import clock
from bigjax import metrics as metrics_lib
from bigjax.checkpoint import Checkpointer
from bigjax.errors import BigjaxError
from bigjax.tasks import Task
from bigjax.train.parallel import Driver
from bigjax.types import Batch


class TrainingError(BigjaxError):
  """Training cannot go on (a non-finite loss, say)."""


@dataclasses.dataclass(frozen=True)
class NanPolicy:
  policy: str = 'stop'  # One of NAN_POLICIES.
  max_skipped_in_a_row: int = 10


# What a step whose loss or gradients are NaN/Inf does (the step itself never applies it):
# 'stop' the run with an error naming it, or 'skip' it with a warning and go on (until
# max_skipped_in_a_row steps in a row were skipped: then the run stops as with 'stop').
NAN_POLICIES = ('stop', 'skip')


@dataclasses.dataclass
class Window:
  """The steps since the last window closed, their sums fetched to the host."""
  step: int  # The step reached.
  sums: list  # One host sum-tree per step.
  seconds: float  # Wall time since the window opened.
  compiled: bool  # A step of a new shape compiled in it: not steady state.
  checkpoint_due: bool  # A checkpoint step: every checkpoint_every_steps, and the run's last.
  stopping: Optional[str]  # The signal a stop request came with.
  last_of_call: bool  # The last step this call runs.
  skipped: int = 0  # Steps the NaN guard dropped.
  totals: dict = dataclasses.field(default_factory=dict)  # The applied steps' sums, added.
  report: dict = dataclasses.field(default_factory=dict)  # The task's train report of totals.

  @property
  def first_step(self) -> int:
    return self.step - len(self.sums)


def add(trees: list) -> dict:
  """Sum of host sum-trees, in float64."""
  return jax.tree.map(lambda *xs: np.sum(np.asarray(xs, np.float64), axis=0), *trees)


def evaluate(driver: Driver, task: Task, device_state, batches: Sequence[Batch]) -> dict:
  """The task's report over every batch.

  Each batch's sums are fetched before the next is dispatched: hundreds of queued
  multi-device programs are what stalls XLA:CPU's pmap (see parallel.PmapDriver).
  """
  return task.report(add([driver.fetch([driver.eval_step(device_state, batch)])[0] for batch in batches]))


def extra(report: dict) -> dict:
  """Non-scalar parts of a report (a confusion matrix) for metrics.jsonl."""
  return {k: v for k, v in report.items() if k == 'confusion'}


@dataclasses.dataclass
class NanGuard:
  """train.nan_policy over the closed windows; counts what it skipped."""
  policy: NanPolicy
  intact: Callable[[], str]  # Where the run can resume from, for the error message.
  skipped_steps: int = 0
  skipped_in_a_row: int = 0

  def __call__(self, window: Window) -> None:
    skipped = 0
    for offset, sums in enumerate(window.sums):
      if not sums['nonfinite_steps']:
        self.skipped_in_a_row = 0
        continue
      skipped += 1
      self.skipped_in_a_row += 1
      where = window.first_step + offset + 1  # The step that the update would have made.
      if self.policy.policy == 'stop':
        raise TrainingError(
            f'step {where}: the loss or the gradients are NaN or Inf, so the run stops (train.nan_policy=stop); '
            f'{self.intact()}. Lower optim.learning_rate, set optim.clip_norm, or set train.nan_policy=skip to '
            'drop such steps.')
      if self.skipped_in_a_row >= self.policy.max_skipped_in_a_row:
        raise TrainingError(
            f'step {where}: {self.skipped_in_a_row} steps in a row had a NaN or Inf loss or gradients, so '
            f'the run stops (train.max_skipped_in_a_row={self.policy.max_skipped_in_a_row}); {self.intact()}. '
            'Lower optim.learning_rate or set optim.clip_norm.')
    if skipped:
      first_bad = window.first_step + 1 + next(i for i, s in enumerate(window.sums) if s['nonfinite_steps'])
      logging.warning('skipped %d step(s) with a NaN or Inf loss or gradients up to step %d (the first: step %d); '
                      'their updates were not applied', skipped, window.step, first_bad)
    self.skipped_steps += skipped
    window.skipped = skipped


@dataclasses.dataclass
class Throughput:
  """Steady-state speed: log windows that compiled nothing; and when the first step ran."""
  seconds: float = 0.0
  examples: float = 0.0
  tokens: float = 0.0
  shapes: set = dataclasses.field(default_factory=set)
  last: dict = dataclasses.field(default_factory=dict)  # The last window's figures.
  # Seconds from the process's start to its first train step's launch, and to that step's
  # return (its compilation, or its load from the persistent compilation cache, included).
  first_step_at: Optional[float] = None
  first_step_done_at: Optional[float] = None

  def new_shape(self, batch: Batch) -> bool:
    """Whether batch's shape is new (its step compiles); called before each step."""
    shape = np.shape(batch.token_ids)
    if shape in self.shapes:
      return False
    self.shapes.add(shape)
    return True

  def step_launched(self) -> None:
    if self.first_step_at is None:
      self.first_step_at = clock.process_age_s()

  def step_returned(self) -> None:
    if self.first_step_done_at is None:
      self.first_step_done_at = clock.process_age_s()

  def per_second(self, what: str) -> Optional[float]:
    return getattr(self, what) / self.seconds if self.seconds else None

  def __call__(self, window: Window) -> None:
    totals = window.totals
    if not window.compiled:
      self.seconds += window.seconds
      self.examples += float(totals['examples'])
      self.tokens += float(totals['tokens'])
    applied = max(len(window.sums) - window.skipped, 1)
    self.last = dict(window.report, examples_per_s=float(totals['examples'] / window.seconds),
                     tokens_per_s=float(totals['tokens'] / window.seconds),
                     grad_norm=float(totals['grad_norm_sum'] / applied))
    if window.skipped:
      self.last['skipped_steps'] = float(window.skipped)


@dataclasses.dataclass
class ProgressLog:
  """A log line per window (the train report, speed and an ETA), and its 'train' record."""
  total_steps: int
  throughput: Throughput
  writer: metrics_lib.MetricWriter

  def __call__(self, window: Window) -> None:
    last = self.throughput.last
    eta = (self.total_steps - window.step) * window.seconds / len(window.sums)
    logging.info('step %d/%d  %s  %.0f examples/s  %.0f tokens/s  ETA %s%s', window.step, self.total_steps,
                 '  '.join(f'{k} {v:.4f}' for k, v in window.report.items()), last['examples_per_s'],
                 last['tokens_per_s'], duration(eta), '  (compiling)' if window.compiled else '')
    self.writer.write(window.step, 'train', last)


@dataclasses.dataclass
class Checkpointing:
  """At each checkpoint step: dev evaluation (and test's, for a test curve), then a checkpoint
  ranked by dev; at a stop request or the end of a call, a checkpoint without evaluation."""
  driver: Driver
  task: Task
  checkpointer: Checkpointer
  writer: metrics_lib.MetricWriter
  dev: Sequence[Batch]
  test: Sequence[Batch]
  meta: dict
  test_at_checkpoints: bool = False
  # Checkpoints before this step are evaluated but never ranked best: a pruning run's model
  # is chosen among those at its final sparsity only.
  select_from_step: int = 0

  def due(self, window: Window) -> bool:
    return window.checkpoint_due or bool(window.stopping) or window.last_of_call

  def intact(self) -> str:
    """Where the run can resume from, for error messages."""
    self.checkpointer.wait_quietly()
    steps = self.checkpointer.all_steps()
    if not steps:
      return f'no checkpoint was saved in {self.checkpointer.directory}'
    return f'the checkpoint at step {steps[-1]} in {self.checkpointer.directory} is intact'

  def __call__(self, window: Window, device_state) -> None:
    if self.due(window):
      # A stop's exit must be quick, and the steps that compete for best-dev must not depend
      # on when a run was interrupted: no evaluation there.
      self.save(window.step, device_state, evaluate_dev=window.checkpoint_due)

  def save(self, step: int, device_state, evaluate_dev: bool = True) -> None:
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
    self.writer.write(step, 'dev', task.summary(dev_report), extra(dev_report))
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


def duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  return f'{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'
