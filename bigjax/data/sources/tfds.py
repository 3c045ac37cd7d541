"""tensorflow-datasets by name (data.name), read without TensorFlow.

An unprepared dataset is downloaded and prepared as ArrayRecord, but only after a quick
network probe: offline, tfds would retry for minutes before failing. tensorflow_datasets
is imported only when a name is given.
"""

import difflib
import importlib
import socket
import threading

from bigjax.data.sources import common
from bigjax.errors import DataError

# Host that tfds downloads from first; reachable means downloads can work.
_PROBE_ADDRESS = ('storage.googleapis.com', 443)
_TFDS_SPLITS = {'train': 'train', 'validation': 'dev', 'test': 'test',
                'unsupervised': 'unlabeled'}
# tfds packages of older builders (glue, ...). Without TensorFlow, tfds only
# imports them lazily, so tfds.builder('glue/sst2') says "not found" unless
# they are imported first.
_TFDS_LEGACY_PACKAGES = (
    'audio', 'graphs', 'image', 'image_classification', 'object_detection',
    'nearest_neighbors', 'question_answering', 'd4rl', 'ranking',
    'recommendation', 'rl_unplugged', 'robotics', 'robomimic', 'structured',
    'summarization', 'text', 'text_simplification', 'time_series',
    'translate', 'video', 'vision_language')


def _network_available(address=_PROBE_ADDRESS, timeout: float = 3.0) -> bool:
  """Whether a TCP connection to `address` opens within `timeout` seconds."""
  result = []

  def connect():
    try:
      socket.create_connection(address, timeout=timeout).close()
      result.append(True)
    except OSError:
      pass

  # A thread, because name resolution ignores the socket timeout.
  thread = threading.Thread(target=connect, daemon=True)
  thread.start()
  thread.join(timeout + 0.5)
  return bool(result)


def _import_tfds():
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise DataError(
        f'data.name needs tensorflow-datasets ({e}); install it or set '
        f'data.path to local files ({common.PATH_HINT}).') from None
  for package in _TFDS_LEGACY_PACKAGES:
    try:
      importlib.import_module(f'tensorflow_datasets.{package}')
    except Exception:  # pylint: disable=broad-except
      pass  # its optional dependencies (h5py, ...) are missing: not needed
  return tfds


def _tfds_builder(tfds, name: str, data_dir: str):
  try:
    return tfds.builder(name, data_dir=data_dir or None)
  except (tfds.core.registered.DatasetNotFoundError, ValueError):
    candidates = list(tfds.list_builders(with_community_datasets=False))
    base = name.split('/')[0].split(':')[0]
    try:
      configs = tfds.builder_cls(base).BUILDER_CONFIGS or []
      candidates += [f'{base}/{c.name}' for c in configs]
    except Exception:  # pylint: disable=broad-except
      pass  # unknown base name: the builder list is all there is
    close = difflib.get_close_matches(name, candidates, n=5, cutoff=0.6)
    raise DataError(
        f'Unknown tensorflow-datasets name {name!r}; close matches: '
        f'{", ".join(close) or "none"}. Set data.name to one of them, or '
        f'data.path to local files ({common.PATH_HINT}).') from None


def _tfds_feature(builder, name, kind, preferred):
  """The key of the `kind` feature, preferring the names in `preferred`."""
  features = builder.info.features
  keys = [k for k in features.keys() if isinstance(features[k], kind)]
  for key in preferred:
    if key in keys:
      return key
  if len(keys) == 1:
    return keys[0]
  found = (f'{len(keys)} {kind.__name__} features ({", ".join(keys)})'
           if keys else f'no {kind.__name__} feature')
  raise DataError(
      f'tensorflow-datasets {name!r} has {found} (all features: '
      f'{", ".join(features.keys())}); need one text and one '
      'class label (set data.text_column / data.label_column to pick them), '
      'or use another dataset.')


def load(name, *, data_dir, text_column, label_column):
  """Returns (parts, origin, label names) for a tensorflow-datasets name."""
  tfds = _import_tfds()
  builder = _tfds_builder(tfds, name, data_dir)
  text_key = _tfds_feature(builder, name, tfds.features.Text,
                           (text_column, 'text', 'sentence'))
  label_key = _tfds_feature(builder, name, tfds.features.ClassLabel,
                            (label_column, 'label'))
  class_label = builder.info.features[label_key]

  if not builder.is_prepared():
    where = data_dir or 'the default data_dir (~/tensorflow_datasets)'
    # Offline, download_and_prepare retries for minutes before failing.
    if not _network_available():
      raise DataError(
          f'tensorflow-datasets {name!r} is not prepared in {where} '
          f'({builder.data_dir}) and there is no network to download it (no '
          f'connection to {_PROBE_ADDRESS[0]}). Prepare it where there is '
          "network (builder.download_and_prepare(file_format='array_record')) "
          'and set data.data_dir, or point data.path at a local copy: '
          f'{common.PATH_HINT}.')
    try:
      builder.download_and_prepare(file_format='array_record')
    except Exception as e:  # pylint: disable=broad-except
      raise DataError(f'Preparing tensorflow-datasets {name!r} in {where} '
                      f'failed: {type(e).__name__}: {e}; set data.path to a '
                      f'local copy instead ({common.PATH_HINT}).') from e

  # info.splits is empty without split metadata (tfds.testing.mock_data).
  split_names = list(builder.info.splits.keys()) or list(_TFDS_SPLITS)
  parts = {}
  for tfds_split in split_names:
    ours = _TFDS_SPLITS.get(tfds_split)
    if ours is None:
      continue
    try:
      source = builder.as_data_source(split=tfds_split)
    except (NotImplementedError, ValueError) as e:
      raise DataError(
          f'Cannot read tensorflow-datasets {name!r} split {tfds_split!r} '
          f'without TensorFlow ({e}); prepare it with '
          "download_and_prepare(file_format='array_record').") from None
    texts, labels = [], []
    for i in range(len(source)):  # mocked sources lack a working __getitems__
      record = source[i]
      text = record[text_key]
      texts.append(text.decode('utf-8') if isinstance(text, bytes) else
                   str(text))
      labels.append(int(record[label_key]))
    if builder.name == 'imdb_reviews':
      # Same text as the IMDB archive reader gives.
      texts = [t.replace('<br />', ' ') for t in texts]
    parts[ours] = common.Part(texts, labels, f'tfds {name} {tfds_split}')

  notes = []
  if 'test' in parts and all(l == -1 for l in parts['test'].labels):
    del parts['test']  # e.g. GLUE hides its test labels
    if 'dev' in parts:
      parts['test'] = parts.pop('dev')
      notes.append('test = tfds validation (tfds test has no labels)')
    else:
      notes.append('tfds test has no labels')
  if 'train' not in parts:
    raise DataError(f'tensorflow-datasets {name!r} has no train split (it '
                    f'has {", ".join(split_names)}); use another dataset.')
  origin = '; '.join([f'tfds {name} ({builder.data_dir})'] + notes)
  if builder.name == 'imdb_reviews':
    origin += '; <br /> removed'
  return parts, origin, list(class_label.names)
