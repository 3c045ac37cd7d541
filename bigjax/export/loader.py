"""Loads an exported bigjax text classifier and predicts with it.

This file is self-contained on purpose: it imports only jax, numpy, tokenizers and the
standard library, and `experiments.export` copies it into every artifact as `predict.py`,
so a model runs where neither bigjax nor Flax is installed:

  pip install jax numpy tokenizers flatbuffers   # flatbuffers: jax.export's deserializer needs it
  python DIR/predict.py < texts.txt > predictions.jsonl
  python DIR/predict.py texts.jsonl --format=jsonl --text_key=text

Input: one text per line, or JSON lines (an object with a text field, or a JSON string);
output: one JSON record per text, in input order:
  {"label": "1", "probabilities": {"0": 0.1, "1": 0.9}}

Loading executes no code from the artifact and unpickles nothing: the inference function
is StableHLO deserialized by `jax.export`, the parameters are a .npz of plain arrays read
with allow_pickle=False and put back into their tree by a JSON description, the tokenizer
is a Hugging Face tokenizer.json. bigjax's own tools (experiments.predict, experiments.serve)
use bigjax's copy of this module, never the artifact's.
"""
import argparse
import hashlib
import json
import os
import sys
from typing import Callable, Iterable, Iterator, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import tokenizers

FORMAT = 'bigjax.text-classifier'
FORMAT_VERSION = 1
# What each file of an artifact holds (metadata.json records their sha256).
MODULE_FILE = 'model.jax_exported'  # jax.export.Exported.serialize(): StableHLO and its calling convention.
PARAMS_FILE = 'params.npz'  # One plain array per parameter, keyed by its path.
TREE_FILE = 'params_tree.json'  # The parameters' nesting, shapes and dtypes.
TOKENIZER_FILE = 'tokenizer.json'
METADATA_FILE = 'metadata.json'
LOADER_FILE = 'predict.py'  # This file.
HASHED_FILES = (MODULE_FILE, PARAMS_FILE, TREE_FILE, TOKENIZER_FILE)
PAD_ID = 0
FORMATS = ('auto', 'lines', 'jsonl')


class ArtifactError(ValueError):
  """An artifact folder that cannot be loaded; the message says which file and why."""


class InputError(ValueError):
  """Input texts that cannot be read; the message names the line."""


def sha256_of(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def truncate(ids: Sequence[int], room: int, keep: str) -> list[int]:
  """At most `room` of `ids`: the first, the last, or both ends (the first quarter and the last
  three quarters). bigjax.data.tokenizer.truncate, repeated here so that this file stands alone."""
  ids = list(ids)
  if len(ids) <= room:
    return ids
  if keep == 'first':
    return ids[:room]
  if keep == 'last':
    return ids[len(ids) - room:]
  head = room // 4
  return ids[:head] + ids[len(ids) - (room - head):]


def row_sizes(max_rows: int) -> list[int]:
  """The batch row counts used: powers of two below max_rows, and max_rows.

  A shape is compiled once; padding the rows of a batch to one of these bounds the
  compilations per length bucket at about log2(max_rows), where every distinct row count
  would compile anew.
  """
  sizes, size = [], 1
  while size < max_rows:
    sizes.append(size)
    size *= 2
  return sizes + [max_rows]


def params_from_tree(node: dict, arrays) -> dict:
  """The parameter tree that params_tree.json describes, filled from the .npz."""
  if node.get('type') == 'dict':
    return {name: params_from_tree(child, arrays) for name, child in node['items'].items()}
  if node.get('type') != 'array':
    raise ArtifactError(f'{TREE_FILE}: unknown node type {node.get("type")!r}')
  key = node['key']
  if key not in arrays:
    raise ArtifactError(f'{PARAMS_FILE} has no array {key!r} that {TREE_FILE} names')
  array = arrays[key]
  # dtypes numpy does not know (bfloat16) are stored as their bits, as unsigned integers.
  if str(array.dtype) != node['dtype']:
    array = array.view(jnp.dtype(node['dtype']))
  if list(array.shape) != list(node['shape']):
    raise ArtifactError(f'{PARAMS_FILE}: {key!r} has shape {list(array.shape)}, {TREE_FILE} says {node["shape"]}')
  return array


class Artifact:
  """An exported classifier: texts -> token ids (as the run encoded them) -> probabilities."""

  def __init__(self, directory: str, metadata: dict, exported, params, tokenizer: tokenizers.Tokenizer):
    self.directory = directory
    self.metadata = metadata
    self.labels = list(metadata['labels'])
    spec = metadata['input']
    self.max_len = int(spec['max_len'])
    self.keep = spec['keep']
    # A pretrained model's tokenizer wraps each text in special tokens (artifacts written before: none).
    self.prefix, self.suffix = (list(ids) for ids in spec.get('special_ends', ([], [])))
    self.direction = spec.get('direction', 'forward')  # Artifacts of format 1 before it: forward.
    self.buckets = sorted(int(b) for b in spec['bucket_boundaries'])
    self.exported = exported
    self._tokenizer = tokenizer
    self._params = jax.device_put(params)  # Once: every call reuses the device copy.
    self._call = jax.jit(exported.call)  # Compiled once per (rows, width) shape.

  def encode(self, texts: Sequence[str]) -> list[np.ndarray]:
    """int32 token ids per text, exactly as bigjax.runs.Run.encode gives them."""
    encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=False)
    room = self.max_len - len(self.prefix) - len(self.suffix)
    rows = [self.prefix + truncate(e.ids, room, self.keep) + self.suffix for e in encodings]
    step = 1 if self.direction == 'forward' else -1  # A backward model reads a text last token first.
    return [np.asarray(row[::step], np.int32) for row in rows]

  def bucket(self, longest: int) -> int:
    """The trained width that holds `longest` tokens (the widest when none does)."""
    return next((b for b in self.buckets if b >= longest), self.buckets[-1])

  def padded(self, rows: Sequence[np.ndarray], max_rows: Optional[int] = None):
    """(int32[B, T], int32[B]): rows padded to a trained bucket width and B to a row size."""
    rows_out = next(size for size in row_sizes(max(max_rows or len(rows), len(rows))) if size >= len(rows))
    width = self.bucket(max((len(r) for r in rows), default=0))
    token_ids = np.full((rows_out, width), PAD_ID, np.int32)
    lengths = np.zeros((rows_out,), np.int32)  # Filler rows: length 0, their outputs dropped.
    for i, row in enumerate(rows):
      token_ids[i, :len(row)] = row
      lengths[i] = len(row)
    return token_ids, lengths

  def run_rows(self, rows: Sequence[np.ndarray], max_rows: Optional[int] = None) -> np.ndarray:
    """float32[len(rows), K]: one call of the exported function on one padded batch."""
    if not rows:
      return np.zeros((0, len(self.labels)), np.float32)
    token_ids, lengths = self.padded(rows, max_rows)
    return np.asarray(self._call(self._params, token_ids, lengths))[:len(rows)]

  def probabilities(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
    """float32[N, K] in the order of texts; batches cut from the texts sorted by length (less padding)."""
    rows = self.encode(texts)
    order = np.argsort(np.asarray([len(r) for r in rows], np.int64), kind='stable')
    out = np.zeros((len(rows), len(self.labels)), np.float32)
    for start in range(0, len(rows), batch_size):
      index = order[start:start + batch_size]
      out[index] = self.run_rows([rows[i] for i in index], batch_size)
    return out

  def records(self, probabilities: np.ndarray) -> list[dict]:
    """The JSON records of predictions: the most probable label and each label's probability."""
    return [{'label': self.labels[int(np.argmax(p))],
             'probabilities': {name: float(v) for name, v in zip(self.labels, p)}} for p in probabilities]

  def predict(self, texts: Sequence[str], batch_size: int = 256) -> list[dict]:
    return self.records(self.probabilities(texts, batch_size))

  def describe(self) -> dict:
    """The metadata a service publishes (no file paths or hashes)."""
    meta = self.metadata
    return {'format': meta['format'], 'format_version': meta['format_version'], 'created': meta['created'],
            'model': meta['model'], 'labels': self.labels, 'input': meta['input'], 'platforms': meta['platforms'],
            'versions': meta['versions'], 'run': {k: meta['run'].get(k) for k in ('step', 'params_fingerprint')},
            'evaluation': meta.get('evaluation'), 'round_trip': meta.get('round_trip'), 'config': meta['config']}

  def warm_up(self, max_rows: int, on_shape: Optional[Callable[[int, int], None]] = None) -> int:
    """Compiles every (row size, bucket) shape up to max_rows now rather than at the first request."""
    count = 0
    for width in self.buckets:
      for rows in row_sizes(max_rows):
        self._call(self._params, np.zeros((rows, width), np.int32), np.zeros((rows,), np.int32)).block_until_ready()
        count += 1
        if on_shape:
          on_shape(rows, width)
    return count


# The metadata entries load() and Artifact read; a file without one of them is damaged.
METADATA_KEYS = ('format', 'format_version', 'labels', 'input', 'model', 'created', 'platforms', 'versions', 'run',
                 'config')
_DAMAGED = 'the file is damaged: copy the artifact again, or export the run again'


def _read_json(path: str) -> dict:
  """The JSON object in an artifact's file; ArtifactError naming the file if it is cut short
  or not a JSON object (bigjax.files.read_json does this for run folders; this file imports
  nothing of bigjax)."""
  try:
    with open(path, encoding='utf-8') as f:
      text = f.read()
  except OSError as e:
    raise ArtifactError(f'{path}: cannot be read ({e.strerror})') from None
  except UnicodeDecodeError as e:
    raise ArtifactError(f'{path}: not valid JSON (byte {e.object[e.start]:02x} at offset {e.start} is not utf-8); '
                        f'{_DAMAGED}') from None
  try:
    value = json.loads(text)
  except json.JSONDecodeError as e:
    # The text ran out (at the end, or inside a string that never closes): a copy cut short.
    ending = '; the text ends there, cut short' if (e.pos >= len(text.rstrip())
                                                    or e.msg.startswith('Unterminated string')) else ''
    raise ArtifactError(f'{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}{ending}); '
                        f'{_DAMAGED}') from None
  if not isinstance(value, dict):
    kind = {list: 'a JSON list', str: 'a JSON string', bool: 'a JSON boolean'}.get(
        type(value), 'null' if value is None else 'a JSON number')
    raise ArtifactError(f'{path}: holds {kind} where the export writes an object; {_DAMAGED}')
  return value


def _check_metadata(path: str, metadata: dict) -> None:
  """The metadata has the entries Artifact reads, and labels and the encoding settings the
  types it needs."""
  missing = [key for key in METADATA_KEYS if key not in metadata]
  if missing:
    raise ArtifactError(f'{path}: has no {", ".join(repr(k) for k in missing)} entry; {_DAMAGED}')
  labels, spec = metadata['labels'], metadata['input']
  if not (isinstance(labels, list) and labels and all(isinstance(label, str) for label in labels)):
    raise ArtifactError(f'{path}: labels is {repr(labels)[:80]}, not a list of label names; {_DAMAGED}')
  if not (isinstance(spec, dict) and all(key in spec for key in ('max_len', 'keep', 'bucket_boundaries'))
          and isinstance(spec['bucket_boundaries'], list) and spec['bucket_boundaries']):
    raise ArtifactError(f'{path}: input is {repr(spec)[:80]}, not the encoding settings (max_len, keep, '
                        f'bucket_boundaries) the export writes; {_DAMAGED}')
  hashes = metadata.get('files', {})
  if not (isinstance(hashes, dict) and all(isinstance(entry, dict) for entry in hashes.values())):
    raise ArtifactError(f'{path}: files is {repr(hashes)[:80]}, not the files\' sizes and hashes; {_DAMAGED}')


def _backend_names() -> set:
  """The jax.export platform names the default backend answers to."""
  backend = jax.default_backend()
  return {'cuda', 'rocm'} if backend == 'gpu' else {backend}


def load(directory: str, *, verify: bool = True) -> Artifact:
  """Loads an artifact folder; ArtifactError (one line) if it is incomplete, damaged or for another platform."""
  directory = os.path.abspath(directory)
  meta_path = os.path.join(directory, METADATA_FILE)
  if not os.path.isfile(meta_path):
    raise ArtifactError(f'{directory} is not a model artifact: it has no {METADATA_FILE} (python -m '
                        'experiments.export --workdir=RUN --out=DIR writes one)')
  metadata = _read_json(meta_path)
  if metadata.get('format') != FORMAT:
    raise ArtifactError(f'{meta_path}: format {metadata.get("format")!r} is not {FORMAT!r}')
  if metadata.get('format_version') != FORMAT_VERSION:
    raise ArtifactError(f'{meta_path}: format version {metadata.get("format_version")!r}; this loader reads '
                        f'version {FORMAT_VERSION} (use the predict.py inside the artifact, or export it again)')
  _check_metadata(meta_path, metadata)  # After the version check: another version may have other entries.
  missing = [name for name in HASHED_FILES if not os.path.isfile(os.path.join(directory, name))]
  if missing:
    raise ArtifactError(f'{directory} is incomplete: {", ".join(missing)} {"is" if len(missing) == 1 else "are"} '
                        'missing')
  for name in HASHED_FILES:
    path = os.path.join(directory, name)
    expected = metadata.get('files', {}).get(name, {}).get('sha256')
    if verify and expected and sha256_of(path) != expected:
      raise ArtifactError(f'{path} is damaged: its sha256 differs from the one {METADATA_FILE} records; copy the '
                          'artifact again, or export the run again')
  platforms = set(metadata.get('platforms', ()))
  if not platforms & _backend_names():
    raise ArtifactError(f'the artifact was exported for {sorted(platforms)}, not for this machine\'s '
                        f'{jax.default_backend()} backend; export it again with that platform')
  with open(os.path.join(directory, MODULE_FILE), 'rb') as f:
    try:
      exported = jax.export.deserialize(bytearray(f.read()))
    except Exception as e:  # pylint: disable=broad-except  # Any decoding failure means the same to a user.
      raise ArtifactError(f'{os.path.join(directory, MODULE_FILE)}: jax.export cannot deserialize it '
                          f'({type(e).__name__}: {e})') from None
  tree = _read_json(os.path.join(directory, TREE_FILE))
  with np.load(os.path.join(directory, PARAMS_FILE), allow_pickle=False) as arrays:
    params = params_from_tree(tree, {key: arrays[key] for key in arrays.files})
  try:
    tokenizer = tokenizers.Tokenizer.from_file(os.path.join(directory, TOKENIZER_FILE))
  except Exception as e:  # pylint: disable=broad-except  # tokenizers raises a bare Exception.
    raise ArtifactError(f'{os.path.join(directory, TOKENIZER_FILE)}: cannot load the tokenizer ({e}); '
                        f'{_DAMAGED}') from None
  return Artifact(directory, metadata, exported, params, tokenizer)


def read_texts(lines: Iterable[bytes], fmt: str = 'auto', text_key: str = 'text') -> Iterator[str]:
  """Texts from input lines (bytes): one text per line, or JSON lines.

  'lines': every line is a text (an empty line is the empty text, so output line i is
  input line i). 'jsonl': each non-blank line is a JSON object with `text_key`, or a JSON
  string. 'auto': JSON lines if the first line is a JSON object, else lines.
  """
  if fmt not in FORMATS:
    raise InputError(f'format {fmt!r} is unknown; use one of {FORMATS}')
  for number, raw in enumerate(lines, 1):
    try:
      line = raw.decode('utf-8')
    except UnicodeDecodeError as e:
      raise InputError(f'line {number}: byte {raw[e.start]:02x} (column {e.start + 1}) is not valid utf-8') from None
    line = line[:-1] if line.endswith('\n') else line
    line = line[:-1] if line.endswith('\r') else line
    if fmt == 'auto':
      fmt = 'jsonl' if _is_json_object(line) else 'lines'
    if fmt == 'lines':
      yield line
      continue
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except ValueError as e:
      raise InputError(f'line {number}: not JSON ({e}); use --format=lines for plain text') from None
    if isinstance(record, dict):
      record = record.get(text_key)
      if not isinstance(record, str):
        raise InputError(f'line {number}: the object has no string field {text_key!r} (set --text_key)')
    elif not isinstance(record, str):
      raise InputError(f'line {number}: a JSON {type(record).__name__}; expected an object with {text_key!r} '
                       'or a string')
    yield record


def _is_json_object(line: str) -> bool:
  if not line.lstrip().startswith('{'):
    return False
  try:
    return isinstance(json.loads(line), dict)
  except ValueError:
    return False


def predict_stream(artifact: Artifact, texts: Iterable[str], write: Callable[[str], None], *,
                   batch_size: int = 256, chunk: int = 4096,
                   on_progress: Optional[Callable[[int], None]] = None) -> int:
  """Writes one JSON line per text, in input order, reading `chunk` texts at a time (bounded memory)."""
  done, pending = 0, []

  def flush():
    nonlocal done
    for record in artifact.predict(pending, batch_size):
      write(json.dumps(record) + '\n')
    done += len(pending)
    if on_progress:
      on_progress(len(pending))
    pending.clear()

  for text in texts:
    pending.append(text)
    if len(pending) >= chunk:
      flush()
  if pending:
    flush()
  return done


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(description='Predicts labels with the model in this folder (JSONL out).')
  parser.add_argument('input', nargs='?', default='-', help='a file of texts; - or nothing: standard input')
  parser.add_argument('--format', default='auto', choices=FORMATS)
  parser.add_argument('--text_key', default='text', help='the text field of JSON objects')
  parser.add_argument('--batch_size', type=int, default=256)
  parser.add_argument('--model', default=os.path.dirname(os.path.abspath(__file__)),
                      help='the artifact folder (default: the one holding this file)')
  args = parser.parse_args(argv)
  if args.batch_size < 1:
    parser.error('--batch_size must be >= 1')
  try:
    artifact = load(args.model)
    source = sys.stdin.buffer if args.input == '-' else open(args.input, 'rb')  # pylint: disable=consider-using-with
    with source:
      predict_stream(artifact, read_texts(source, args.format, args.text_key), sys.stdout.write,
                     batch_size=args.batch_size)
  except (ArtifactError, InputError, OSError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  sys.stdout.flush()
  return 0


if __name__ == '__main__':
  sys.exit(main())
