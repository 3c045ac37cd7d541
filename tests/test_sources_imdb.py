"""Tests for bigjax.data.sources.imdb: the IMDB archive and its extracted folder."""

import gzip
import time

import numpy as np

from bigjax.data.sources import load_text_dataset
from sources_helpers import _IMDB_FILES, _LONG, _error, _imdb_tar, _shared, _write


# ----------------------------------------------------------------------------
# Real shared data.


def test_imdb_archive_real():
  path = _shared('imdb/aclImdb_v1.tar.gz')
  start = time.perf_counter()
  ds = load_text_dataset(path=str(path))
  seconds = time.perf_counter() - start
  print(f'IMDB archive loaded in {seconds:.1f} s')
  # ~7 s alone on 2 cores; generous because other jobs may share the CPU.
  assert seconds < 60, f'IMDB archive took {seconds:.1f} s'
  sizes = {s: len(v.texts) for s, v in ds.splits.items()}
  assert sizes['train'] + sizes['dev'] == 25000
  assert sizes['dev'] == 2500
  assert sizes['test'] == 25000 and sizes['unlabeled'] == 50000
  train_labels = np.concatenate([ds.splits['train'].labels,
                                 ds.splits['dev'].labels])
  assert np.bincount(train_labels).tolist() == [12500, 12500]
  assert np.bincount(ds.splits['test'].labels).tolist() == [12500, 12500]
  assert (ds.splits['unlabeled'].labels == -1).all()
  assert not any('<br />' in t for t in ds.splits['test'].texts)
  assert ds.num_classes == 2


# ----------------------------------------------------------------------------
# Synthetic IMDB layout.


def _check_tiny_imdb(ds):
  assert ds.num_classes == 2
  # Sorted by member name: neg/0_3, neg/1_1, pos/0_9, pos/10_8, pos/2_7.
  ordered = [('bad  film', 0), ('awful', 0), ('great', 1), ('fine', 1),
             ('good', 1)]
  train = [(t, int(l)) for t, l in zip(ds.splits['train'].texts,
                                       ds.splits['train'].labels)]
  dev = [(t, int(l)) for t, l in zip(ds.splits['dev'].texts,
                                     ds.splits['dev'].labels)]
  assert len(dev) == 1
  assert train == [x for x in ordered if x not in dev]
  assert ds.splits['test'].texts == ['meh', 'wow']
  assert ds.splits['test'].labels.tolist() == [0, 1]
  assert ds.splits['unlabeled'].texts == ['who knows']
  assert ds.splits['unlabeled'].labels.tolist() == [-1]


def test_imdb_tiny_archive(tmp_path):
  path = _imdb_tar(tmp_path / 'aclImdb_v1.tar.gz')
  ds = load_text_dataset(path=str(path), dev_fraction=0.2)
  _check_tiny_imdb(ds)
  assert 'IMDB archive' in ds.description
  # A folder holding the archive finds it too.
  same = load_text_dataset(path=str(tmp_path), dev_fraction=0.2)
  assert same.splits['train'].texts == ds.splits['train'].texts


def test_imdb_tiny_folder(tmp_path):
  for name, text in _IMDB_FILES.items():
    _write(tmp_path / name, text)
  from_tar = load_text_dataset(
      path=str(_imdb_tar(tmp_path / 'x.tgz')), dev_fraction=0.2)
  for path in (tmp_path, tmp_path / 'aclImdb'):
    ds = load_text_dataset(path=str(path), dev_fraction=0.2)
    _check_tiny_imdb(ds)
    for s in ds.splits:
      assert ds.splits[s].texts == from_tar.splits[s].texts


def test_one_megabyte_review_in_imdb_archive(tmp_path):
  path = _imdb_tar(tmp_path / 'aclImdb_v1.tar.gz', {
      **_IMDB_FILES, 'aclImdb/test/pos/1_8.txt': _LONG})
  ds = load_text_dataset(path=str(path), dev_fraction=0.2)
  assert ds.splits['test'].texts == ['meh', 'wow', _LONG]  # by member name


# ----------------------------------------------------------------------------
# Errors: what, where, what to do.


def test_error_not_gzip(tmp_path):
  path = _write(tmp_path / 'aclImdb_v1.tar.gz', b'<html>404 Not Found</html>')
  message = _error(path=str(path))
  assert 'aclImdb_v1.tar.gz' in message and 'not a gzip file' in message
  assert 'download' in message


def test_error_truncated_archive(tmp_path):
  files = {f'aclImdb/train/pos/{i}_9.txt': f'review {i} ' * 50
           for i in range(200)}
  whole = _imdb_tar(tmp_path / 'whole.tar.gz', files).read_bytes()
  path = _write(tmp_path / 'aclImdb_v1.tar.gz', whole[:len(whole) // 2])
  message = _error(path=str(path))
  assert 'aclImdb_v1.tar.gz' in message and 'truncated or corrupt' in message
  assert 'download' in message


def test_error_archive_without_imdb_layout(tmp_path):
  path = _imdb_tar(tmp_path / 'other.tar.gz', {'a/b.txt': 'x'})
  message = _error(path=str(path))
  assert 'other.tar.gz' in message and 'train/neg' in message


def test_error_gzip_that_is_not_tar(tmp_path):
  path = _write(tmp_path / 'x.tar.gz', gzip.compress(b'just text ' * 100))
  assert 'x.tar.gz' in _error(path=str(path))
