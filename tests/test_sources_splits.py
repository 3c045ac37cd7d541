"""Tests for bigjax.data.sources.splits: dev and test carved from train by a seeded permutation."""

import collections

import numpy as np

from bigjax.data.sources import load_text_dataset
from sources_helpers import _all_texts, _error, _lines, _shared, _write


def test_mr_latin1_seeded_split():
  path = _shared('mr/all.txt')
  ds = load_text_dataset(path=str(path), encoding='latin-1')
  sizes = {s: len(v.texts) for s, v in ds.splits.items()}
  assert sizes == {'train': 8530, 'dev': 1066, 'test': 1066}
  assert sum(sizes.values()) == 10662
  labels = np.concatenate([v.labels for v in ds.splits.values()])
  assert np.bincount(labels).tolist() == [5331, 5331]
  # The splits partition the file: together they are exactly its examples.
  raw = path.read_bytes().decode('latin-1').split('\n')
  expected = collections.Counter(l.split(None, 1)[1].strip() for l in raw
                                 if l.strip())
  assert _all_texts(ds) == expected
  again = load_text_dataset(path=str(path), encoding='latin-1')
  for s in ds.splits:
    assert again.splits[s].texts == ds.splits[s].texts
    np.testing.assert_array_equal(again.splits[s].labels, ds.splits[s].labels)
  other = load_text_dataset(path=str(path), encoding='latin-1', seed=1)
  assert other.splits['test'].texts != ds.splits['test'].texts
  assert 'seed 0' in ds.description and 'all.txt' in ds.description


def test_folder_validation_name_and_missing_test(tmp_path):
  _write(tmp_path / 'train.txt', _lines(40))
  _write(tmp_path / 'validation.txt', '1 dev one\n0 dev two\n')
  ds = load_text_dataset(path=str(tmp_path), test_fraction=0.25)
  assert ds.splits['dev'].texts == ['dev one', 'dev two']
  assert len(ds.splits['test'].texts) == 10
  assert len(ds.splits['train'].texts) == 30
  assert 'test 25% carved from train' in ds.description


def test_folder_with_train_only_carves_both(tmp_path):
  _write(tmp_path / 'train.txt', _lines(100))
  ds = load_text_dataset(path=str(tmp_path))
  assert [len(ds.splits[s].texts) for s in ('train', 'dev', 'test')] == [
      80, 10, 10]


def test_single_file_carve(tmp_path):
  path = _write(tmp_path / 'data.txt', _lines(200))
  ds = load_text_dataset(path=str(path), dev_fraction=0.2, test_fraction=0.1)
  sizes = [len(ds.splits[s].texts) for s in ('train', 'dev', 'test')]
  assert sizes == [140, 40, 20]
  assert _all_texts(ds) == collections.Counter(
      f'sentence number {i}' for i in range(200))
  # Each split keeps file order, and labels follow their texts.
  for split in ds.splits.values():
    numbers = [int(t.rsplit(' ', 1)[1]) for t in split.texts]
    assert numbers == sorted(numbers)
    assert split.labels.tolist() == [n % 2 for n in numbers]
  same = load_text_dataset(path=str(path), dev_fraction=0.2,
                           test_fraction=0.1)
  assert same.splits['test'].texts == ds.splits['test'].texts
  other = load_text_dataset(path=str(path), dev_fraction=0.2,
                            test_fraction=0.1, seed=7)
  assert other.splits['test'].texts != ds.splits['test'].texts


def test_error_bad_fractions(tmp_path):
  path = str(_write(tmp_path / 'a.txt', _lines(20)))
  assert 'dev_fraction' in _error(path=path, dev_fraction=0.0)
  assert 'test_fraction' in _error(path=path, test_fraction=1.5)
  assert 'sum' in _error(path=path, dev_fraction=0.5, test_fraction=0.5)
  tiny = str(_write(tmp_path / 'b.txt', '0 a\n1 b\n'))
  assert 'too few' in _error(path=tiny)
