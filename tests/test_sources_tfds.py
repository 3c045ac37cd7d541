"""Tests for bigjax.data.sources.tfds: tensorflow-datasets (mocked: no download, no TensorFlow)."""

import socket
import time

import numpy as np
import pytest

from bigjax.data.sources import load_text_dataset
from bigjax.data.sources import tfds as tfds_source
from sources_helpers import _error


tfds = pytest.importorskip('tensorflow_datasets')


@pytest.fixture
def online(monkeypatch):
  # mock_data makes download_and_prepare a no-op but leaves is_prepared()
  # False, so the loader must believe it is online to go on to read.
  monkeypatch.setattr(tfds_source, '_network_available', lambda *a, **k: True)


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
  monkeypatch.setattr(tfds_source, '_network_available', None)
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
  monkeypatch.setattr(tfds_source, '_network_available', lambda *a, **k: False)
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
    assert tfds_source._network_available(('127.0.0.1', port), timeout=1)
  finally:
    server.close()
  start = time.perf_counter()
  assert not tfds_source._network_available(('127.0.0.1', port), timeout=1)
  assert time.perf_counter() - start < 2
