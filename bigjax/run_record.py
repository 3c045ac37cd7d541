"""What a run folder's config.json holds, as one versioned record, written and read here only.

config.json is what every stage after training knows of a run: evaluation, compression,
attributions, export, finetuning from it and the claim of its folder read it, often on
another machine, from runs written by older code. `RunRecord` is its content: the resolved
config (a plain dict, the ConfigDict's JSON), what the run derived from its data
(`Derived`, typed), argv and package versions. `read(workdir)` is the one place the file
is read: it checks what the readers rely on (a DataError naming the file and the entry
for a damaged one) and fills what older runs lack with the defaults documented below, so
that readers index fields and never guess defaults themselves.

Version policy: `format_version` counts layouts. A file without it is version 0, the layout
written before this record existed (the same entries, less format_version). `from_json`
reads every version up to FORMAT_VERSION and returns the record in today's layout (the
defaults filled, format_version = FORMAT_VERSION); a newer version is refused, since this
code cannot know what changed. A new entry with a default for older runs needs no new
version; an entry renamed, removed or given another meaning does, with its upgrade in
from_json.
"""
import copy
import dataclasses
import os
import sys
import types
import typing
from typing import Optional

from etils import epath

from bigjax import files
from bigjax.errors import ConfigError, DataError

FORMAT_VERSION = 1
FILE = 'config.json'

# Data-section keys that readers use and that runs from before them lack, with the value those
# runs behaved as: texts cut to their first max_len tokens, read forward as plain text, batch
# widths smallest_bucket * 2^k.
DATA_DEFAULTS = {'keep': 'first', 'direction': 'forward', 'text_form': 'plain', 'bucket_growth': 2.0}

# The packages whose versions a run records: what its numbers may depend on.
_PACKAGES = ('jax', 'flax', 'optax', 'orbax.checkpoint', 'tokenizers', 'numpy')


@dataclasses.dataclass(frozen=True, kw_only=True)
class Derived:
  """What a run derived from its data and its machine, as config.json's `derived` holds it.

  The defaults are what a run written before the field existed is read as; 0 for a count
  means "not recorded". The optional fields (None) are written only where they apply.
  """
  vocab_size: int
  num_classes: int  # 0 for a language model.
  label_names: list[str] = dataclasses.field(default_factory=list)  # []: the names are the class ids.
  task: str = 'classification'  # bigjax.tasks: runs from before language models were classifiers.
  selection_metric: str = 'dev_accuracy'  # The dev metric that picks best/.
  higher_is_better: bool = True
  total_steps: int = 0
  steps_per_epoch: int = 0
  checkpoint_every_steps: int = 0
  data_fingerprint: str = ''  # What a resumed checkpoint must have been trained on.
  # One epoch's batches: batches, distinct_shapes, padding_fraction, real_tokens (and a language
  # model's tokens_per_epoch).
  train_batches: dict = dataclasses.field(default_factory=dict)
  # The padded widths the run compiles; a record read from a file without them has [data.max_len].
  bucket_boundaries: list[int]
  devices: int = 0
  processes: int = 0
  global_batch_rows: int = 0  # Rows of a global batch (after rounding to the devices).
  # Where the parameters started: {} (fresh), {'checkpoint', 'step', 'drop', 'copied', 'dropped'}
  # or {'embeddings'}.
  init: dict = dataclasses.field(default_factory=dict)
  # Optional: written where they apply.
  data_from_cache: Optional[dict] = None  # A classifier's {'tokenizer': bool, 'splits': bool}.
  train_examples: Optional[int] = None  # A classifier's training examples.
  documents: Optional[dict] = None  # A language model's documents per split.
  tokens: Optional[dict] = None  # A language model's tokens per split.
  # A masked language model's {'rows': rows per split (documents cut to data.max_len tokens),
  # 'max_predictions': prediction slots per row, 'mask_id': the mask token's id}.
  masked_lm: Optional[dict] = None
  distill: Optional[dict] = None  # A distilled student's {'teacher': workdir}.
  # A quantized run's {'method', 'mode', 'activations', 'source', 'source_step',
  # 'calibration_examples', 'stored_bytes'} (bigjax.compress.quantized_run).
  quantization: Optional[dict] = None
  # A DP-SGD run's privacy (bigjax.privacy.Plan.record at its last step: epsilon, delta, noise,
  # sampling), with 'tokenizer' (where its public tokenizer came from) and 'private' (what the
  # guarantee covers).
  privacy: Optional[dict] = None

  def to_json(self) -> dict:
    """The JSON object config.json holds: every field, less the optional ones that are None."""
    return {field.name: copy.deepcopy(getattr(self, field.name)) for field in dataclasses.fields(self)
            if not (field.name in _OPTIONAL and getattr(self, field.name) is None)}

  @classmethod
  def from_json(cls, value, path: str, *, max_len: Optional[int] = None,
                remedy: str = files.COPY_AGAIN) -> 'Derived':
    """The fields of a `derived` object from the file at `path`, checked, with the defaults for
    older runs; max_len gives the bucket widths of a run that did not record them. Entries it
    does not know (written by a newer bigjax of the same format version) are left out."""
    where = f'{path} (its derived)'
    files.check_object(value, where, ('vocab_size', 'num_classes'), remedy=remedy)
    fields = {}
    for name, hint in _HINTS.items():
      if name not in value:
        continue
      item = value[name]
      if name == 'label_names':
        item = _label_names(item, value['num_classes'], path, remedy)
      elif name == 'bucket_boundaries' and not item:
        continue  # [] or null: not recorded, as a missing entry.
      elif name == 'num_classes' and not (_is_int(item) and item >= 0):
        raise DataError(f'{path}: derived.num_classes is {item!r}, not a count; {remedy}')
      elif not _has_type(item, hint):
        raise DataError(f'{path}: derived.{name} is {repr(item)[:80]}, not {_describe(hint)}; {remedy}')
      if name in _RECORD_KEYS and item is not None:
        files.check_object(item, f'{path} (its derived.{name})', _RECORD_KEYS[name], remedy=remedy)
      fields[name] = copy.deepcopy(item)
    if 'bucket_boundaries' not in fields:
      if max_len is None:
        files.check_object(value, where, ('bucket_boundaries',), remedy=remedy)
      fields['bucket_boundaries'] = [max_len]
    return cls(**fields)


_OPTIONAL = ('data_from_cache', 'train_examples', 'documents', 'tokens', 'masked_lm', 'distill', 'quantization',
             'privacy')
_HINTS = typing.get_type_hints(Derived)
# What the readers index in Derived's records.
_RECORD_KEYS = {'distill': ('teacher',), 'quantization': ('mode', 'activations', 'source')}


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunRecord:
  """The content of a run folder's config.json (see the module docstring)."""
  format_version: int = FORMAT_VERSION
  config: dict  # The resolved config as JSON, its data section with DATA_DEFAULTS for older runs.
  derived: Derived
  argv: list[str] = dataclasses.field(default_factory=list)  # The command that wrote it.
  versions: dict[str, str] = dataclasses.field(default_factory=dict)  # Package -> version.

  @property
  def data(self) -> dict:
    """config.data: how the run read and encoded its texts (DATA_DEFAULTS filled for older runs)."""
    return self.config['data']

  @property
  def model(self) -> dict:
    """config.model: the model section registry.from_section builds the model from."""
    return self.config['model']

  @property
  def model_name(self) -> str:
    return self.config['model']['name']

  @property
  def pruning(self) -> Optional[dict]:
    """config.prune where the run pruned its weights (target_sparsity > 0); None where it did not,
    and for runs from before pruning existed (no prune section)."""
    prune = self.config.get('prune') or {}
    return prune if prune.get('target_sparsity') else None

  def to_json(self) -> dict:
    return {'format_version': self.format_version, 'config': copy.deepcopy(self.config),
            'derived': self.derived.to_json(), 'argv': list(self.argv), 'versions': dict(self.versions)}

  @classmethod
  def from_json(cls, value, path: str, *, remedy: str = files.COPY_AGAIN) -> 'RunRecord':
    """The record in a config.json object read from `path`, in today's layout (the defaults of
    older versions filled); a DataError naming the file and the entry for a damaged one."""
    files.check_object(value, path, ('config', 'derived'), remedy=remedy)
    version = value.get('format_version', 0)  # Version 0 had no format_version entry.
    if not (_is_int(version) and version >= 0):
      raise DataError(f'{path}: format_version is {repr(version)[:80]}, not a version number; {remedy}')
    if version > FORMAT_VERSION:
      raise DataError(f'{path}: format_version {version} is newer than this bigjax reads (up to '
                      f'{FORMAT_VERSION}): read the run with the bigjax that wrote it, or a newer one')
    config = copy.deepcopy(files.check_object(value['config'], f'{path} (its config)', ('model', 'data'),
                                              remedy=remedy))
    model = files.check_object(config['model'], f'{path} (its config.model)', ('name',), remedy=remedy)
    if not isinstance(model['name'], str):
      raise DataError(f'{path}: config.model.name is {repr(model["name"])[:80]}, not a model name; {remedy}')
    data = files.check_object(config['data'], f'{path} (its config.data)', ('max_len',), remedy=remedy)
    if not (_is_int(data['max_len']) and data['max_len'] >= 1):
      raise DataError(f'{path}: config.data.max_len is {repr(data["max_len"])[:80]}, not a token count; '
                      f'{remedy}')
    config['data'] = {**data, **{key: value for key, value in DATA_DEFAULTS.items() if key not in data}}
    derived = Derived.from_json(value['derived'], path, max_len=data['max_len'], remedy=remedy)
    argv, versions = value.get('argv', []), value.get('versions', {})  # Both written by every version.
    if not _has_type(argv, list[str]):
      raise DataError(f'{path}: argv is {repr(argv)[:80]}, not a command line; {remedy}')
    if not isinstance(versions, dict):
      raise DataError(f'{path}: versions is {repr(versions)[:80]}, not package versions; {remedy}')
    return cls(format_version=FORMAT_VERSION, config=config, derived=derived, argv=list(argv),
               versions=dict(versions))


def package_versions() -> dict[str, str]:
  """The versions of the packages a run's numbers depend on (those installed)."""
  versions = {}
  for package in _PACKAGES:
    try:
      versions[package] = __import__(package, fromlist=['__version__']).__version__
    except (ImportError, AttributeError):
      pass
  return versions


def new_record(config: dict, derived: Derived) -> RunRecord:
  """The record of a run starting now: its config (as JSON), derived fields, argv and versions."""
  return RunRecord(config=config, derived=derived, argv=list(sys.argv), versions=package_versions())


def read(workdir: str, *, remedy: str = files.COPY_AGAIN) -> RunRecord:
  """The record in workdir's config.json: a ConfigError if the folder has none (it is no run),
  a DataError naming the file, and followed by `remedy`, if the file is damaged."""
  path = os.path.join(workdir, FILE)
  if not epath.Path(path).exists():
    raise ConfigError(f'{workdir} is not a bigjax run: it has no {FILE} (a training run writes it when it '
                      'starts)')
  return RunRecord.from_json(files.read_json(path, remedy=remedy), path, remedy=remedy)


def write(workdir: str, record: RunRecord) -> None:
  """workdir/config.json, written whole (bigjax.files.write_text): a reader never sees half of it."""
  files.write_json(os.path.join(workdir, FILE), record.to_json())


def _label_names(value, num_classes: int, path: str, remedy: str) -> list:
  """The class names, checked against the class count: a wrong list would mislabel every report
  and prediction silently. [] or null: the names are the class ids."""
  if value and not (isinstance(value, list) and len(value) == num_classes
                    and all(isinstance(name, str) for name in value)):
    raise DataError(f'{path}: derived.label_names is {repr(value)[:80]}, not the names of the {num_classes} '
                    f'classes; {remedy}')
  return list(value or [])


def _is_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _has_type(value, hint) -> bool:
  """Whether a JSON value has the type a field declares (the entries of dicts are not checked)."""
  origin, args = typing.get_origin(hint), typing.get_args(hint)
  if origin in (typing.Union, types.UnionType):
    return any(_has_type(value, arg) for arg in args)
  if hint is type(None):
    return value is None
  if hint is int:
    return _is_int(value)
  if hint in (str, bool):
    return isinstance(value, hint)
  if hint is dict or origin is dict:
    return isinstance(value, dict)
  if origin is list:
    return isinstance(value, list) and all(_has_type(item, args[0]) for item in value)
  raise TypeError(f'no JSON check for {hint}')


def _describe(hint) -> str:
  """A field's type as an error message says it ('an integer', 'a list of strings')."""
  origin, args = typing.get_origin(hint), typing.get_args(hint)
  if origin in (typing.Union, types.UnionType):
    return ' or '.join(_describe(arg) for arg in args if arg is not type(None)) + ' or null'
  if origin is list:
    return 'a list of ' + {int: 'integers', str: 'strings'}[args[0]]
  return {int: 'an integer', str: 'a string', bool: 'true or false', dict: 'a JSON object'}[origin or hint]
