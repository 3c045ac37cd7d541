"""Objectives. A task owns everything specific to what is learned; the loop, the drivers
and the checkpointer hold none of it:

- loss(model, params, batch, dropout_key, constants) -> (loss_sum, sums): a weighted *sum*
  over the batch, and the sums the training log is made of;
- count(batch) -> what loss_sum is divided by (examples, target tokens); summed over
  devices (and micro-batches) before dividing, so padding and sharding cannot skew it;
- eval_sums(model, params, batch) -> sums that evaluation adds up over batches and devices;
- report(totals) -> the evaluation report (host numbers); train_report(totals) -> the log
  window's figures;
- selection_metric, higher_is_better: the report entry that picks the kept checkpoint.

`constants` are inputs that are neither trained nor donated (a teacher's parameters);
None for most tasks.
"""
from typing import Any, Protocol

from bigjax.types import Batch, ModelFns


class Task(Protocol):
  name: str
  selection_metric: str
  higher_is_better: bool

  def loss(self, model: ModelFns, params, batch: Batch, dropout_key, constants: Any = None): ...

  def count(self, batch: Batch): ...

  def eval_sums(self, model: ModelFns, params, batch: Batch) -> dict: ...

  def report(self, totals: dict) -> dict: ...

  def train_report(self, totals: dict) -> dict: ...

  def summary(self, report: dict) -> dict: ...
