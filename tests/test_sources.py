"""Tests for bigjax.data.sources: local formats, IMDB, tfds, DataErrors."""

import collections
import csv
import gzip
import io
import json
import socket
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

from bigjax.data import sources
from bigjax.data.sources import load_text_dataset
from bigjax.errors import DataError

SHARED = Path(__file__).resolve().parents[1].parent / 'shared' / 'data'
_MIB = 1 << 20


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
# Real shared data.


def test_sst2_folder_exact_counts():
  ds = load_text_dataset(path=str(_shared('sst2')))
  assert set(ds.splits) == {'train', 'dev', 'test'}
  sizes = {s: len(v.texts) for s, v in ds.splits.items()}
  assert sizes == {'train': 6920, 'dev': 872, 'test': 1821}
  assert ds.num_classes == 2
  for split, counts in (('train', [3310, 3610]), ('dev', [428, 444]),
                        ('test', [912, 909])):
    labels = ds.splits[split].labels
    assert labels.dtype == np.int32 and labels.shape == (sizes[split],)
    assert np.bincount(labels).tolist() == counts
  first = ds.splits['train']
  assert first.texts[0].startswith('a stirring , funny')  # label cut off
  # The non-breaking spaces stay inside the text (split is on the label's
  # ASCII space only).
  nbsp = [t for t in first.texts if '\xa0' in t]
  assert len(nbsp) == 3 and all('\xa01\\/2' in t for t in nbsp)
  assert all(t == t.strip() for t in first.texts)
  assert 'sst2' in ds.description and '\n' not in ds.description


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


def test_mr_as_utf8_names_file_line_and_fix():
  message = _error(path=str(_shared('mr/all.txt')))
  assert 'all.txt:32:' in message  # first non-UTF-8 byte is on line 32
  assert 'e9' in message and 'utf-8' in message
  assert '--config.data.encoding=latin-1' in message


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
# Synthetic local formats.


def test_multiclass_folder(tmp_path):
  _write(tmp_path / 'train.txt', _lines(50, k=5))
  _write(tmp_path / 'dev.txt', '4 last class\n\n0 first class\n')
  _write(tmp_path / 'test.txt', '2 middle\r\n3 fourth\r\n')
  ds = load_text_dataset(path=str(tmp_path))
  assert ds.num_classes == 5
  assert ds.splits['train'].labels.tolist() == [i % 5 for i in range(50)]
  assert ds.splits['train'].texts[7] == 'sentence number 7'
  assert ds.splits['dev'].texts == ['last class', 'first class']
  assert ds.splits['dev'].labels.tolist() == [4, 0]
  assert ds.splits['test'].texts == ['middle', 'fourth']  # \r stripped
  assert ds.splits['test'].labels.tolist() == [2, 3]


def test_num_classes_given_larger_than_data(tmp_path):
  _write(tmp_path / 'all.txt', _lines(30, k=2))
  ds = load_text_dataset(path=str(tmp_path / 'all.txt'), num_classes=4)
  assert ds.num_classes == 4


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


def test_tsv_file(tmp_path):
  path = _write(tmp_path / 'data.tsv',
                'sentence\tlabel\n'
                'it \'s "great\t1\n'  # stray quote, as in GLUE
                + ''.join(f'text {i}\t{i % 3}\n' for i in range(20)))
  ds = load_text_dataset(path=str(path), text_column='sentence')
  assert ds.num_classes == 3
  texts = _all_texts(ds)
  assert texts['it \'s "great'] == 1
  assert sum(texts.values()) == 21


def test_csv_string_labels(tmp_path):
  _write(tmp_path / 'train.csv',
         'id,text,label\n'
         '1,"hello, world",pos\n'
         '2,"two\nlines",neg\n'
         '3,plain,pos\n')
  _write(tmp_path / 'dev.csv', 'text,label,id\nok,neg,4\n')
  _write(tmp_path / 'test.csv', 'label,text\npos,fine\n')
  ds = load_text_dataset(path=str(tmp_path))
  assert ds.splits['train'].texts == ['hello, world', 'two\nlines', 'plain']
  assert ds.splits['train'].labels.tolist() == [1, 0, 1]  # neg=0, pos=1
  assert ds.splits['dev'].labels.tolist() == [0]
  assert ds.splits['test'].labels.tolist() == [1]
  assert ds.num_classes == 2
  assert '0=neg, 1=pos' in ds.description


def test_csv_integer_string_labels(tmp_path):
  path = _write(tmp_path / 'all.csv', '\ufefftext,label\n' + ''.join(
      f'row {i},{i % 4}\n' for i in range(40)))
  ds = load_text_dataset(path=str(path))  # BOM before the header is ignored
  assert ds.num_classes == 4
  assert sum(len(s.texts) for s in ds.splits.values()) == 40


def test_jsonl_folder_string_and_int_labels(tmp_path):
  rows = [{'review': f'r{i}', 'stars': ['bad', 'good', 'ok'][i % 3]}
          for i in range(12)]
  _write(tmp_path / 'train.jsonl', '\n'.join(json.dumps(r) for r in rows))
  _write(tmp_path / 'dev.jsonl', '{"review": "d", "stars": "ok"}\n\n')
  _write(tmp_path / 'test.jsonl', '{"review": "t", "stars": "bad"}\n')
  ds = load_text_dataset(path=str(tmp_path), text_column='review',
                         label_column='stars')
  assert ds.num_classes == 3
  assert ds.splits['train'].labels.tolist() == [i % 3 for i in range(12)]
  assert ds.splits['dev'].labels.tolist() == [2]
  assert '0=bad, 1=good, 2=ok' in ds.description

  single = _write(tmp_path / 'one' / 'all.jsonl', ''.join(
      json.dumps({'text': f'x{i}', 'label': i % 2}) + '\n'
      for i in range(30)))
  ds = load_text_dataset(path=str(single))
  assert ds.num_classes == 2
  assert sum(len(s.texts) for s in ds.splits.values()) == 30


# ----------------------------------------------------------------------------
# Synthetic IMDB layout.

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


# ----------------------------------------------------------------------------
# tensorflow-datasets (mocked: no download, no TensorFlow).

tfds = pytest.importorskip('tensorflow_datasets')


@pytest.fixture
def online(monkeypatch):
  # mock_data makes download_and_prepare a no-op but leaves is_prepared()
  # False, so the loader must believe it is online to go on to read.
  monkeypatch.setattr(sources, '_network_available', lambda *a, **k: True)


def test_tfds_imdb_reviews_mock(online):
  with tfds.testing.mock_data(num_examples=20):
    ds = load_text_dataset(name='imdb_reviews')
  assert ds.num_classes == 2
  assert {'train', 'dev', 'test', 'unlabeled'} <= set(ds.splits)
  for split in ds.splits.values():
    assert split.texts and all(isinstance(t, str) for t in split.texts)
    assert split.labels.dtype == np.int32
  assert set(ds.splits['train'].labels.tolist()) <= {0, 1}
  assert (ds.splits['unlabeled'].labels == -1).all()
  assert 'tfds imdb_reviews' in ds.description


def test_tfds_glue_sst2_mock(online):
  # glue is an older builder that tfds does not register without TensorFlow
  # unless its package is imported; the loader must do that.
  with tfds.testing.mock_data(num_examples=15):
    ds = load_text_dataset(name='glue/sst2')
  # Mocked builders have no split metadata, so the loader asks for the usual
  # tfds split names (and also gets a fake 'unsupervised' one).
  assert ds.num_classes == 2
  assert all(len(ds.splits[s].texts) == 15 for s in ('train', 'dev', 'test'))
  assert 'negative' in ds.description  # ClassLabel names


def test_tfds_unlabelled_test_split_is_replaced(online):
  # As in real glue/sst2, test labels are all -1: validation becomes test and
  # dev is carved from train.
  sizes = {'train': 40, 'validation': 8, 'test': 9, 'unsupervised': 3}

  def fake_source(self, split, **kwargs):
    del self, kwargs
    unlabelled = split in ('test', 'unsupervised')
    return [{'sentence': f'{split} {i}'.encode(),
             'label': np.array(-1 if unlabelled else i % 2), 'idx': i}
            for i in range(sizes[split])]

  with tfds.testing.mock_data(as_data_source_fn=fake_source):
    ds = load_text_dataset(name='glue/sst2', dev_fraction=0.25)
  assert ds.splits['test'].texts == [f'validation {i}' for i in range(8)]
  assert len(ds.splits['dev'].texts) == 10
  assert len(ds.splits['train'].texts) == 30
  assert all(t.startswith('train ') for t in ds.splits['dev'].texts)
  assert ds.splits['unlabeled'].texts == ['unsupervised 0', 'unsupervised 1',
                                          'unsupervised 2']
  assert 'test = tfds validation' in ds.description


class BigjaxTinyReviews(tfds.core.GeneratorBasedBuilder):
  """A real builder, prepared offline, to read real ArrayRecord files."""

  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    # dataset_info_from_configs needs a package; this module is not one.
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict({
            'sentence': tfds.features.Text(),
            'label': tfds.features.ClassLabel(names=['bad', 'meh', 'good']),
            'idx': np.int32,
        }))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {s: self._generate_examples(s, n)
            for s, n in (('train', 30), ('validation', 6), ('test', 5))}

  def _generate_examples(self, split, n):
    for i in range(n):
      label = -1 if split == 'test' else i % 3  # test hidden, as in GLUE
      yield i, {'sentence': f'{split} {i} caf\u00e9', 'label': label,
                'idx': i}


def test_tfds_prepared_array_record(tmp_path, monkeypatch):
  BigjaxTinyReviews(data_dir=str(tmp_path)).download_and_prepare(
      file_format='array_record')
  # Prepared: the loader must not even probe the network.
  monkeypatch.setattr(sources, '_network_available', None)
  ds = load_text_dataset(name='bigjax_tiny_reviews', data_dir=str(tmp_path))
  assert ds.num_classes == 3
  assert set(ds.splits) == {'train', 'dev', 'test'}
  assert sorted(ds.splits['test'].texts) == sorted(
      f'validation {i} caf\u00e9' for i in range(6))
  train, dev = ds.splits['train'], ds.splits['dev']
  assert len(dev.texts) == 3 and len(train.texts) == 27
  assert all(t.startswith('train ') for t in train.texts + dev.texts)
  assert [int(t.split()[1]) % 3 for t in train.texts] == train.labels.tolist()
  assert '0=bad, 1=meh, 2=good' in ds.description
  assert 'test = tfds validation' in ds.description


def test_tfds_not_prepared_offline_fails_fast(tmp_path, monkeypatch):
  monkeypatch.setattr(sources, '_network_available', lambda *a, **k: False)
  start = time.perf_counter()
  message = _error(name='imdb_reviews', data_dir=str(tmp_path))
  assert time.perf_counter() - start < 10
  assert 'not prepared' in message and str(tmp_path) in message
  assert 'no network' in message
  assert '--config.data.path=/path/to/aclImdb_v1.tar.gz' in message


def test_tfds_unknown_name_suggests_close_matches():
  message = _error(name='imdb_review')
  assert 'imdb_review' in message and 'imdb_reviews' in message
  message = _error(name='glue/sst3')
  assert 'glue/sst2' in message


def test_tfds_without_text_and_label_features():
  message = _error(name='mnist')
  assert 'Text' in message and 'image' in message


def test_network_probe_is_quick():
  server = socket.socket()
  server.bind(('127.0.0.1', 0))
  server.listen(1)
  port = server.getsockname()[1]
  try:
    assert sources._network_available(('127.0.0.1', port), timeout=1)
  finally:
    server.close()
  start = time.perf_counter()
  assert not sources._network_available(('127.0.0.1', port), timeout=1)
  assert time.perf_counter() - start < 2


# ----------------------------------------------------------------------------
# Errors: what, where, what to do.


def test_error_nothing_given():
  message = _error()
  assert 'data.path' in message and 'data.name' in message


def test_error_missing_path(tmp_path):
  message = _error(path=str(tmp_path / 'nope.txt'))
  assert 'nope.txt' in message and 'does not exist' in message
  assert 'supported' in message


def test_error_empty_file(tmp_path):
  message = _error(path=str(_write(tmp_path / 'e.txt', b'')))
  assert 'e.txt' in message and 'empty file' in message


def test_error_empty_split(tmp_path):
  _write(tmp_path / 'train.txt', _lines(10))
  _write(tmp_path / 'dev.txt', '\n  \n\n')
  message = _error(path=str(tmp_path))
  assert 'dev.txt' in message and 'no examples' in message


def test_error_header_only_csv(tmp_path):
  message = _error(path=str(_write(tmp_path / 'a.csv', 'text,label\n')))
  assert 'a.csv' in message and 'no examples' in message


def test_error_non_integer_label(tmp_path):
  path = _write(tmp_path / 'all.txt', '1 fine\n0 also fine\npos not fine\n')
  message = _error(path=str(path))
  assert 'all.txt:3:' in message and "'pos'" in message
  assert 'LABEL text' in message


def test_error_label_without_text(tmp_path):
  message = _error(path=str(_write(tmp_path / 'a.txt', '1 ok\n0\n')))
  assert 'a.txt:2:' in message and 'no text' in message


def test_error_label_out_of_range(tmp_path):
  _write(tmp_path / 'train.txt', _lines(10))
  _write(tmp_path / 'test.txt', '0 a\n1 b\n3 c\n')
  message = _error(path=str(tmp_path), num_classes=2)
  assert 'test.txt:3:' in message and '[0, 2)' in message
  assert 'num_classes' in message
  _write(tmp_path / 'test.txt', '-1 negative\n')
  message = _error(path=str(tmp_path))
  assert 'test.txt:1:' in message and 'label -1' in message


def test_error_single_class(tmp_path):
  message = _error(path=str(_write(tmp_path / 'a.txt', '0 a\n' * 20)))
  assert '1 class' in message and 'label_column' in message


def test_error_line_over_the_limit(tmp_path):
  # The limit only guards memory; its message names the key that sets it.
  long_line = '1 ' + 'x' * (_MIB + _MIB // 10) + '\n'
  path = _write(tmp_path / 'big.txt', '0 short\n' + long_line + '0 ok\n')
  message = _error(path=str(path), max_line_mb=1)
  assert 'big.txt:2:' in message and 'longer than data.max_line_mb=1 MiB' in message
  assert '--config.data.max_line_mb=2' in message
  archive = _imdb_tar(tmp_path / 'aclImdb_v1.tar.gz', {
      **_IMDB_FILES, 'aclImdb/train/pos/3_9.txt': long_line})
  message = _error(path=str(archive), max_line_mb=1)
  assert 'train/pos/3_9.txt:1:' in message and 'data.max_line_mb=1' in message
  assert 'max_line_mb=0 must be >= 1' in _error(path=str(path), max_line_mb=0)


def test_error_undecodable_bytes(tmp_path):
  path = _write(tmp_path / 'bad.tsv',
                b'text\tlabel\nok\t1\ncaf\xe9\t0\n' + b'fine\t1\n' * 20)
  message = _error(path=str(path))
  assert 'bad.tsv:3:' in message and 'e9' in message
  assert 'data.encoding' in message and 'latin-1' in message
  assert 'caf\xe9' in str(_all_texts(load_text_dataset(
      path=str(path), encoding='latin-1')))


def test_error_unknown_encoding(tmp_path):
  path = _write(tmp_path / 'a.txt', _lines(10))
  assert 'klingon' in _error(path=str(path), encoding='klingon')


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


def test_error_missing_column(tmp_path):
  path = _write(tmp_path / 'a.tsv', 'sentence\tlabel\nhi\t1\n')
  message = _error(path=str(path))
  assert 'a.tsv' in message and "'text'" in message
  assert "'sentence', 'label'" in message and 'data.text_column' in message
  path = _write(tmp_path / 'b.csv', 'text,y\nhi,1\n')
  message = _error(path=str(path))
  assert 'b.csv' in message and "'label'" in message and "'y'" in message


def test_error_csv_row_width(tmp_path):
  path = _write(tmp_path / 'a.csv', 'text,label\nhi,1\nto,o,many\n')
  message = _error(path=str(path))
  assert 'a.csv:3:' in message and '3 fields' in message


def test_error_bad_json_line(tmp_path):
  path = _write(tmp_path / 'a.jsonl',
                '{"text": "ok", "label": 1}\n{"text": "broken", \n')
  message = _error(path=str(path))
  assert 'a.jsonl:2:' in message and 'bad JSON' in message
  path = _write(tmp_path / 'b.jsonl', '{"txt": "ok", "label": 1}\n')
  message = _error(path=str(path))
  assert 'b.jsonl:1:' in message and "'txt'" in message
  path = _write(tmp_path / 'c.jsonl', '{"text": "ok", "label": null}\n')
  assert 'c.jsonl:1:' in _error(path=str(path))


def test_error_string_label_not_in_train(tmp_path):
  _write(tmp_path / 'train.csv', 'text,label\na,pos\nb,neg\n')
  _write(tmp_path / 'test.csv', 'text,label\nc,neutral\n')
  message = _error(path=str(tmp_path))
  assert 'test.csv:2:' in message and "'neutral'" in message
  assert "['neg', 'pos']" in message


def test_error_unknown_format(tmp_path):
  message = _error(path=str(_write(tmp_path / 'd.parquet', b'PAR1')))
  assert 'd.parquet' in message and 'supported' in message
  assert '.jsonl' in message and 'aclImdb' in message
  (tmp_path / 'empty_dir').mkdir()
  message = _error(path=str(tmp_path / 'empty_dir'))
  assert 'empty_dir' in message and 'supported' in message


def test_error_mixed_split_formats(tmp_path):
  _write(tmp_path / 'train.txt', _lines(10))
  _write(tmp_path / 'dev.csv', 'text,label\na,1\n')
  assert 'dev.csv' in _error(path=str(tmp_path))


def test_error_bad_fractions(tmp_path):
  path = str(_write(tmp_path / 'a.txt', _lines(20)))
  assert 'dev_fraction' in _error(path=path, dev_fraction=0.0)
  assert 'test_fraction' in _error(path=path, test_fraction=1.5)
  assert 'sum' in _error(path=path, dev_fraction=0.5, test_fraction=0.5)
  tiny = str(_write(tmp_path / 'b.txt', '0 a\n1 b\n'))
  assert 'too few' in _error(path=tiny)


# ----------------------------------------------------------------------------
# Labels: a class needs training examples, unless data.num_classes declares it.


@pytest.mark.parametrize('split', ['dev', 'test'])
def test_error_label_not_in_train(tmp_path, split):
  _write(tmp_path / 'train.txt', _lines(20))
  _write(tmp_path / 'dev.txt', '0 a\n1 b\n')
  _write(tmp_path / 'test.txt', '0 a\n1 b\n')
  _write(tmp_path / f'{split}.txt', '0 a\n7 seven\n1 b\n')
  message = _error(path=str(tmp_path))
  assert f'{split}.txt:2: label 7 does not occur in train' in message
  assert 'train.txt' in message and 'labels are 0, 1;' in message
  assert '--config.data.num_classes=8' in message
  # Declared classes may lack training examples; the range still holds.
  ds = load_text_dataset(path=str(tmp_path), num_classes=8)
  assert ds.num_classes == 8 and 7 in ds.splits[split].labels.tolist()
  message = _error(path=str(tmp_path), num_classes=5)
  assert f'{split}.txt:2:' in message and 'out of range [0, 5)' in message


def test_error_label_not_in_train_jsonl(tmp_path):
  _write(tmp_path / 'train.jsonl', ''.join(
      json.dumps({'text': f't{i}', 'label': i % 2}) + '\n' for i in range(10)))
  _write(tmp_path / 'dev.jsonl', '{"text": "d", "label": 2}\n')
  message = _error(path=str(tmp_path))
  assert 'dev.jsonl:1: label 2 does not occur in train' in message


def test_error_class_missing_in_train(tmp_path):
  # K is inferred as max label + 1 = 4, but no training example has label 2.
  _write(tmp_path / 'train.txt', '0 a\n1 b\n3 c\n1 d\n3 e\n0 f\n')
  _write(tmp_path / 'dev.txt', '0 a\n')
  _write(tmp_path / 'test.txt', '1 b\n')
  message = _error(path=str(tmp_path))
  assert 'train.txt:3: label 3 makes 4 classes' in message
  assert 'only 3 of them (labels 0, 1, 3)' in message
  assert '--config.data.num_classes=4' in message
  ds = load_text_dataset(path=str(tmp_path), num_classes=4)
  assert ds.num_classes == 4
  assert ds.splits['train'].labels.tolist() == [0, 1, 3, 1, 3, 0]


@pytest.mark.parametrize('label', ['1000000', '99999999999', '9' * 30,
                                   '9' * 5000])
def test_error_implausible_label(tmp_path, label):
  # Refused before anything is sized by K, and before int64/int32 overflow.
  path = _write(tmp_path / 'train.txt', f'0 a\n1 b\n{label} c\n' + _lines(20))
  message = _error(path=str(path))
  assert 'train.txt:3:' in message
  assert 'implausibl' in message or 'not a plausible class id' in message
  assert len(message) < 400  # a 5000-digit label is shown cut


def test_error_implausible_label_in_tables(tmp_path):
  rows = ''.join(f'row {i},{i % 2}\n' for i in range(10))
  path = _write(tmp_path / 'a.csv', f'text,label\n{rows}huge,{"9" * 40}\n')
  assert 'a.csv:12:' in _error(path=str(path))
  lines = [json.dumps({'text': f'r{i}', 'label': i % 2}) for i in range(10)]
  for label in ('1' + '0' * 30, '1e30', '9' * 5000):
    path = _write(tmp_path / 'a.jsonl', '\n'.join(
        lines + [f'{{"text": "huge", "label": {label}}}']))
    assert 'a.jsonl:11:' in _error(path=str(path))


# ----------------------------------------------------------------------------
# Long documents are ordinary input.

_LONG = ' '.join(f'word{i % 1000}' for i in range(130_000))  # ~1.1 MB


def _long_files(folder: Path, ext: str) -> Path:
  """A train file in `ext` whose third example is one ~1.1 MB line."""
  texts = ['short one', 'short two', _LONG] + [f'text {i}' for i in range(9)]
  if ext == '.txt':
    body = ''.join(f'{i % 2} {t}\n' for i, t in enumerate(texts))
  elif ext == '.jsonl':
    body = ''.join(json.dumps({'text': t, 'label': i % 2}) + '\n'
                   for i, t in enumerate(texts))
  else:
    sep = '\t' if ext == '.tsv' else ','
    body = f'text{sep}label\n' + ''.join(
        f'{t}{sep}{i % 2}\n' for i, t in enumerate(texts))
  return _write(folder / f'all{ext}', body)


@pytest.mark.parametrize('ext', ['.txt', '.csv', '.tsv', '.jsonl'])
def test_one_megabyte_line_loads(tmp_path, ext):
  limit = csv.field_size_limit()
  ds = load_text_dataset(path=str(_long_files(tmp_path, ext)))
  assert _all_texts(ds)[_LONG] == 1
  assert sum(len(s.texts) for s in ds.splits.values()) == 12
  # csv's field size limit is process-wide: raised only while parsing.
  assert csv.field_size_limit() == limit


def test_csv_field_size_limit_restored_after_an_error(tmp_path):
  limit = csv.field_size_limit()
  path = _write(tmp_path / 'a.csv', 'text,label\n"' + 'x' * 200_000 + ',1\n')
  assert 'a.csv' in _error(path=str(path))  # an unclosed quote
  assert csv.field_size_limit() == limit


def test_one_megabyte_review_in_imdb_archive(tmp_path):
  path = _imdb_tar(tmp_path / 'aclImdb_v1.tar.gz', {
      **_IMDB_FILES, 'aclImdb/test/pos/1_8.txt': _LONG})
  ds = load_text_dataset(path=str(path), dev_fraction=0.2)
  assert ds.splits['test'].texts == ['meh', 'wow', _LONG]  # by member name


def test_one_megabyte_line_trains(tmp_path):
  # The whole path: tokenizer training, truncation to max_len, batching.
  from bigjax import training  # pylint: disable=g-import-not-at-top
  from bigjax.data import from_config  # pylint: disable=g-import-not-at-top
  from test_train import tiny_config, write_corpus  # pylint: disable=g-import-not-at-top
  data = Path(write_corpus(str(tmp_path / 'data'), sizes=(60, 20, 20)))
  with open(data / 'train.txt', 'a', encoding='utf-8') as f:
    f.write(f'1 {_LONG}\n')
  config = tiny_config(data, **{'train.steps': 2, 'checkpoint.every_steps': 2,
                                'train.log_every_steps': 1})
  assert from_config.load_data(config.data, config.seed).splits['train'].texts[-1] == _LONG
  results = training.run_training(config, str(tmp_path / 'run'))
  assert 'test' in json.dumps(results)


# ----------------------------------------------------------------------------
# data.on_bad_lines: examples that are a label with no text.


_NO_TEXT = {
    '.txt': ('0 good\n1\n1 fine\n0   \n1 great\n', 2),
    '.tsv': ('text\tlabel\ngood\t0\n\t1\nfine\t1\n  \t0\ngreat\t1\n', 3),
    '.csv': ('text,label\ngood,0\n,1\nfine,1\n"  ",0\ngreat,1\n', 3),
    '.jsonl': ('{"text": "good", "label": 0}\n{"text": "", "label": 1}\n'
               '{"text": "fine", "label": 1}\n{"text": " ", "label": 0}\n'
               '{"text": "great", "label": 1}\n', 2),
}


@pytest.mark.parametrize('ext', sorted(_NO_TEXT))
def test_on_bad_lines(tmp_path, ext):
  body, line = _NO_TEXT[ext]
  _write(tmp_path / f'train{ext}', body)
  sep = '\t' if ext == '.tsv' else ','
  good = {'.txt': '0 a\n1 b\n',
          '.jsonl': '{"text": "a", "label": 0}\n'}.get(ext, f'text{sep}label\na{sep}0\n')
  _write(tmp_path / f'dev{ext}', good)
  _write(tmp_path / f'test{ext}', good)
  message = _error(path=str(tmp_path))  # on_bad_lines='error' by default
  assert f'train{ext}:{line}: label 1 has no text' in message
  assert '--config.data.on_bad_lines=skip' in message
  ds = load_text_dataset(path=str(tmp_path), on_bad_lines='skip')
  assert ds.splits['train'].texts == ['good', 'fine', 'great']
  assert ds.splits['train'].labels.tolist() == [0, 1, 1]
  unit = 'rows' if ext in ('.tsv', '.csv') else 'lines'
  assert (f'skipped 2 {unit} with no text in train{ext} '
          '(data.on_bad_lines=skip)') in ds.description
  assert ds.description.count('skipped') == 1  # dev and test had none


def test_on_bad_lines_skip_single_file_and_nothing_left(tmp_path):
  path = _write(tmp_path / 'all.txt', _lines(30) + '1\n0 \n1\n')
  ds = load_text_dataset(path=str(path), on_bad_lines='skip')
  assert sum(len(s.texts) for s in ds.splits.values()) == 30
  assert ('skipped 3 lines with no text in all.txt (data.on_bad_lines=skip)'
          in ds.description)
  assert 'skipped' not in load_text_dataset(
      path=str(_write(tmp_path / 'ok.txt', _lines(30))),
      on_bad_lines='skip').description
  _write(tmp_path / 'f' / 'train.txt', _lines(20))
  _write(tmp_path / 'f' / 'dev.txt', '1\n0\n')
  message = _error(path=str(tmp_path / 'f'), on_bad_lines='skip')
  assert 'dev.txt: no examples' in message and '2 lines with no text' in message


def test_error_bad_on_bad_lines_value(tmp_path):
  path = _write(tmp_path / 'a.txt', _lines(10))
  message = _error(path=str(path), on_bad_lines='warn')
  assert "data.on_bad_lines='warn' is unknown" in message
  assert "'error', 'skip'" in message


# ----------------------------------------------------------------------------
# data.text_form: Penn Treebank tokens joined back into plain text.


def test_ptb_to_plain_undoes_the_treebank_tokens_that_change_tokens():
  ptb = ("they wo n't sit still , it 's moore 's -lrb- k-19 -RRB- writer\\/director "
         "`` great '' \\*\\*\\* ca n't i 'm we 've they 're you 'll he 'd")
  assert sources.ptb_to_plain(ptb) == (
      'they won\'t sit still , it\'s moore\'s ( k-19 ) writer/director " great " *** '
      "can't i'm we've they're you'll he'd")
  plain = "it's so laddish , and i'd care (more) than \"they\" can't"  # Plain text is left as it is.
  assert sources.ptb_to_plain(plain) == plain


def test_text_form_ptb_gives_every_split_the_plain_text(tmp_path):
  for split in ('train', 'dev', 'test'):
    _write(tmp_path / f'{split}.txt', ''.join(f"{i % 2} it does n't work -lrb- {split} {i} -rrb-\n"
                                              for i in range(6)))
  as_written = load_text_dataset(path=str(tmp_path))
  plain = load_text_dataset(path=str(tmp_path), text_form='ptb')
  for split in ('train', 'dev', 'test'):
    assert as_written.splits[split].texts[0] == f"it does n't work -lrb- {split} 0 -rrb-"
    assert plain.splits[split].texts == [f"it doesn't work ( {split} {i} )" for i in range(6)]
    assert plain.splits[split].labels.tolist() == as_written.splits[split].labels.tolist()
  test = sources.load_labelled_examples(str(tmp_path / 'test.txt'), label_names=['0', '1'], text_form='ptb')
  assert test.texts == plain.splits['test'].texts


def test_text_form_ptb_makes_sst2_negations_tokenize_as_plain_text():
  """What the option is for: the tokens of SST-2's `do n't` are those of plain `don't`."""
  from bigjax.data import tokenizer as tokenizer_lib
  sst2 = load_text_dataset(path=str(_shared('sst2')), text_form='ptb')
  train = sst2.splits['train'].texts
  assert not any(" n't" in t or '-lrb-' in t for t in train)
  assert sum(t.count("n't") for t in train) == 535  # The file's every `n't`, rejoined, none lost.
  plain_text = ["the film doesn't work, and i can't say it's (at all) good"]
  tokenizer = tokenizer_lib.train_tokenizer(plain_text, 100, kind='wordpunct', min_frequency=1)
  tokens = lambda text: tokenizer.tokens(tokenizer.encode([text], 64)[0])
  treebank = "the film does n't work , and i ca n't say it 's -lrb- at all -rrb- good"
  assert tokens(treebank) != tokens(plain_text[0])  # `does n ' t`, not `doesn ' t`.
  assert tokens(sources.ptb_to_plain(treebank)) == tokens(plain_text[0])
  assert '[UNK]' not in tokens(plain_text[0]) and '<unk>' not in tokens(plain_text[0])


def test_error_bad_text_form_value(tmp_path):
  path = _write(tmp_path / 'a.txt', _lines(10))
  message = _error(path=str(path), text_form='penn')
  assert "data.text_form='penn' is unknown" in message and "'plain', 'ptb'" in message
  with pytest.raises(DataError, match='text_form'):
    sources.load_labelled_examples(str(path), label_names=['0', '1'], text_form='penn')
