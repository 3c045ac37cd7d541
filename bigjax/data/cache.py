"""A folder of start-up work done once: entries named by a hash of everything they depend on.

Reading the IMDB archive and tokenizing it takes ~30 s on two cores, the same every time
a config is started again (another seed, a resume, a benchmark). An entry is written to
a temporary folder and renamed into place, so a job killed while writing leaves no half
entry, and jobs racing to write the same one agree (the first rename wins; both hold the
same bytes).
"""
import hashlib
import json
import os
import shutil
import tempfile
from typing import Callable, Optional

ENV = 'BIGJAX_CACHE_DIR'
COMPLETE = 'COMPLETE'


def default_root() -> str:
  """$BIGJAX_CACHE_DIR, else $XDG_CACHE_HOME/bigjax, else ~/.cache/bigjax."""
  if os.environ.get(ENV):
    return os.environ[ENV]
  base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return os.path.join(base, 'bigjax')


def digest(parts: dict) -> str:
  """A stable hash of JSON-able parts (key order does not matter)."""
  return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def source_identity(path: str, name: str, data_dir: str) -> dict:
  """What a data source's content is recognised by without reading it: for local data the
  path, sizes and modification times of its files; for tfds, the name and data folder."""
  if not path:
    return {'tfds': name, 'data_dir': data_dir}
  path = os.path.abspath(path)
  if os.path.isfile(path):
    stat = os.stat(path)
    return {'path': path, 'size': stat.st_size, 'mtime_ns': stat.st_mtime_ns}
  files = []
  for folder, _, names in sorted(os.walk(path)):
    for file_name in sorted(names):
      stat = os.stat(os.path.join(folder, file_name))
      files.append((os.path.relpath(os.path.join(folder, file_name), path), stat.st_size, stat.st_mtime_ns))
  return {'path': path, 'files': digest({'files': files})}


class Cache:
  """Entries under root/kind/key. get() -> the entry's folder or None; put() writes one."""

  def __init__(self, root: str):
    self.root = root

  def folder(self, kind: str, key: str) -> str:
    return os.path.join(self.root, kind, key)

  def get(self, kind: str, key: str) -> Optional[str]:
    folder = self.folder(kind, key)
    return folder if os.path.exists(os.path.join(folder, COMPLETE)) else None

  def put(self, kind: str, key: str, write: Callable[[str], None], parts: dict) -> Optional[str]:
    """write(folder) fills a fresh folder; `parts` (what the key hashes) is kept beside it for
    whoever looks inside. A cache that cannot be written (read-only, disk full) is skipped:
    the work was done and the run goes on without it."""
    final = self.folder(kind, key)
    try:
      os.makedirs(os.path.dirname(final), exist_ok=True)
      tmp = tempfile.mkdtemp(prefix=f'.{key}.', dir=os.path.dirname(final))
    except OSError:
      return None
    try:
      write(tmp)
      with open(os.path.join(tmp, 'key.json'), 'w', encoding='utf-8') as f:
        json.dump(parts, f, indent=1, sort_keys=True, default=str)
      open(os.path.join(tmp, COMPLETE), 'w').close()
      try:
        os.rename(tmp, final)
      except OSError:  # Another job wrote it first (its entry is the same), or a stale one is there.
        if not self.get(kind, key):
          shutil.rmtree(final, ignore_errors=True)
          os.rename(tmp, final)
    except OSError:
      return None
    finally:
      shutil.rmtree(tmp, ignore_errors=True)
    return final
