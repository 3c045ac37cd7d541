"""Safetensors tensors <-> the `transformer` model's parameters.

One table per model type (`key_table`) names each tensor of a Hugging Face checkpoint, the
bigjax parameter it is, and how its layout differs; `read_params` reads a folder through it and
`to_tensors` writes a run's parameters back through the same table, so the two directions cannot
disagree. Layouts: PyTorch keeps a Linear's weight as [out, in] (bigjax's Dense kernel is
[in, out]); bigjax's attention projections keep the heads apart ([H, heads, head_dim], and
[heads, head_dim, H] for the output projection). Keys are read with or without the base model's
prefix (`bert.`, `roberta.`, `distilbert.`), and LayerNorm's `gamma`/`beta` as `weight`/`bias`
(checkpoints converted from TensorFlow).
"""
import dataclasses
import json
import os
import re
from typing import Callable, Optional, Sequence

import numpy as np
import safetensors
from safetensors import numpy as safetensors_numpy

from bigjax.errors import ConfigError, DataError
from bigjax.huggingface.architecture import Architecture

WEIGHTS_FILE = 'model.safetensors'
INDEX_FILE = 'model.safetensors.index.json'
BASE_PREFIX = {'bert': 'bert.', 'roberta': 'roberta.', 'distilbert': 'distilbert.'}
# The parameters of the classification head: absent from a base model's folder, they start fresh
# (as transformers initializes them for AutoModelForSequenceClassification).
HEAD_MODULES = ('pooler_dense', 'head')
# Keys that a classifier leaves out unless init.pretrained_unused says otherwise: pretraining heads
# (BERT's cls.*, RoBERTa's lm_head.*, DistilBERT's vocab_*), the position_ids buffer older
# checkpoints saved, and RoBERTa's pooler, which its classifier does not use.
DEFAULT_UNUSED = r'^cls\.|^lm_head\.|^vocab_(transform|layer_norm|projector)\.|position_ids$'
_ROBERTA_POOLER = r'^pooler\.'


@dataclasses.dataclass(frozen=True)
class Layout:
  """How a tensor's layout maps to a parameter's: to_param(tensor), to_tensor(param)."""
  to_param: Callable[[np.ndarray], np.ndarray]
  to_tensor: Callable[[np.ndarray], np.ndarray]


def _layouts(arch: Architecture) -> dict:
  heads, head_dim, hidden = arch.num_heads, arch.hidden_size // arch.num_heads, arch.hidden_size
  offset = arch.position_offset
  return {
      'same': Layout(lambda t: t, lambda p: p),
      'linear': Layout(lambda t: t.T, lambda p: p.T),
      # query/key/value: [heads*head_dim, H] -> [H, heads, head_dim]; bias [heads*head_dim] -> [heads, head_dim].
      'heads_in': Layout(lambda t: t.T.reshape(hidden, heads, head_dim), lambda p: p.reshape(hidden, -1).T),
      'heads_bias': Layout(lambda t: t.reshape(heads, head_dim), lambda p: p.reshape(-1)),
      # The attention's output projection: [H, heads*head_dim] -> [heads, head_dim, H].
      'heads_out': Layout(lambda t: t.T.reshape(heads, head_dim, hidden), lambda p: p.reshape(-1, hidden).T),
      # RoBERTa's first rows are never read by a token: bigjax's table starts at position 0.
      'positions': Layout(lambda t: t[offset:],
                          lambda p: np.concatenate([np.zeros((offset, p.shape[1]), p.dtype), p])),
  }


@dataclasses.dataclass(frozen=True)
class Entry:
  key: str  # The tensor's name, without the base model's prefix.
  path: str  # The parameter's path in bigjax ('layers_0/query/kernel').
  layout: str
  shape: Optional[tuple]  # The tensor's shape; None where it depends on the run (the classifier's labels).
  in_base: bool = True  # Named under the base model's prefix in a task model's folder.


def _linear(key: str, path: str, n_in: int, n_out: Optional[int], in_base: bool = True) -> list[Entry]:
  return [Entry(f'{key}.weight', f'{path}/kernel', 'linear', None if n_out is None else (n_out, n_in), in_base),
          Entry(f'{key}.bias', f'{path}/bias', 'same', None if n_out is None else (n_out,), in_base)]


def _norm(key: str, path: str, hidden: int) -> list[Entry]:
  return [Entry(f'{key}.weight', f'{path}/scale', 'same', (hidden,)),
          Entry(f'{key}.bias', f'{path}/bias', 'same', (hidden,))]


def key_table(arch: Architecture) -> list[Entry]:
  """Every tensor of `arch`'s sequence classifier checkpoint, in the order transformers writes them."""
  hidden, inner = arch.hidden_size, arch.intermediate_size
  table = [Entry('embeddings.word_embeddings.weight', 'embedding/embedding', 'same', (arch.vocab_size, hidden)),
           Entry('embeddings.position_embeddings.weight', 'position_embedding', 'positions',
                 (arch.max_positions + arch.position_offset, hidden))]
  if arch.model_type != 'distilbert':
    table.append(Entry('embeddings.token_type_embeddings.weight', 'type_embedding', 'same',
                       (arch.type_vocab_size, hidden)))
  table += _norm('embeddings.LayerNorm', 'embedding_norm', hidden)
  distil = arch.model_type == 'distilbert'
  names = (dict(query='attention.q_lin', key='attention.k_lin', value='attention.v_lin',
                attention_output='attention.out_lin', attention_norm='sa_layer_norm', intermediate='ffn.lin1',
                output='ffn.lin2', output_norm='output_layer_norm') if distil else
           dict(query='attention.self.query', key='attention.self.key', value='attention.self.value',
                attention_output='attention.output.dense', attention_norm='attention.output.LayerNorm',
                intermediate='intermediate.dense', output='output.dense', output_norm='output.LayerNorm'))
  for i in range(arch.num_layers):
    layer, path = f'{"transformer" if distil else "encoder"}.layer.{i}.', f'layers_{i}/'
    for projection in ('query', 'key', 'value'):
      key = layer + names[projection]
      table += [Entry(f'{key}.weight', f'{path}{projection}/kernel', 'heads_in', (hidden, hidden)),
                Entry(f'{key}.bias', f'{path}{projection}/bias', 'heads_bias', (hidden,))]
    key = layer + names['attention_output']
    table += [Entry(f'{key}.weight', f'{path}attention_output/kernel', 'heads_out', (hidden, hidden)),
              Entry(f'{key}.bias', f'{path}attention_output/bias', 'same', (hidden,))]
    table += _norm(layer + names['attention_norm'], path + 'attention_norm', hidden)
    table += _linear(layer + names['intermediate'], path + 'intermediate', hidden, inner)
    table += _linear(layer + names['output'], path + 'output', inner, hidden)
    table += _norm(layer + names['output_norm'], path + 'output_norm', hidden)
  if arch.model_type == 'bert':
    table += _linear('pooler.dense', 'pooler_dense', hidden, hidden) + _linear('classifier', 'head', hidden, None,
                                                                                  in_base=False)
  elif arch.model_type == 'roberta':
    table += (_linear('classifier.dense', 'pooler_dense', hidden, hidden, in_base=False) +
              _linear('classifier.out_proj', 'head', hidden, None, in_base=False))
  else:
    table += (_linear('pre_classifier', 'pooler_dense', hidden, hidden, in_base=False) +
              _linear('classifier', 'head', hidden, None, in_base=False))
  return table


def _weight_files(folder: str) -> dict:
  """{key as stored: path of the file holding it}, from the index of a sharded checkpoint or the one file."""
  index = os.path.join(folder, INDEX_FILE)
  if os.path.exists(index):
    try:
      with open(index, encoding='utf-8') as f:
        weight_map = json.load(f)['weight_map']
    except (ValueError, KeyError, TypeError) as e:
      raise DataError(f'{index}: not a safetensors index (a JSON object with a weight_map): {e}') from None
    return {key: os.path.join(folder, name) for key, name in weight_map.items()}
  single = os.path.join(folder, WEIGHTS_FILE)
  if not os.path.exists(single):
    others = [n for n in ('pytorch_model.bin', 'tf_model.h5', 'flax_model.msgpack') if os.path.exists(
        os.path.join(folder, n))]
    hint = (f'; it has {others[0]}: save it again with save_pretrained(..., safe_serialization=True)' if others
            else '')
    raise DataError(f'{folder}: no {WEIGHTS_FILE} or {INDEX_FILE}{hint}')
  try:
    with safetensors.safe_open(single, framework='np') as f:
      return {key: single for key in f.keys()}
  except Exception as e:  # safetensors raises SafetensorError (or OSError) for a damaged header.
    raise DataError(f'{single}: cannot read it as safetensors ({e}); the file is damaged or incomplete: copy '
                    'it again') from None


def _read(files: dict, keys: Sequence[str]) -> dict:
  """{key: float32 array} for `keys`, each file opened once."""
  by_file = {}
  for key in keys:
    by_file.setdefault(files[key], []).append(key)
  out = {}
  for path, names in by_file.items():
    try:
      with safetensors.safe_open(path, framework='np') as f:
        for name in names:
          out[name] = f.get_tensor(name)
    except FileNotFoundError:
      raise DataError(f'{path}: no such file (named by {INDEX_FILE})') from None
    except Exception as e:
      raise DataError(f'{path}: cannot read it as safetensors ({e}); the file is damaged or incomplete: copy it '
                      'again') from None
  for name, value in out.items():
    if not np.issubdtype(value.dtype, np.floating):
      raise DataError(f'{files[name]}: {name} is {value.dtype}, not a floating-point tensor')
  return {name: value.astype(np.float32) for name, value in out.items()}


def _normalized(key: str, prefix: str) -> str:
  key = key[len(prefix):] if key.startswith(prefix) else key
  return re.sub(r'LayerNorm\.gamma$', 'LayerNorm.weight', re.sub(r'LayerNorm\.beta$', 'LayerNorm.bias', key))


def _nest(flat: dict) -> dict:
  tree = {}
  for path, value in flat.items():
    node = tree
    *modules, name = path.split('/')
    for module in modules:
      node = node.setdefault(module, {})
    node[name] = value
  return tree


def unused_patterns(arch: Architecture, setting: Optional[str]) -> list[str]:
  """init.pretrained_unused as patterns ('' or None: the defaults, and RoBERTa's pooler for RoBERTa)."""
  if setting:
    return [p.strip() for p in setting.split(',') if p.strip()]
  return [DEFAULT_UNUSED] + ([_ROBERTA_POOLER] if arch.model_type == 'roberta' else [])


def read_params(folder: str, arch: Architecture, unused: Sequence[str] = ()) -> tuple[dict, dict]:
  """(params, record): the folder's tensors as the `transformer` model's parameters (a nested
  dict of float32 numpy arrays), and {'fresh': [...], 'unused': [...]}: the head parameters the
  folder lacks (left to their initialization) and the keys left out by `unused` (patterns).

  A tensor the table expects and the folder lacks (outside the classification head), a tensor
  of another shape, and a tensor nobody reads are each a DataError naming it.
  """
  files = _weight_files(folder)
  prefix = BASE_PREFIX[arch.model_type]
  stored = {_normalized(key, prefix): key for key in files}
  table = key_table(arch)
  layouts = _layouts(arch)
  where = os.path.join(folder, INDEX_FILE if os.path.exists(os.path.join(folder, INDEX_FILE)) else WEIGHTS_FILE)
  missing = [e.key for e in table if e.key not in stored and e.path.split('/')[0] not in HEAD_MODULES]
  if missing:
    shown = ', '.join(missing[:4]) + (f' and {len(missing) - 4} more' if len(missing) > 4 else '')
    raise DataError(f'{where}: {len(missing)} tensor(s) of a {arch.model_type} model with {arch.num_layers} layers '
                    f'are missing: {shown}')
  patterns = [re.compile(p) for p in unused]
  known = {e.key for e in table}
  left_out = sorted(k for k in stored if k not in known and any(p.search(k) for p in patterns))
  leftover = sorted(k for k in stored if k not in known and k not in left_out)
  if leftover:
    shown = ', '.join(stored[k] for k in leftover[:4]) + (f' and {len(leftover) - 4} more' if len(leftover) > 4
                                                          else '')
    raise DataError(f'{where}: {len(leftover)} tensor(s) that a {arch.model_type} model of config.json does not '
                    f'have: {shown}; leave them out with --config.init.pretrained_unused=REGEX,... (its default: '
                    f'{",".join(unused_patterns(arch, ""))})')
  present = [e for e in table if e.key in stored]
  tensors = _read(files, [stored[e.key] for e in present])
  flat = {}
  for entry in present:
    tensor = tensors[stored[entry.key]]
    if entry.shape is not None and tuple(tensor.shape) != entry.shape:
      raise DataError(f'{files[stored[entry.key]]}: {stored[entry.key]} has shape {list(tensor.shape)}; '
                      f'config.json makes it {list(entry.shape)}')
    if entry.shape is None:  # The classifier's output layer: [labels, H] and [labels].
      kernel = entry.path.endswith('kernel')
      if not (tensor.ndim == 2 and tensor.shape[1] == arch.hidden_size if kernel else tensor.ndim == 1):
        expected = f'[labels, {arch.hidden_size}]' if kernel else '[labels]'
        raise DataError(f'{files[stored[entry.key]]}: {stored[entry.key]} has shape {list(tensor.shape)}; '
                        f'expected {expected}')
    flat[entry.path] = layouts[entry.layout].to_param(tensor)
  if arch.model_type == 'distilbert':  # No token types: type 0's row, added to every token, is zero.
    flat['type_embedding'] = np.zeros((1, arch.hidden_size), np.float32)
  fresh = sorted({e.path.split('/')[0] for e in table if e.key not in stored})
  partial = [e.key for e in table if e.key in stored and e.path.split('/')[0] in fresh]
  if partial:  # A head with some of its tensors: neither the folder's head nor a fresh one.
    raise DataError(f'{where}: has {", ".join(partial)} but not the rest of that layer '
                    f'({", ".join(e.key for e in table if e.key not in stored)})')
  return _nest(flat), {'fresh': fresh, 'unused': [stored[k] for k in left_out]}


def to_tensors(params: dict, arch: Architecture) -> dict:
  """{key: float32 array}: the parameters of a classifier as `arch`'s sequence-classification
  checkpoint (the base model's keys under its prefix), for safetensors.numpy.save_file."""
  flat = {'/'.join(path): np.asarray(leaf, np.float32) for path, leaf in _flatten(params)}
  layouts = _layouts(arch)
  if arch.model_type == 'distilbert':
    # DistilBERT has no token types: type 0's row, which every token adds, goes into every position's row.
    flat['position_embedding'] = flat['position_embedding'] + flat.pop('type_embedding')[0]
  prefix = BASE_PREFIX[arch.model_type]
  out = {}
  for entry in key_table(arch):
    if entry.path not in flat:
      raise ConfigError(f'the run has no parameter {entry.path}, which {entry.key} of a {arch.model_type} '
                        'sequence classifier needs')
    out[(prefix if entry.in_base else '') + entry.key] = np.ascontiguousarray(
        layouts[entry.layout].to_tensor(flat.pop(entry.path)))
  flat = {k: v for k, v in flat.items() if not k.startswith('mlm_head/')}
  if flat:
    raise ConfigError(f'the run has parameters a {arch.model_type} sequence classifier has no place for: '
                      f'{", ".join(sorted(flat))}')
  return out


def save(tensors: dict, path: str) -> None:
  safetensors_numpy.save_file(tensors, path, metadata={'format': 'pt'})


def _flatten(tree, prefix=()):
  for name, value in tree.items():
    if isinstance(value, dict):
      yield from _flatten(value, prefix + (name,))
    else:
      yield prefix + (name,), value
