"""The files of a run folder (config.json, results.json, ...): where they may live, how they
are written whole, and how they are read back, damaged or not.

A run folder is a local path or a bucket URL (gs://bucket/runs/x, for a pod whose hosts share
no disk). Every file bigjax writes or reads in one goes through etils.epath, which speaks both;
Orbax writes the checkpoints itself. A bucket has no rename and no append: see write_text, and
bigjax.metrics for metrics.jsonl.

Run folders are copied between machines and arrive truncated or overwritten. A damaged
file must stop a command with one line naming it, what is wrong and what to do, never a
JSONDecodeError or KeyError traceback from deep inside: read_json checks what the callers
rely on (JSON, an object, the keys they index) before they index it.
"""
import json
import os
from typing import Sequence

from etils import epath

from bigjax.errors import DataError

# What to do about a damaged file of a run: nothing bigjax does can rebuild it.
COPY_AGAIN = 'the file is damaged: copy it again from the machine that made the run'


def is_url(path) -> bool:
  """Whether `path` names a place in an object store (gs://bucket/...) rather than a local path."""
  return '://' in os.fspath(path)


def absolute(path: str) -> str:
  """A local path made absolute (links kept); a URL as given, less a trailing '/'."""
  return path.rstrip('/') if is_url(path) else os.path.abspath(path)


def listdir(folder: str) -> list[str]:
  """The names in a folder. Locally all of them: epath's listing leaves out names ending in '~'
  (editor backups), which in a bucket it does too."""
  return [p.name for p in epath.Path(folder).iterdir()] if is_url(folder) else os.listdir(folder)


def write_text(path: str, text: str) -> None:
  """Writes `text` (utf-8) so that a reader, or a run killed meanwhile, never leaves half of it.

  Locally the text goes to `path`.tmp, then moves in place. A bucket has no atomic rename (a
  copy, then a delete), but shows an object only once its upload is complete: written in place.
  """
  target = epath.Path(path)
  if is_url(path):
    target.write_text(text, encoding='utf-8')
    return
  tmp = epath.Path(path + '.tmp')
  tmp.write_text(text, encoding='utf-8')
  tmp.replace(target)


def write_json(path: str, value) -> None:
  """A JSON file as bigjax writes them (indented by 2), written whole (write_text)."""
  write_text(path, json.dumps(value, indent=2))


def read_json(path: str, keys: Sequence[str] = (), *, remedy: str = COPY_AGAIN) -> dict:
  """The JSON object in the file at `path`, which must have `keys`; a DataError saying
  what is wrong with the file, followed by `remedy`, if it is unreadable or otherwise."""
  try:
    raw = epath.Path(path).read_bytes()
  except OSError as e:
    raise DataError(f'{path}: cannot be read ({e.strerror or e})') from None
  try:
    text = raw.decode('utf-8')
  except UnicodeDecodeError as e:
    raise DataError(f'{path}: not valid JSON (byte {raw[e.start]:02x} at offset {e.start} is not utf-8); '
                    f'{remedy}') from None
  try:
    value = json.loads(text)
  except json.JSONDecodeError as e:
    ending = '; the text ends there, cut short' if ends_early(text, e) else ''
    raise DataError(f'{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}{ending}); '
                    f'{remedy}') from None
  return check_object(value, path, keys, remedy=remedy)


def ends_early(text: str, error: json.JSONDecodeError) -> bool:
  """Whether the text ran out before the JSON did (at its end, or inside a string that never
  closes): what a copy cut short gives, and the likely cause, so the message says so."""
  return error.pos >= len(text.rstrip()) or error.msg.startswith('Unterminated string')


def check_object(value, where: str, keys: Sequence[str] = (), *, remedy: str = COPY_AGAIN) -> dict:
  """`value` if it is a JSON object holding `keys`; else a DataError naming `where` (a file,
  or a file and the entry within it) and `remedy`."""
  if not isinstance(value, dict):
    raise DataError(f'{where}: holds {json_type(value)} where bigjax writes an object; {remedy}')
  missing = [key for key in keys if key not in value]
  if missing:
    raise DataError(f'{where}: has no {", ".join(repr(k) for k in missing)} entry; {remedy}')
  return value


def json_type(value) -> str:
  """How JSON calls the type of a parsed value, with its article ('a JSON list', 'null')."""
  if value is None:
    return 'null'
  names = {bool: 'a JSON boolean', str: 'a JSON string', list: 'a JSON list', dict: 'a JSON object',
           int: 'a JSON number', float: 'a JSON number'}
  return names.get(type(value), type(value).__name__)
