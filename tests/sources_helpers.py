"""What the tests of bigjax.data.sources share: the shared corpora, files to write, one error.

Not a test module (pytest collects test_*.py); the tests import it from tests/. The names
keep the underscore they had when every source test was one file, so the tests read as
they did.
"""

import collections
import io
import tarfile
from pathlib import Path

import pytest

from bigjax.data.sources import load_text_dataset
from bigjax.errors import DataError

SHARED = Path(__file__).resolve().parents[1].parent / 'shared' / 'data'


def _shared(relative: str) -> Path:
  path = SHARED / relative
  if not path.exists():
    pytest.skip(f'shared data {path} is not on this machine')
  return path


def _write(path: Path, content) -> Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  if isinstance(content, str):
    content = content.encode('utf-8')
  path.write_bytes(content)
  return path


def _lines(n: int, k: int = 2) -> str:
  return ''.join(f'{i % k} sentence number {i}\n' for i in range(n))


def _all_texts(ds) -> collections.Counter:
  return collections.Counter(t for s in ('train', 'dev', 'test')
                             for t in ds.splits[s].texts)


def _error(**kwargs) -> str:
  with pytest.raises(DataError) as info:
    load_text_dataset(**kwargs)
  return str(info.value)


# ----------------------------------------------------------------------------
# A synthetic IMDB layout, as an archive.


_IMDB_FILES = {
    'aclImdb/README': 'not a review',
    'aclImdb/train/neg/0_3.txt': 'bad<br /><br />film',
    'aclImdb/train/neg/1_1.txt': 'awful',
    'aclImdb/train/pos/0_9.txt': 'great',
    'aclImdb/train/pos/10_8.txt': 'fine',
    'aclImdb/train/pos/2_7.txt': 'good',
    'aclImdb/train/unsup/0_0.txt': 'who knows',
    'aclImdb/train/unsup/cleaning.py': 'print()',
    'aclImdb/test/neg/0_2.txt': 'meh',
    'aclImdb/test/pos/0_10.txt': 'wow',
}


def _imdb_tar(path: Path, files=_IMDB_FILES) -> Path:
  with tarfile.open(path, 'w:gz') as tar:
    for name in reversed(list(files)):  # not sorted: the reader must sort
      data = files[name].encode('utf-8')
      info = tarfile.TarInfo(name)
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))
  return path


# ----------------------------------------------------------------------------
# A long document: one ~1.1 MB line.


_LONG = ' '.join(f'word{i % 1000}' for i in range(130_000))  # ~1.1 MB
