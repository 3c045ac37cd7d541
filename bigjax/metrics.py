"""Metrics from sums, and a writer to metrics.jsonl plus TensorBoard event files."""
import json
import os
import time
from typing import Optional

import numpy as np


def classification_report(confusion: np.ndarray) -> dict:
  """Accuracy, macro-F1 and per-class F1 from a confusion matrix (rows: true, cols: predicted)."""
  confusion = np.asarray(confusion, np.float64)
  total = confusion.sum()
  true_pos = np.diag(confusion)
  precision = np.divide(true_pos, confusion.sum(0), out=np.zeros_like(true_pos), where=confusion.sum(0) > 0)
  recall = np.divide(true_pos, confusion.sum(1), out=np.zeros_like(true_pos), where=confusion.sum(1) > 0)
  denom = precision + recall
  f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
  return {
      'accuracy': float(true_pos.sum() / total) if total else 0.0,
      'macro_f1': float(f1.mean()),
      'f1_per_class': [float(x) for x in f1],
      'confusion': confusion.astype(np.int64).tolist(),
      'examples': int(total),
  }


class MetricWriter:
  """Appends one JSON object per record to metrics.jsonl and scalars to TensorBoard.

  Pass enabled=False on every process but the first of a multi-host job.
  """

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    self._jsonl = None
    self._tb = None
    if enabled:
      self._jsonl = open(os.path.join(workdir, 'metrics.jsonl'), 'a', encoding='utf-8')
      try:
        from tensorboardX import SummaryWriter  # Optional: runs without TensorBoard.
        self._tb = SummaryWriter(os.path.join(workdir, 'tensorboard'))
      except ImportError:
        self._tb = None

  def write(self, step: int, kind: str, scalars: dict, extra: Optional[dict] = None):
    if not self.enabled:
      return
    record = {'step': int(step), 'kind': kind, **{k: float(v) for k, v in scalars.items()}, **(extra or {}),
              'time': round(time.time(), 3)}  # Wall clock: learning curves over time, not only steps.
    self._jsonl.write(json.dumps(record) + '\n')
    self._jsonl.flush()
    if self._tb is not None:
      for name, value in scalars.items():
        self._tb.add_scalar(f'{kind}/{name}', float(value), int(step))
      self._tb.flush()

  def close(self):
    if self._jsonl:
      self._jsonl.close()
    if self._tb is not None:
      self._tb.close()
