"""Metrics from sums, and a writer to metrics.jsonl plus TensorBoard event files."""
import json
import os
import sys
import time
from typing import Optional

import numpy as np

from bigjax import files
from bigjax.errors import DataError


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


def _kept_on_resume(record: dict, step: int) -> bool:
  """Whether a metrics.jsonl record survives a resume from `step`.

  Records of steps after it are replayed (and written again) by the resumed run; the final
  test is written again when the run ends.
  """
  return record.get('step', 0) < step or (record.get('step') == step and record.get('kind') != 'test')


def _records(path: str, text: str) -> list:
  """(line, record) of each record in metrics.jsonl's text; a DataError naming the line for a
  damaged one.

  Only the last line may be partial: a run killed mid-write (SIGKILL) leaves it without its
  newline, and that is expected, so it is dropped. Every other line was complete when
  written, and start() rewrites the file (atomically) before a resumed run appends to it, so
  an unreadable line before the last is damage from elsewhere (a bad copy): an error, rather
  than records silently lost from the history.
  """
  lines = text.split('\n')
  records = []
  for number, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      record, problem = json.loads(line), ''
    except json.JSONDecodeError as e:
      record, problem = None, f'not valid JSON (column {e.colno}: {e.msg})'
    if not problem and not isinstance(record, dict):
      problem = f'{files.json_type(record)} where the run writes an object'
    if problem and number == len(lines):  # No newline after it: the partial last line of a killed run.
      continue
    if problem:
      raise DataError(f'{path}:{number}: {problem}; {files.COPY_AGAIN}, or delete that line to resume without it')
    records.append((line, record))
  return records


class MetricWriter:
  """Appends one JSON object per record to metrics.jsonl and scalars to TensorBoard.

  `start(step)` opens both for a run that starts (or resumes) at `step`, first removing
  what a previous attempt wrote past it, so that after any number of resumes the file holds
  each step once and every line parses. Pass enabled=False on every process but the first
  of a multi-host job.
  """

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    self._workdir = workdir
    self._jsonl = None
    self._tb = None

  def start(self, step: int) -> None:
    if not self.enabled:
      return
    path = os.path.join(self._workdir, 'metrics.jsonl')
    if os.path.exists(path):
      with open(path, encoding='utf-8', errors='replace') as f:
        records = _records(path, f.read())  # Checked before anything is rewritten.
      kept = [line for line, record in records if _kept_on_resume(record, step)]
      with open(path + '.tmp', 'w', encoding='utf-8') as f:
        f.write(''.join(line + '\n' for line in kept))
      os.replace(path + '.tmp', path)
    self._jsonl = open(path, 'a', encoding='utf-8')
    try:
      summary_writer = _tensorboardx_writer()  # Optional: runs without TensorBoard.
      # purge_step: TensorBoard hides the events a previous attempt wrote past `step`.
      self._tb = summary_writer(os.path.join(self._workdir, 'tensorboard'), purge_step=step + 1 if step else None)
    except ImportError:
      self._tb = None

  def write(self, step: int, kind: str, scalars: dict, extra: Optional[dict] = None):
    if not self.enabled:
      return
    if self._jsonl is None:
      raise RuntimeError('MetricWriter.start(step) must come before write()')
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


def _tensorboardx_writer():
  """tensorboardX's SummaryWriter, imported without torch.

  Where torch is installed, tensorboardX imports it at import time, only so that its writers
  accept torch tensors (2.4 s before a run's first step on the 2-core machine); these writes
  are Python floats. Its functions that need torch (graphs, ONNX) import it themselves later.
  """
  if 'torch' in sys.modules or 'tensorboardX.writer' in sys.modules:
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    return SummaryWriter
  sys.modules['torch'] = None  # `import torch` raises ImportError while this is set.
  try:
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
  finally:
    del sys.modules['torch']
  return SummaryWriter
