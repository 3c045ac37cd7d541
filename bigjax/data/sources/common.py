"""What every source shares: the dataset types, examples before validation, and bytes to text.

`Split` and `TextDataset` are what `load_text_dataset` returns; `Part` is one split as a
source read it, with where each example came from, until `splits.finish` checks and
numbers it. The hints are sentences that several sources' error messages end with.
"""

import dataclasses
from typing import Any

import numpy as np

from bigjax.errors import DataError


@dataclasses.dataclass(frozen=True)
class Split:
  texts: list[str]
  labels: np.ndarray  # int32[N]; -1 for unlabelled text


@dataclasses.dataclass(frozen=True)
class TextDataset:
  splits: dict[str, Split]  # 'train', 'dev', 'test'; maybe 'unlabeled'
  num_classes: int
  description: str  # one line: where it came from, how dev/test were made
  label_names: tuple[str, ...] = ()  # name of each class id: the data's own, or '0'..'K-1'


ON_BAD_LINES = ('error', 'skip')  # data.on_bad_lines; experiments checks it early
MIB = 1 << 20
PATH_HINT = ('--config.data.path=/path/to/aclImdb_v1.tar.gz or a folder of '
             'train.txt/dev.txt/test.txt')
SUPPORTED = (
    'supported: the IMDB archive aclImdb_v1.tar.gz (.tar.gz/.tgz) or its '
    'extracted folder (aclImdb/ or a folder holding train/{neg,pos} and '
    'test/{neg,pos}); a folder with train.EXT and optionally '
    'dev.EXT (or valid/validation.EXT) and test.EXT; or one such file, '
    'from which dev and test are carved; EXT is .txt ("LABEL text" lines), '
    '.tsv, .csv (header row) or .jsonl (one JSON object per line)')
_ENCODING_HINT = 'set data.encoding (e.g. --config.data.encoding=latin-1)'


@dataclasses.dataclass
class Part:
  """One split's examples, with where each came from for error messages."""
  texts: list[str]
  labels: list[Any]  # ints; strings in tables until labels.map_string_labels
  source: str  # the file, archive or tfds split the examples came from
  locs: list[Any] | None = None  # per example: line number or member name
  skipped: int = 0  # examples dropped for having no text (on_bad_lines=skip)
  unit: str = 'line'  # what one example is in the source, for messages

  def where(self, i: int) -> str:
    loc = self.locs[i] if self.locs is not None else f'example {i}'
    return f'{self.source}:{loc}'

  def subset(self, idx: np.ndarray) -> 'Part':
    return Part([self.texts[i] for i in idx], [self.labels[i] for i in idx],
                self.source,
                None if self.locs is None else [self.locs[i] for i in idx])


# Bytes to text, for local files and the IMDB archive and folder alike.


def check_line_lengths(data: bytes, source: str, limit: int) -> None:
  """Rejects any line over `limit` bytes (binary files, missing newlines)."""
  if len(data) <= limit:
    return
  start, line = 0, 1
  while start < len(data):
    end = data.find(b'\n', start)
    end = len(data) if end < 0 else end
    if end - start > limit:
      size = end - start
      raise DataError(
          f'{source}:{line}: line is {size} bytes ({size / MIB:.2f} MiB), '
          f'longer than data.max_line_mb={limit // MIB} MiB; is this a text '
          'file with one example per line? If lines really are this long, '
          f'raise the limit (--config.data.max_line_mb={-(-size // MIB)}).')
    start, line = end + 1, line + 1


def decode(data: bytes, source: str, encoding: str) -> str:
  """Decodes `data`, naming file, line and byte when it cannot."""
  try:
    text = data.decode(encoding)
  except UnicodeDecodeError as e:
    line = data.count(b'\n', 0, e.start) + 1
    column = e.start - (data.rfind(b'\n', 0, e.start) + 1) + 1
    bad = data[e.start:e.end]
    raise DataError(
        f'{source}:{line}: byte {bad.hex(" ", 1)} (column {column}) is not '
        f'valid {encoding}; {_ENCODING_HINT}.') from None
  # A byte-order mark would otherwise glue onto the first label or header.
  return text[1:] if text.startswith('\ufeff') else text
