"""The IMDB reviews of Maas et al. (2011): the archive aclImdb_v1.tar.gz and its extracted folder.

Reviews are train/test by folder, labelled neg = 0 and pos = 1; train/unsup becomes the
'unlabeled' split. Both readers give the same parts, in member-name order, `<br />` removed.
"""

import os
import re
import tarfile
import zlib

from bigjax.data.sources import common
from bigjax.errors import DataError

# Where a review lives inside the IMDB archive or folder.
_MEMBER_RE = re.compile(r'(?:^|/)(train|test)/(neg|pos|unsup)/[^/]+\.txt$')
_GROUPS = {
    ('train', 'neg'): ('train', 0),
    ('train', 'pos'): ('train', 1),
    ('train', 'unsup'): ('unlabeled', -1),
    ('test', 'neg'): ('test', 0),
    ('test', 'pos'): ('test', 1),
}


def _text(data: bytes, source: str, encoding: str, limit: int) -> str:
  common.check_line_lengths(data, source, limit)
  return common.decode(data, source, encoding).replace('<br />', ' ')


def _parts(found: list[tuple[str, str, int, str]], source: str):
  """Groups (name, split, label, text) sorted by name into parts."""
  found.sort(key=lambda x: x[0])  # archive/listing order is not guaranteed
  parts = {}
  for member, split, label, text in found:
    part = parts.setdefault(split, common.Part([], [], source, []))
    part.texts.append(text)
    part.labels.append(label)
    part.locs.append(member)
  if 'train' not in parts:
    raise DataError(f'{source}: no train/neg or train/pos reviews (*.txt); '
                    'expected the IMDB layout aclImdb/{train,test}/{neg,pos}/'
                    f'ID_RATING.txt; {common.SUPPORTED}.')
  return parts


def read_archive(path: str, encoding: str, limit: int):
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
        match = _MEMBER_RE.search(member.name)
        if not member.isfile() or not match:
          continue
        group = _GROUPS.get(match.groups())
        if group is None:
          continue
        data = tar.extractfile(member).read()
        text = _text(data, f'{path}:{member.name}', encoding, limit)
        found.append((member.name, group[0], group[1], text))
  except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
    raise DataError(
        f'{path}: archive is truncated or corrupt ({e}) after {len(found)} '
        'reviews; download aclImdb_v1.tar.gz again (or point data.path at '
        'the extracted aclImdb/ folder).') from None
  return _parts(found, path)


def find_root(folder: str) -> str | None:
  """The folder holding IMDB's train/ and test/, if `folder` has that layout."""
  for root in (os.path.join(folder, 'aclImdb'), folder):
    if any(os.path.isdir(os.path.join(root, 'train', c)) for c in ('neg',
                                                                     'pos')):
      return root
  return None


def read_folder(root: str, encoding: str, limit: int):
  found = []
  for (split, cls), (ours, label) in _GROUPS.items():
    folder = os.path.join(root, split, cls)
    if not os.path.isdir(folder):
      continue
    for entry in os.scandir(folder):
      if entry.is_file() and entry.name.endswith('.txt'):
        name = f'{split}/{cls}/{entry.name}'
        with open(entry.path, 'rb') as f:
          data = f.read()
        text = _text(data, os.path.join(root, name), encoding, limit)
        found.append((name, ours, label, text))
  return _parts(found, root)
