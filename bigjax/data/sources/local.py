"""Local files and folders: "LABEL text" lines (.txt), .tsv, .csv and .jsonl.

`load` detects the format from the path: a folder of train/dev/test files of one
extension, one such file (dev and test are carved from it later), or the IMDB archive
or folder (read by `imdb`). Errors name the file and line.
"""

import contextlib
import csv
import io
import json
import os

from bigjax.data.sources import common
from bigjax.data.sources import imdb
from bigjax.data.sources import labels as labels_lib
from bigjax.errors import DataError

_TABLE_EXTS = ('.tsv', '.csv', '.jsonl')
_EXTS = ('.txt',) + _TABLE_EXTS
_DEV_STEMS = ('dev', 'valid', 'validation')
_SKIP_HINT = 'to drop such examples, set --config.data.on_bad_lines=skip'


def load(path, *, encoding, text_column, label_column, max_line_bytes,
         on_bad_lines):
  """Returns (parts, origin, label names) for a local file or folder."""
  if not os.path.exists(path):
    raise DataError(f'data.path {path!r} does not exist; point it at a file or '
                    f'folder ({common.SUPPORTED}).')
  read = dict(encoding=encoding, text_column=text_column,
              label_column=label_column, max_line_bytes=max_line_bytes,
              on_bad_lines=on_bad_lines)
  if os.path.isdir(path):
    imdb_root = imdb.find_root(path)
    if imdb_root:
      parts = imdb.read_folder(imdb_root, encoding, max_line_bytes)
      return parts, (f'IMDB folder {imdb_root} (train, test from neg/pos = '
                     f'0/1, unlabeled from train/unsup, <br /> removed)'), None
    files = _split_files(path)
    if files is None:
      archive = os.path.join(path, 'aclImdb_v1.tar.gz')
      if os.path.isfile(archive):
        return load(archive, **read)
      found = sorted(os.listdir(path))
      shown = ', '.join(found[:12]) + (' ...' if len(found) > 12 else '')
      raise DataError(f'Unknown data format in folder {path} (it holds: '
                      f'{shown or "nothing"}); {common.SUPPORTED}.')
    parts = {s: _read_examples(f, **read) for s, f in files.items()}
    parts, names = labels_lib.map_string_labels(parts)
    listed = ', '.join(os.path.basename(f) for f in files.values())
    return parts, f'folder {path} ({listed}; {encoding})', names

  lower = path.lower()
  if lower.endswith(('.tar.gz', '.tgz')):
    parts = imdb.read_archive(path, encoding, max_line_bytes)
    return parts, (f'IMDB archive {path} (train, test from neg/pos = 0/1, '
                   'unlabeled from train/unsup, <br /> removed)'), None
  ext = os.path.splitext(lower)[1]
  if ext not in _EXTS:
    raise DataError(f'Unknown data format of file {path}; {common.SUPPORTED}.')
  parts, names = labels_lib.map_string_labels({'train': _read_examples(path, **read)})
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


def _read_examples(path, *, encoding, text_column, label_column,
                   max_line_bytes, on_bad_lines) -> common.Part:
  """Reads one file of examples in the format its extension names."""
  data = _read_bytes(path)
  common.check_line_lengths(data, path, max_line_bytes)
  text = common.decode(data, path, encoding)
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


def _parse_label_text(text: str, path: str, skip: bool) -> common.Part:
  """Parses 'LABEL text' lines; the label is an integer."""
  texts, labels, lines, skipped = [], [], [], 0
  # Split on '\n' only: str.splitlines also splits on \x85, \x1c.., which
  # Latin-1 text (MR) can contain inside a sentence.
  for number, line in enumerate(text.split('\n'), 1):
    fields = line.split(None, 1)  # label, then the rest after its whitespace
    if not fields:
      continue
    if not labels_lib.INT_RE.fullmatch(fields[0]):
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
    labels.append(labels_lib.int_label(fields[0], f'{path}:{number}'))
    texts.append(fields[1].strip())
    lines.append(number)
  return common.Part(texts, labels, path, lines, skipped=skipped)


def _parse_csv(text, path, ext, text_column, label_column, skip) -> common.Part:
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
  return common.Part(texts, labels, path, lines, skipped=skipped, unit='row')


def _parse_jsonl(text, path, text_column, label_column, skip) -> common.Part:
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
  return common.Part(texts, labels, path, lines, skipped=skipped)
