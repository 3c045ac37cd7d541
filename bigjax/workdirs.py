"""The folders commands write into, claimed before anything is written.

A command writes only into a folder that is new or empty, or that the same command,
reading the same inputs, wrote before (to resume it). It never writes into a folder it
reads from, into one inside it, or into one that holds its input; and never into a folder
that holds another run or files it did not write. Each is refused before the first byte
is written, so a mistyped `--workdir` costs an error line, never a trained run.

Who wrote a folder is recorded in its `origin.json` (the command and the folders it read).
Runs written before that file existed are recognised by their config.json.

A folder may be a bucket URL (gs://bucket/runs/x): the same checks hold there, through
etils.epath. A bucket has no folders of its own, only objects named by a prefix: an "empty
folder" there is a prefix with no objects under it.
"""
import dataclasses
import os
import tempfile
import uuid
from typing import Mapping, Optional

from etils import epath

from bigjax import files
from bigjax import run_record
from bigjax.errors import ConfigError

ORIGIN_FILE = 'origin.json'
# Write probes of other processes of the same job (see claim): not content.
_PROBE_PREFIX = '.write_test_'
# The files a run's own resume rewrites; a tool's report must not land on one of them.
RUN_FILES = (run_record.FILE, 'results.json', 'metrics.jsonl', 'tokenizer.json', ORIGIN_FILE)
# What to do about a damaged file of a folder about to be written.
_REMEDY = 'the file is damaged: restore it, or choose another folder'


@dataclasses.dataclass(frozen=True)
class Origin:
  """What wrote a folder: a command (`experiments.train`, `experiments.compress --method=prune`)
  and the folders it read (absolute, links resolved)."""
  command: str
  inputs: frozenset = frozenset()

  def describe(self) -> str:
    read = f' from {", ".join(sorted(self.inputs))}' if self.inputs else ''
    return f'{self.command}{read}'


def _real(path: str) -> str:
  """The path compared with others: absolute and links resolved; a URL as given (it has no links)."""
  return files.absolute(path) if files.is_url(path) else os.path.realpath(os.path.abspath(path))


def _inside(path: str, folder: str) -> bool:
  if files.is_url(path) or files.is_url(folder):  # os.path.commonpath reads gs:// as gs:/, and fails on a mix.
    return path == folder or path.startswith(folder.rstrip('/') + '/')
  return os.path.commonpath([path, folder]) == folder


def check_apart(out: str, inputs: Mapping[str, str], out_flag: str = '--workdir') -> None:
  """Refuses an output folder that is one of the inputs, lies inside one, or holds one.

  inputs: {flag or config key: folder}, named in the message.
  """
  target = _real(out)
  for flag, path in inputs.items():
    if not path:
      continue
    source = _real(path)
    if target == source:
      raise ConfigError(f'{out_flag}={out} is the same folder as {flag}={path}: writing there would overwrite '
                        f'what it reads; choose a new folder for {out_flag}')
    if _inside(target, source):
      raise ConfigError(f'{out_flag}={out} lies inside {flag}={path}: writing there would mix new files with '
                        f'what it reads; choose a folder outside it')
    if _inside(source, target):
      raise ConfigError(f'{out_flag}={out} holds {flag}={path}: the output must be a folder of its own, apart '
                        'from what it reads; choose a new folder')


def read_origin(folder: str) -> Optional[Origin]:
  """Who wrote `folder`: its origin.json, or for older runs what their own files say; None
  where nothing there says bigjax wrote it."""
  path = os.path.join(folder, ORIGIN_FILE)
  if epath.Path(path).exists():
    record = _read_json(path)
    if not (isinstance(record, dict) and isinstance(record.get('command'), str)
            and isinstance(record.get('inputs', []), list)):
      raise ConfigError(f'{path}: not an origin record (expected {{"command": ..., "inputs": [...]}}); the file '
                        'is damaged: restore it, or choose another folder')
    return Origin(record['command'], frozenset(record.get('inputs', [])))
  return _older_origin(folder)


def _older_origin(folder: str) -> Optional[Origin]:
  """The origin of a folder written before origin.json existed, from its config.json
  (a run), pretrain.json (word vectors) or learning_curve.json (a curve)."""
  where = epath.Path(folder)
  if (where / 'pretrain.json').exists():
    return Origin('experiments.pretrain_embeddings')
  if (where / 'learning_curve.json').exists():
    return Origin('experiments.learning_curve')
  if not (where / run_record.FILE).exists():
    return None
  record = run_record.read(folder, remedy=_REMEDY)
  argv = record.argv
  script = os.path.splitext(os.path.basename(argv[0]))[0] if argv else ''
  method = next((a.split('=', 1)[1] for a in argv if a.startswith('--method=')), '')
  if script == 'compress' and method:
    command = f'experiments.compress --method={method}'
  else:  # experiments.train or .pretrain (now one command), or trained from Python (a test, a notebook).
    command = f'experiments.train (model {record.model_name})'
  # A quantized run's config is its source's, whose own start it does not read.
  quantization = record.derived.quantization
  read = [quantization['source']] if quantization else list(config_inputs(record.config).values())
  return Origin(command, frozenset(_real(p) for p in read if p))


def config_inputs(config: Mapping) -> dict:
  """The folders a training config reads from, by key: what it starts from or learns from."""
  keys = (('init', 'checkpoint'), ('init', 'pretrained'), ('init', 'embeddings'), ('distill', 'teacher'),
          ('data', 'tokenizer_file'))
  found = {f'{section}.{name}': config.get(section, {}).get(name, '') for section, name in keys}
  return {key: path for key, path in found.items() if path}


def claim(out: str, command: str, inputs: Mapping[str, str] = None, *, out_flag: str = '--workdir',
          record: bool = True) -> str:
  """Checks that `command` may write `out` (see the module docstring), then creates it and
  records the origin. Returns the absolute path.

  record=False checks and creates without writing origin.json: every process of a
  multi-process job checks, one records.
  """
  if not out:
    raise ConfigError(f'{out_flag} is required: the folder to write')
  inputs = {flag: path for flag, path in (inputs or {}).items() if path}
  check_apart(out, inputs, out_flag)
  folder = files.absolute(out)
  wanted = Origin(command, frozenset(_real(p) for p in inputs.values()))
  where = epath.Path(folder)
  if where.exists() and not where.is_dir():
    raise ConfigError(f'{out_flag}={out} is a file; choose a folder')
  if where.is_dir():
    _check_owner(folder, out, out_flag, wanted)
  try:
    # A probe of its own per process: with one shared name, another host's process could
    # delete it in between.
    if files.is_url(folder):  # No folders to make: an object's name makes its prefix.
      probe = where / f'{_PROBE_PREFIX}{uuid.uuid4().hex}'
      probe.write_bytes(b'ok')
      probe.unlink()
    else:
      os.makedirs(folder, exist_ok=True)
      with tempfile.NamedTemporaryFile(dir=folder, prefix=_PROBE_PREFIX) as probe:
        probe.write(b'ok')
        probe.flush()
  except OSError as e:
    raise ConfigError(f'{out_flag}={out} cannot be written ({e.strerror or e}); choose a writable folder') from e
  if record and not (where / ORIGIN_FILE).exists():
    files.write_json(os.path.join(folder, ORIGIN_FILE), {'command': wanted.command, 'inputs': sorted(wanted.inputs)})
  return folder


def _check_owner(folder: str, out: str, out_flag: str, wanted: Origin) -> None:
  entries = sorted(e for e in files.listdir(folder) if not e.startswith(_PROBE_PREFIX))
  if not entries:
    return
  found = read_origin(folder)
  if found is None:
    shown = ', '.join(entries[:4]) + (f' and {len(entries) - 4} more' if len(entries) > 4 else '')
    raise ConfigError(f'{out_flag}={out} holds files bigjax did not write ({shown}); choose a new or empty folder')
  if found != wanted:
    raise ConfigError(f'{out_flag}={out} holds the output of {found.describe()}; this is {wanted.describe()}, '
                      'which may only resume a folder it wrote itself: choose a new or empty folder')


def check_report_file(path: str, flag: str) -> None:
  """Refuses a report file (a tool's --json_out, --output...) that would replace a run's own
  file (its config.json, results.json...): those only the run's own resume rewrites."""
  if not path or path == '-':
    return
  folder = os.path.dirname(files.absolute(path))
  if os.path.basename(path) in RUN_FILES and read_origin(folder) is not None:
    raise ConfigError(f'{flag}={path} would replace a file of the run in {folder}; write the report elsewhere')


def _read_json(path: str):
  return files.read_json(path, remedy=_REMEDY)
