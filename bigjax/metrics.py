"""Metrics from sums, and a writer to metrics.jsonl plus TensorBoard event files."""
import io
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from typing import Optional

from etils import epath
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

  In a bucket (a gs:// workdir) an object cannot be appended to, only written whole. The
  writer keeps the file's text and uploads all of it at each record: one small object that
  every reader reads as it reads a local one, and never half a line (an object shows only
  once complete), for one upload per record (a few hundred KB for a long run's file). GCS
  takes about one write per second to an object; faster records are retried by its client,
  slowing the loop, so log no more often than that. TensorBoard's event files are written
  in a local temporary folder and copied to the bucket's tensorboard/ after each record
  (tensorboardX writes gs:// only through google-cloud-storage, not epath).
  """

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    self._workdir = workdir
    self._jsonl = None  # The local file, appended to.
    self._text = None  # In a bucket: the file's text, uploaded whole.
    self._tb = None
    self._tb_local = None  # In a bucket: the local folder the event files are written in.

  def start(self, step: int) -> None:
    if not self.enabled:
      return
    path = os.path.join(self._workdir, 'metrics.jsonl')
    in_bucket = files.is_url(path)
    kept = []
    if epath.Path(path).exists():
      # Decoded as a local file in text mode reads it (universal newlines, bad bytes replaced).
      text = io.TextIOWrapper(io.BytesIO(epath.Path(path).read_bytes()), encoding='utf-8', errors='replace').read()
      records = _records(path, text)  # Checked before anything is rewritten.
      kept = [line for line, record in records if _kept_on_resume(record, step)]
      if not in_bucket:
        files.write_text(path, ''.join(line + '\n' for line in kept))
    if in_bucket:
      self._text = ''.join(line + '\n' for line in kept)  # Uploaded with the first record.
    else:
      self._jsonl = open(path, 'a', encoding='utf-8')
    try:
      summary_writer = _tensorboardx_writer()  # Optional: runs without TensorBoard.
      folder = os.path.join(self._workdir, 'tensorboard')
      if in_bucket:
        self._tb_local = tempfile.mkdtemp(prefix='bigjax-tensorboard-')
      # purge_step: TensorBoard hides the events a previous attempt wrote past `step`. The file is
      # named by the second the writer opens in and the host; the suffix keeps an attempt that
      # resumes within the same second (or a bucket's copy of it) from writing over the last one's.
      self._tb = summary_writer(self._tb_local or folder, purge_step=step + 1 if step else None,
                                filename_suffix=f'.{os.getpid()}.{time.monotonic_ns()}')
    except ImportError:
      self._tb = None

  def write(self, step: int, kind: str, scalars: dict, extra: Optional[dict] = None):
    if not self.enabled:
      return
    if self._jsonl is None and self._text is None:
      raise RuntimeError('MetricWriter.start(step) must come before write()')
    record = {'step': int(step), 'kind': kind, **{k: float(v) for k, v in scalars.items()}, **(extra or {}),
              'time': round(time.time(), 3)}  # Wall clock: learning curves over time, not only steps.
    if self._jsonl is not None:
      self._jsonl.write(json.dumps(record) + '\n')
      self._jsonl.flush()
    else:
      self._text += json.dumps(record) + '\n'
      files.write_text(os.path.join(self._workdir, 'metrics.jsonl'), self._text)
    if self._tb is not None:
      for name, value in scalars.items():
        self._tb.add_scalar(f'{kind}/{name}', float(value), int(step))
      self._tb.flush()
      self._upload_events()

  def _upload_events(self) -> None:
    """In a bucket: the local event files, copied whole over their copies in tensorboard/."""
    if self._tb_local is None:
      return
    folder = epath.Path(self._workdir) / 'tensorboard'
    for name in os.listdir(self._tb_local):
      (folder / name).write_bytes(epath.Path(self._tb_local, name).read_bytes())

  def close(self):
    if self._jsonl:
      self._jsonl.close()
    if self._tb is not None:
      self._tb.close()
      try:
        self._upload_events()  # What close() flushed last.
      except OSError as e:  # close() runs on error paths too: the error on its way matters more.
        logging.warning('could not copy the TensorBoard events to %s/tensorboard: %s', self._workdir, e)
      self._tb = None
    if self._tb_local is not None:
      shutil.rmtree(self._tb_local, ignore_errors=True)
      self._tb_local = None


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
