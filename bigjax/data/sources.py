"""Labelled text from local files, the IMDB archive or tensorflow-datasets.

`load_text_dataset` returns raw texts and integer labels split into train, dev
and test (and IMDB's unlabelled reviews); tokenization and batching live
elsewhere. Every problem with the input is raised as a `DataError` that says
what is wrong, where (file and line) and what to do.
"""

import codecs
import contextlib
import csv
import dataclasses
import difflib
import importlib
import io
import json
import os
import re
import socket
import tarfile
import threading
import zlib
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


def with_train_limit(dataset: TextDataset, limit: int, seed: int) -> TextDataset:
  """The dataset with a seeded, class-balanced subset of `limit` training examples (a label
  budget): limit // K of each class, the remainder to the first classes, all of a class
  that has fewer. Dev, test and unlabelled text are kept whole."""
  train = dataset.splits['train']
  if limit >= len(train.texts):
    return dataset
  rng = np.random.default_rng([seed, 0xB0D6E7])
  classes = np.unique(train.labels)
  quota = {c: limit // len(classes) + (i < limit % len(classes)) for i, c in enumerate(classes)}
  chosen = np.sort(np.concatenate([rng.permutation(np.flatnonzero(train.labels == c))[:quota[c]] for c in classes]))
  subset = Split([train.texts[i] for i in chosen], train.labels[chosen])
  return dataclasses.replace(
      dataset, splits=dict(dataset.splits, train=subset),
      description=f'{dataset.description}; train limited to {len(chosen)} examples (data.train_limit, '
                  f'class-balanced, seed {seed})')


_ENCODING_HINT = 'set data.encoding (e.g. --config.data.encoding=latin-1)'
_PATH_HINT = ('--config.data.path=/path/to/aclImdb_v1.tar.gz or a folder of '
              'train.txt/dev.txt/test.txt')
_SUPPORTED = (
    'supported: the IMDB archive aclImdb_v1.tar.gz (.tar.gz/.tgz) or its '
    'extracted folder (aclImdb/ or a folder holding train/{neg,pos} and '
    'test/{neg,pos}); a folder with train.EXT and optionally '
    'dev.EXT (or valid/validation.EXT) and test.EXT; or one such file, '
    'from which dev and test are carved; EXT is .txt ("LABEL text" lines), '
    '.tsv, .csv (header row) or .jsonl (one JSON object per line)')
_TABLE_EXTS = ('.tsv', '.csv', '.jsonl')
_EXTS = ('.txt',) + _TABLE_EXTS
_DEV_STEMS = ('dev', 'valid', 'validation')
_INT_RE = re.compile(r'[+-]?\d+')
# More digits than int64 holds is no class id (and int() of over 4300 digits
# raises ValueError).
_MAX_LABEL_DIGITS = 18
ON_BAD_LINES = ('error', 'skip')  # data.on_bad_lines; experiments checks it early
# data.text_form: how the files write their text. 'ptb': Penn Treebank tokens (SST-2's files,
# and GLUE's: `do n't`, `-lrb-`, `` quotes ''), joined back into plain text on reading.
TEXT_FORMS = ('plain', 'ptb')
_SKIP_HINT = 'to drop such examples, set --config.data.on_bad_lines=skip'
_MIB = 1 << 20
# Where a review lives inside the IMDB archive or folder.
_IMDB_MEMBER_RE = re.compile(r'(?:^|/)(train|test)/(neg|pos|unsup)/[^/]+\.txt$')
_IMDB_GROUPS = {
    ('train', 'neg'): ('train', 0),
    ('train', 'pos'): ('train', 1),
    ('train', 'unsup'): ('unlabeled', -1),
    ('test', 'neg'): ('test', 0),
    ('test', 'pos'): ('test', 1),
}


def load_text_dataset(*, path: str = '', name: str = '',
                      encoding: str = 'utf-8', data_dir: str = '',
                      dev_fraction: float = 0.1, test_fraction: float = 0.1,
                      seed: int = 0, text_column: str = 'text',
                      label_column: str = 'label', num_classes: int = 0,
                      max_line_mb: int = 64,
                      on_bad_lines: str = 'error',
                      text_form: str = 'plain') -> TextDataset:
  """Loads a text-classification dataset from `path` or, if empty, tfds `name`.

  Args:
    path: a local file, folder or IMDB archive (format detected from it).
    name: a tensorflow-datasets name such as 'imdb_reviews' or 'glue/sst2'.
    encoding: how the bytes of local files are decoded.
    data_dir: tensorflow-datasets data folder ('' = its default).
    dev_fraction: share of train carved out as dev when there is no dev.
    test_fraction: share carved out as test when there is no labelled test.
    seed: seed of the carving permutation.
    text_column: column/key of the text in .tsv/.csv/.jsonl (or tfds feature).
    label_column: column/key of the label in .tsv/.csv/.jsonl.
    num_classes: number of classes; 0 = from the data (the label names, or
      max label + 1, and then every class 0..K-1 must occur in train); > 0
      declares them: labels in [0, num_classes) are accepted even where train
      has no example of some.
    max_line_mb: longest line accepted in local files, in MiB. It only guards
      memory against files that are not one example per line: long texts are
      cut to max_len tokens later anyway.
    on_bad_lines: 'error' stops at an example whose text is empty (a label
      alone); 'skip' drops such examples and counts them in the description.
    text_form: 'plain', or 'ptb' for Penn Treebank tokens, joined back into
      plain text (`ptb_to_plain`).

  Returns:
    The dataset; labels are int32 in [0, num_classes), -1 for unlabelled text.
  """
  for what, value in (('dev_fraction', dev_fraction),
                      ('test_fraction', test_fraction)):
    if not 0.0 <= value < 1.0:
      raise DataError(f'data.{what}={value} must be in [0, 1).')
  if dev_fraction + test_fraction >= 1.0:
    raise DataError(
        f'data.dev_fraction + data.test_fraction = '
        f'{dev_fraction + test_fraction} leaves nothing to train on; make '
        'their sum < 1.')
  if num_classes < 0:
    raise DataError(f'data.num_classes={num_classes} must be >= 0 '
                    '(0 = infer from the labels).')
  if on_bad_lines not in ON_BAD_LINES:
    raise DataError(f'data.on_bad_lines={on_bad_lines!r} is unknown; use one '
                    f'of {", ".join(map(repr, ON_BAD_LINES))}.')
  if max_line_mb < 1:
    raise DataError(f'data.max_line_mb={max_line_mb} must be >= 1 (MiB).')
  _check_text_form(text_form)
  carve = _Carver(dev_fraction, test_fraction, seed)
  if path:
    try:
      codecs.lookup(encoding)
    except LookupError:
      raise DataError(f'Unknown data.encoding {encoding!r}; use a Python '
                      'codec name such as utf-8 or latin-1.') from None
    parts, origin, names = _load_local(
        os.path.expanduser(path), encoding=encoding, text_column=text_column,
        label_column=label_column, max_line_bytes=max_line_mb * _MIB,
        on_bad_lines=on_bad_lines)
  elif name:
    parts, origin, names = _load_tfds(name, data_dir=data_dir,
                                      text_column=text_column,
                                      label_column=label_column)
  else:
    raise DataError(
        'No data given: set data.path to local files (' + _PATH_HINT +
        ') or data.name to a tensorflow-datasets name (e.g. imdb_reviews).')
  _to_plain(parts, text_form)
  return _finish(parts, origin=origin, label_names=names, carve=carve,
                 num_classes=num_classes)


def load_labelled_examples(path: str, *, label_names, encoding: str = 'utf-8',
                           text_column: str = 'text',
                           label_column: str = 'label', max_line_mb: int = 64,
                           on_bad_lines: str = 'error', text_form: str = 'plain') -> Split:
  """Every example of a file (or a folder's or the IMDB archive's test split), with labels
  numbered as a trained run numbers its classes (`label_names`, class id order).

  Label strings are matched to the names; integer labels must be class ids of the run.
  `text_form` is the run's data.text_form, for files written as its training data was.
  """
  _check_text_form(text_form)
  path = os.path.expanduser(path)
  parts, _, names = _load_local(path, encoding=encoding,
                                text_column=text_column,
                                label_column=label_column,
                                max_line_bytes=max_line_mb * _MIB,
                                on_bad_lines=on_bad_lines)
  _to_plain(parts, text_form)
  single_file = os.path.isfile(path) and not path.lower().endswith(
      ('.tar.gz', '.tgz'))
  which = 'train' if single_file else 'test'
  if which not in parts:
    raise DataError(f'{path} has no test split to evaluate on; point at the '
                    'test file itself.')
  part, label_names = parts[which], [str(n) for n in label_names]
  index = {n: i for i, n in enumerate(label_names)}
  labels = []
  for i, label in enumerate(part.labels):
    name = names[label] if names else str(label)
    if name not in index:
      raise DataError(f'{part.where(i)}: label {name!r} is not a class of the '
                      f'run, whose classes are {label_names}.')
    labels.append(index[name])
  return Split(texts=part.texts, labels=np.asarray(labels, np.int32))


# Penn Treebank tokens -> plain text, in order. Only what changes tokens is undone (the
# tokenizers split punctuation again). NLTK's TreebankWordDetokenizer knows neither
# lower-case brackets (-lrb-) nor escaped slashes, so it would not do here.
_PTB_TO_PLAIN = [
    (re.compile(r" (n't|'s|'re|'ve|'ll|'d|'m)\b", re.IGNORECASE), r'\1'),  # Contractions rejoined.
    *((re.compile(f'-{code}-', re.IGNORECASE), bracket)
      for code, bracket in (('lrb', '('), ('rrb', ')'), ('lsb', '['), ('rsb', ']'), ('lcb', '{'), ('rcb', '}'))),
    (re.compile(r"``|''"), '"'),
    (re.compile(r'\\([/*])'), r'\1'),  # Escaped slashes and stars.
]


def ptb_to_plain(text: str) -> str:
  """Penn Treebank tokens back to plain English: `wo n't` -> `won't`, `-lrb-` -> `(`.

  Served text is plain, and so is the text a pretrained tokenizer learnt from: there a
  treebank's `do n't` becomes `do n ' t` where plain text gives `don ' t`, so a model that
  has read only the treebank form meets negations elsewhere in a form it has never seen.
  """
  for pattern, plain in _PTB_TO_PLAIN:
    text = pattern.sub(plain, text)
  return text


def _check_text_form(text_form: str) -> None:
  if text_form not in TEXT_FORMS:
    raise DataError(f'data.text_form={text_form!r} is unknown; use one of {", ".join(map(repr, TEXT_FORMS))}.')


def _to_plain(parts: dict[str, '_Part'], text_form: str) -> None:
  if text_form == 'ptb':
    for part in parts.values():
      part.texts = [ptb_to_plain(text) for text in part.texts]


# ----------------------------------------------------------------------------
# Examples before validation.


@dataclasses.dataclass
class _Part:
  """One split's examples, with where each came from for error messages."""
  texts: list[str]
  labels: list[Any]  # ints; strings in tables until _map_string_labels
  source: str  # the file, archive or tfds split the examples came from
  locs: list[Any] | None = None  # per example: line number or member name
  skipped: int = 0  # examples dropped for having no text (on_bad_lines=skip)
  unit: str = 'line'  # what one example is in the source, for messages

  def where(self, i: int) -> str:
    loc = self.locs[i] if self.locs is not None else f'example {i}'
    return f'{self.source}:{loc}'

  def subset(self, idx: np.ndarray) -> '_Part':
    return _Part([self.texts[i] for i in idx], [self.labels[i] for i in idx],
                 self.source,
                 None if self.locs is None else [self.locs[i] for i in idx])


@dataclasses.dataclass(frozen=True)
class _Carver:
  """How missing dev/test splits are carved from train."""
  dev_fraction: float
  test_fraction: float
  seed: int


def _finish(parts: dict[str, _Part], *, origin: str,
            label_names: list[str] | None, carve: _Carver,
            num_classes: int) -> TextDataset:
  """Checks labels, carves missing dev/test from train, builds the dataset."""
  for part in parts.values():
    if not part.texts:
      skipped = (f', or {part.skipped} {part.unit}s with no text, skipped'
                 if part.skipped else '')
      raise DataError(f'{part.source}: no examples after parsing (only '
                      f'blank lines or a header{skipped}); check that it is '
                      'the right file, or remove it to carve that split from '
                      'train.')
  k = _check_labels(parts, label_names, num_classes)
  if k < 2:
    raise DataError(f'{origin}: only {k} class; a classifier needs at least '
                    '2 (check data.label_column, or set data.num_classes).')

  notes = []
  skipped = [f'{p.skipped} {p.unit}{"s" if p.skipped > 1 else ""} with no '
             f'text in {os.path.basename(p.source)}'
             for p in parts.values() if p.skipped]
  if skipped:
    notes.append(f'skipped {", ".join(skipped)} (data.on_bad_lines=skip)')
  rng = np.random.default_rng(carve.seed)
  need = [s for s in ('test', 'dev') if s not in parts]  # test first
  if need:
    fractions = {'test': carve.test_fraction, 'dev': carve.dev_fraction}
    for s in need:
      if fractions[s] <= 0:
        raise DataError(f'{origin} has no {s} split, so it is carved from '
                        f'train; set data.{s}_fraction > 0 (e.g. 0.1).')
    train = parts['train']
    n = len(train.texts)
    perm = rng.permutation(n)
    start = 0
    for s in need:
      count = max(1, int(round(fractions[s] * n)))
      parts[s] = train.subset(np.sort(perm[start:start + count]))
      start += count
    if start >= n:
      raise DataError(f'{train.source}: {n} examples are too few to carve '
                      f'{" and ".join(need)} from; give more data or those '
                      'splits as files.')
    parts['train'] = train.subset(np.sort(perm[start:]))
    carved = ' and '.join(f'{s} {fractions[s]:.0%}' for s in need)
    notes.append(f'{carved} carved from train by a seeded permutation '
                 f'(seed {carve.seed})')

  splits = {}
  for s in ('train', 'dev', 'test', 'unlabeled'):
    if s in parts:
      p = parts[s]
      labels = (np.full(len(p.texts), -1, np.int32) if s == 'unlabeled' else
                np.asarray(p.labels, dtype=np.int32))
      splits[s] = Split(texts=p.texts, labels=labels)
  counts = ' / '.join(f'{s} {len(v.texts)}' for s, v in splits.items())
  desc = [origin] + notes + [f'{counts}; {k} classes']
  if label_names:
    desc.append('labels ' + ', '.join(f'{i}={n}'
                                      for i, n in enumerate(label_names)))
  names = tuple(label_names) if label_names else tuple(str(i) for i in range(k))
  return TextDataset(splits=splits, num_classes=k, description='; '.join(desc), label_names=names)


def _check_labels(parts: dict[str, _Part], label_names: list[str] | None,
                  num_classes: int) -> int:
  """Checks every label and returns the number of classes K.

  Declared classes (data.num_classes, label names) may lack training examples.
  Inferred ones (max label + 1) must each occur in train: a class without
  one cannot be learned, and a stray huge label would otherwise size the
  model. Labels stay Python ints here, so none can overflow an array.
  """
  labelled = [p for s, p in parts.items() if s != 'unlabeled']
  if num_classes or label_names:
    k = num_classes or len(label_names)
    for part in labelled:
      for i, label in enumerate(part.labels):
        if not 0 <= label < k:
          fix = ('raise data.num_classes or fix the label' if num_classes else
                 'labels must be integers 0..K-1')
          raise DataError(
              f'{part.where(i)}: label {label} is out of range [0, {k}) '
              f'(num_classes={k}); {fix}.')
    return k
  train = parts['train']
  seen = set(train.labels)
  k = max(seen) + 1
  for part in [train] + [p for p in labelled if p is not train]:
    for i, label in enumerate(part.labels):
      if label < 0:
        raise DataError(
            f'{part.where(i)}: label {label} is out of range [0, {k}) '
            f'(num_classes={k} from the data); labels must be integers '
            '0..K-1.')
  if len(seen) < k:
    i = train.labels.index(k - 1)
    raise DataError(
        f'{train.where(i)}: label {k - 1} makes {k} classes (max label + 1), '
        f'but train has examples of only {len(seen)} of them (labels '
        f'{_show_labels(seen)}); a class without training examples cannot be '
        f'learned: {_fix_unseen(k - 1, len(seen))}.')
  for part in labelled:
    for i, label in enumerate(part.labels):
      if label >= k:
        raise DataError(
            f'{part.where(i)}: label {label} does not occur in train '
            f'({train.source}), whose labels are {_show_labels(seen)}; a '
            'class without training examples cannot be learned: '
            f'{_fix_unseen(label, len(seen))}.')
  return k


def _fix_unseen(label: int, seen: int) -> str:
  """What to do about a label no training example has."""
  if label + 1 > 2 * seen + 100:  # far above the rest: a typo, not a class
    return 'fix the label (it is implausibly far above the others)'
  return ('fix the label, or, if the classes really are '
          f'0..{label}, declare them with --config.data.num_classes='
          f'{label + 1}')


def _show_labels(labels, most: int = 12) -> str:
  shown = sorted(labels)
  text = ', '.join(map(str, shown[:most]))
  return text + (f', ... ({len(shown)} in all)' if len(shown) > most else '')


# ----------------------------------------------------------------------------
# Local files.


def _load_local(path, *, encoding, text_column, label_column, max_line_bytes,
                on_bad_lines):
  """Returns (parts, origin, label names) for a local file or folder."""
  if not os.path.exists(path):
    raise DataError(f'data.path {path!r} does not exist; point it at a file or '
                    f'folder ({_SUPPORTED}).')
  read = dict(encoding=encoding, text_column=text_column,
              label_column=label_column, max_line_bytes=max_line_bytes,
              on_bad_lines=on_bad_lines)
  if os.path.isdir(path):
    imdb_root = _imdb_root(path)
    if imdb_root:
      parts = _read_imdb_folder(imdb_root, encoding, max_line_bytes)
      return parts, (f'IMDB folder {imdb_root} (train, test from neg/pos = '
                     f'0/1, unlabeled from train/unsup, <br /> removed)'), None
    files = _split_files(path)
    if files is None:
      archive = os.path.join(path, 'aclImdb_v1.tar.gz')
      if os.path.isfile(archive):
        return _load_local(archive, **read)
      found = sorted(os.listdir(path))
      shown = ', '.join(found[:12]) + (' ...' if len(found) > 12 else '')
      raise DataError(f'Unknown data format in folder {path} (it holds: '
                      f'{shown or "nothing"}); {_SUPPORTED}.')
    parts = {s: _read_examples(f, **read) for s, f in files.items()}
    parts, names = _map_string_labels(parts)
    listed = ', '.join(os.path.basename(f) for f in files.values())
    return parts, f'folder {path} ({listed}; {encoding})', names

  lower = path.lower()
  if lower.endswith(('.tar.gz', '.tgz')):
    parts = _read_imdb_archive(path, encoding, max_line_bytes)
    return parts, (f'IMDB archive {path} (train, test from neg/pos = 0/1, '
                   'unlabeled from train/unsup, <br /> removed)'), None
  ext = os.path.splitext(lower)[1]
  if ext not in _EXTS:
    raise DataError(f'Unknown data format of file {path}; {_SUPPORTED}.')
  parts, names = _map_string_labels({'train': _read_examples(path, **read)})
  return parts, f'file {path} ({encoding})', names


def _split_files(folder: str) -> dict[str, str] | None:
  """Finds train/dev/test files of one extension in `folder`, or None."""
  names = set(os.listdir(folder))
  exts = [e for e in _EXTS if 'train' + e in names]
  if not exts:
    return None
  if len(exts) > 1:
    raise DataError(f'{folder} has train files in several formats '
                    f'({", ".join("train" + e for e in exts)}); keep one.')
  ext = exts[0]
  files = {'train': os.path.join(folder, 'train' + ext)}
  devs = [s + ext for s in _DEV_STEMS if s + ext in names]
  if len(devs) > 1:
    raise DataError(f'{folder} has several dev files ({", ".join(devs)}); '
                    'keep one.')
  if devs:
    files['dev'] = os.path.join(folder, devs[0])
  if 'test' + ext in names:
    files['test'] = os.path.join(folder, 'test' + ext)
  # A dev/test file in another format would otherwise be silently ignored.
  others = sorted(stem + e for stem in _DEV_STEMS + ('test',) for e in _EXTS
                  if e != ext and stem + e in names)
  if others:
    raise DataError(f'{folder}: {", ".join(others)} does not match the format '
                    f'of train{ext}; use one extension for all splits.')
  return files


def _read_bytes(path: str) -> bytes:
  with open(path, 'rb') as f:
    data = f.read()
  if not data:
    raise DataError(f'{path} is an empty file; point data.path at the real '
                    'data.')
  return data


def _check_line_lengths(data: bytes, source: str, limit: int) -> None:
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
          f'{source}:{line}: line is {size} bytes ({size / _MIB:.2f} MiB), '
          f'longer than data.max_line_mb={limit // _MIB} MiB; is this a text '
          'file with one example per line? If lines really are this long, '
          f'raise the limit (--config.data.max_line_mb={-(-size // _MIB)}).')
    start, line = end + 1, line + 1


def _decode(data: bytes, source: str, encoding: str) -> str:
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


def _read_examples(path, *, encoding, text_column, label_column,
                   max_line_bytes, on_bad_lines) -> _Part:
  """Reads one file of examples in the format its extension names."""
  data = _read_bytes(path)
  _check_line_lengths(data, path, max_line_bytes)
  text = _decode(data, path, encoding)
  ext = os.path.splitext(path.lower())[1]
  skip = on_bad_lines == 'skip'
  if ext == '.jsonl':
    return _parse_jsonl(text, path, text_column, label_column, skip)
  if ext in ('.tsv', '.csv'):
    # The csv module caps fields at 128 KiB; long documents are legitimate.
    with _csv_field_limit(max_line_bytes):
      return _parse_csv(text, path, ext, text_column, label_column, skip)
  return _parse_label_text(text, path, skip)


@contextlib.contextmanager
def _csv_field_limit(limit: int):
  """Raises csv's field size limit while parsing, then restores it.

  The limit is process-wide; a library must not leave it changed for others.
  """
  old = csv.field_size_limit(max(csv.field_size_limit(), limit))
  try:
    yield
  finally:
    csv.field_size_limit(old)


def _int_label(value: str, where: str) -> int:
  """An integer label string as an int; one too long for int64 is an error."""
  if len(value.lstrip('+-')) > _MAX_LABEL_DIGITS:
    shown = value if len(value) <= 40 else value[:37] + '...'
    raise DataError(
        f'{where}: label {shown} ({len(value.lstrip("+-"))} digits) is not a '
        'plausible class id; labels must be integers 0..K-1.')
  return int(value)


def _parse_label_text(text: str, path: str, skip: bool) -> _Part:
  """Parses 'LABEL text' lines; the label is an integer."""
  texts, labels, lines, skipped = [], [], [], 0
  # Split on '\n' only: str.splitlines also splits on \x85, \x1c.., which
  # Latin-1 text (MR) can contain inside a sentence.
  for number, line in enumerate(text.split('\n'), 1):
    fields = line.split(None, 1)  # label, then the rest after its whitespace
    if not fields:
      continue
    if not _INT_RE.fullmatch(fields[0]):
      raise DataError(
          f'{path}:{number}: label {fields[0][:40]!r} is not an integer; lines '
          'must be "LABEL text" with LABEL in 0..K-1 (for string labels use '
          '.tsv, .csv or .jsonl).')
    if len(fields) < 2 or not fields[1].strip():
      if skip:
        skipped += 1
        continue
      raise DataError(f'{path}:{number}: label {fields[0][:40]} has no text '
                      f'after it; lines must be "LABEL text" ({_SKIP_HINT}).')
    labels.append(_int_label(fields[0], f'{path}:{number}'))
    texts.append(fields[1].strip())
    lines.append(number)
  return _Part(texts, labels, path, lines, skipped=skipped)


def _parse_csv(text, path, ext, text_column, label_column, skip) -> _Part:
  """Parses a .tsv/.csv file with a header row."""
  if ext == '.tsv':
    # TSV text (e.g. GLUE) has stray quotes; only tabs and newlines delimit.
    reader = csv.reader(io.StringIO(text, newline=''), delimiter='\t',
                        quoting=csv.QUOTE_NONE)
  else:
    reader = csv.reader(io.StringIO(text, newline=''), strict=True)
  texts, labels, lines, skipped = [], [], [], 0
  try:
    header = next(reader, None)
    if header is None:
      raise DataError(f'{path} has no header row; the first line must name '
                      f'the columns (e.g. {text_column},{label_column}).')
    header = [h.strip() for h in header]
    missing = [c for c in (text_column, label_column) if c not in header]
    if missing:
      raise DataError(
          f'{path}: no column {", ".join(map(repr, missing))} (columns found: '
          f'{", ".join(map(repr, header))}); set data.text_column / '
          'data.label_column (e.g. --config.data.text_column=sentence).')
    ti, li = header.index(text_column), header.index(label_column)
    number = reader.line_num
    for row in reader:
      number, start = reader.line_num, number + 1
      if not any(cell.strip() for cell in row):
        continue
      if len(row) != len(header):
        raise DataError(
            f'{path}:{start}: row has {len(row)} fields but the header has '
            f'{len(header)}; check the delimiter and quoting.')
      label = row[li].strip()
      if not label:
        raise DataError(f'{path}:{start}: empty label in column '
                        f'{label_column!r}.')
      if not row[ti].strip():
        if skip:
          skipped += 1
          continue
        raise DataError(f'{path}:{start}: label {label[:40]} has no text in '
                        f'column {text_column!r} ({_SKIP_HINT}).')
      texts.append(row[ti])
      labels.append(label)
      lines.append(start)
  except csv.Error as e:
    raise DataError(f'{path}:{reader.line_num}: cannot parse as '
                    f'{ext[1:].upper()} ({e}); check quoting.') from None
  return _Part(texts, labels, path, lines, skipped=skipped, unit='row')


def _parse_jsonl(text, path, text_column, label_column, skip) -> _Part:
  """Parses one JSON object per line."""
  texts, labels, lines, skipped = [], [], [], 0
  for number, line in enumerate(text.split('\n'), 1):
    if not line.strip():
      continue
    try:
      obj = json.loads(line)
    except json.JSONDecodeError as e:
      raise DataError(
          f'{path}:{number}: bad JSON ({e.msg} at column {e.colno}); each line '
          f'must be one object like {{"{text_column}": "...", '
          f'"{label_column}": 0}}.') from None
    except ValueError as e:  # an integer of over 4300 digits
      raise DataError(f'{path}:{number}: bad JSON ({str(e).split(";")[0]}); '
                      'labels must be integers 0..K-1 or strings.') from None
    if not isinstance(obj, dict):
      raise DataError(f'{path}:{number}: expected a JSON object, got '
                      f'{type(obj).__name__}.')
    missing = [c for c in (text_column, label_column) if c not in obj]
    if missing:
      raise DataError(
          f'{path}:{number}: no key {", ".join(map(repr, missing))} (keys '
          f'found: {", ".join(map(repr, obj))}); set data.text_column / '
          'data.label_column.')
    value, label = obj[text_column], obj[label_column]
    if not isinstance(value, str):
      raise DataError(f'{path}:{number}: {text_column!r} must be a string, '
                      f'got {type(value).__name__}.')
    if isinstance(label, float) and label.is_integer():
      label = int(label)
    if isinstance(label, bool) or not isinstance(label, (int, str)):
      raise DataError(f'{path}:{number}: label {label!r} must be an integer '
                      'or a string.')
    if not value.strip():
      if skip:
        skipped += 1
        continue
      raise DataError(f'{path}:{number}: label {str(label)[:40]} has no '
                      f'text ({text_column!r} is empty; {_SKIP_HINT}).')
    texts.append(value)
    labels.append(str(label).strip())
    lines.append(number)
  return _Part(texts, labels, path, lines, skipped=skipped)


def _map_string_labels(parts: dict[str, _Part]):
  """Turns label strings into ints; returns (parts, names or None).

  Integer strings become ints. Otherwise the sorted distinct train labels are
  numbered 0..K-1 and every split must use only those.
  """
  if all(isinstance(l, int) or _INT_RE.fullmatch(l)
         for p in parts.values() for l in p.labels):
    for p in parts.values():
      p.labels = [l if isinstance(l, int) else _int_label(l, p.where(i))
                  for i, l in enumerate(p.labels)]
    return parts, None
  names = sorted(set(parts['train'].labels))
  index = {n: i for i, n in enumerate(names)}
  for p in parts.values():
    for i, l in enumerate(p.labels):
      if l not in index:
        raise DataError(
            f'{p.where(i)}: label {l!r} does not occur in train '
            f'({parts["train"].source}), whose labels are {names}; use the '
            'same label names in every split.')
    p.labels = [index[l] for l in p.labels]
  return parts, names


# ----------------------------------------------------------------------------
# IMDB (Maas et al. 2011) archive and folder.


def _imdb_text(data: bytes, source: str, encoding: str, limit: int) -> str:
  _check_line_lengths(data, source, limit)
  return _decode(data, source, encoding).replace('<br />', ' ')


def _imdb_parts(found: list[tuple[str, str, int, str]], source: str):
  """Groups (name, split, label, text) sorted by name into parts."""
  found.sort(key=lambda x: x[0])  # archive/listing order is not guaranteed
  parts = {}
  for member, split, label, text in found:
    part = parts.setdefault(split, _Part([], [], source, []))
    part.texts.append(text)
    part.labels.append(label)
    part.locs.append(member)
  if 'train' not in parts:
    raise DataError(f'{source}: no train/neg or train/pos reviews (*.txt); '
                    'expected the IMDB layout aclImdb/{train,test}/{neg,pos}/'
                    f'ID_RATING.txt; {_SUPPORTED}.')
  return parts


def _read_imdb_archive(path: str, encoding: str, limit: int):
  """Reads aclImdb_v1.tar.gz in one streaming pass."""
  with open(path, 'rb') as f:
    magic = f.read(2)
  if not magic:
    raise DataError(f'{path} is an empty file; download aclImdb_v1.tar.gz '
                    'again.')
  if magic != b'\x1f\x8b':
    raise DataError(f'{path} is not a gzip file (it starts with {magic!r}); '
                    'download aclImdb_v1.tar.gz again, or point data.path at '
                    'the extracted aclImdb/ folder.')
  found = []
  try:
    # 'r:gz' streams members in order; random access ('r') would seek back.
    with tarfile.open(path, mode='r:gz') as tar:
      for member in tar:
        match = _IMDB_MEMBER_RE.search(member.name)
        if not member.isfile() or not match:
          continue
        group = _IMDB_GROUPS.get(match.groups())
        if group is None:
          continue
        data = tar.extractfile(member).read()
        text = _imdb_text(data, f'{path}:{member.name}', encoding, limit)
        found.append((member.name, group[0], group[1], text))
  except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
    raise DataError(
        f'{path}: archive is truncated or corrupt ({e}) after {len(found)} '
        'reviews; download aclImdb_v1.tar.gz again (or point data.path at '
        'the extracted aclImdb/ folder).') from None
  return _imdb_parts(found, path)


def _imdb_root(folder: str) -> str | None:
  """The folder holding IMDB's train/ and test/, if `folder` has that layout."""
  for root in (os.path.join(folder, 'aclImdb'), folder):
    if any(os.path.isdir(os.path.join(root, 'train', c)) for c in ('neg',
                                                                     'pos')):
      return root
  return None


def _read_imdb_folder(root: str, encoding: str, limit: int):
  found = []
  for (split, cls), (ours, label) in _IMDB_GROUPS.items():
    folder = os.path.join(root, split, cls)
    if not os.path.isdir(folder):
      continue
    for entry in os.scandir(folder):
      if entry.is_file() and entry.name.endswith('.txt'):
        name = f'{split}/{cls}/{entry.name}'
        with open(entry.path, 'rb') as f:
          data = f.read()
        text = _imdb_text(data, os.path.join(root, name), encoding, limit)
        found.append((name, ours, label, text))
  return _imdb_parts(found, root)


# ----------------------------------------------------------------------------
# tensorflow-datasets.

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
        f'data.path to local files ({_PATH_HINT}).') from None
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
        f'data.path to local files ({_PATH_HINT}).') from None


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


def _load_tfds(name, *, data_dir, text_column, label_column):
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
          f'{_PATH_HINT}.')
    try:
      builder.download_and_prepare(file_format='array_record')
    except Exception as e:  # pylint: disable=broad-except
      raise DataError(f'Preparing tensorflow-datasets {name!r} in {where} '
                      f'failed: {type(e).__name__}: {e}; set data.path to a '
                      f'local copy instead ({_PATH_HINT}).') from e

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
    parts[ours] = _Part(texts, labels, f'tfds {name} {tfds_split}')

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
