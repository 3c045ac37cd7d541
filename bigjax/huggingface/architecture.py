"""A Hugging Face folder's config.json as the `transformer` model's settings.

BERT, RoBERTa and DistilBERT are one architecture here (post-LN encoder, learned positions, a
classification head of dense + activation + dense on the first token's state); they differ in
key names (bigjax.huggingface.weights), in RoBERTa's position table, whose first
pad_token_id + 1 rows no token reads, in DistilBERT's lack of token types, and in the head's
activation (DistilBERT's pre_classifier is followed by a ReLU, BERT's pooler and RoBERTa's
classifier.dense by a tanh).
"""
import dataclasses
import json
import os
from typing import Any, Optional

import ml_collections

from bigjax.errors import ConfigError, DataError

SUPPORTED_TYPES = ('bert', 'roberta', 'distilbert')
CONFIG_FILE = 'config.json'
TOKENIZER_FILE = 'tokenizer.json'
TOKENIZER_CONFIG_FILE = 'tokenizer_config.json'
SPECIAL_TOKENS_FILE = 'special_tokens_map.json'
# hidden_act -> model.transformer.gelu. "gelu" is the exact (erf) one; the others the tanh approximation.
_GELUS = {'gelu': 'exact', 'gelu_new': 'tanh', 'gelu_pytorch_tanh': 'tanh'}


@dataclasses.dataclass(frozen=True)
class Architecture:
  """What bigjax's `transformer` needs to know of a folder's model."""
  model_type: str  # bert | roberta | distilbert
  vocab_size: int
  hidden_size: int
  num_layers: int
  num_heads: int
  intermediate_size: int
  max_positions: int  # Rows of the position table a token can read (RoBERTa's after its offset).
  type_vocab_size: int  # 1 for DistilBERT, which has no token types (a zero row is added).
  layer_norm_eps: float
  gelu: str  # exact | tanh
  head_activation: str  # tanh (BERT's pooler, RoBERTa's head) | relu (DistilBERT's pre_classifier)
  position_offset: int  # Rows of the stored position table before position 0 (RoBERTa: pad_token_id + 1).
  config: dict  # config.json as read: what an export writes back, with the run's labels.

  def model_settings(self) -> dict:
    """{'embed_dim': H, 'transformer': {...}}: the config.model keys that this architecture fixes."""
    return {'embed_dim': self.hidden_size,
            'transformer': dict(num_layers=self.num_layers, num_heads=self.num_heads,
                                intermediate_dim=self.intermediate_size, max_positions=self.max_positions,
                                type_vocab_size=self.type_vocab_size, layer_norm_eps=self.layer_norm_eps,
                                pre_ln=False, gelu=self.gelu, pooler=True, pooler_activation=self.head_activation)}


def _json(path: str) -> dict:
  try:
    with open(path, encoding='utf-8') as f:
      value = json.load(f)
  except FileNotFoundError:
    raise DataError(f'{path}: no such file; a Hugging Face model folder has one') from None
  except json.JSONDecodeError as e:
    raise DataError(f'{path}:{e.lineno}: not JSON ({e.msg})') from None
  if not isinstance(value, dict):
    raise DataError(f'{path}: expected a JSON object, found {type(value).__name__}')
  return value


def optional_json(folder: str, name: str) -> Optional[dict]:
  path = os.path.join(folder, name)
  return _json(path) if os.path.exists(path) else None


def read_architecture(folder: str) -> Architecture:
  """config.json of `folder` as an Architecture; a DataError naming the file and key if it is
  not a model bigjax can run."""
  if not os.path.isdir(folder):
    raise DataError(f'{folder}: no such folder (init.pretrained names a Hugging Face model folder)')
  path = os.path.join(folder, CONFIG_FILE)
  return parse_architecture(_json(path), path)


def parse_architecture(c: dict, path: str) -> Architecture:
  """A config.json's content (read from `path`, which errors name) as an Architecture."""
  model_type = c.get('model_type')
  if model_type not in SUPPORTED_TYPES:
    raise DataError(f'{path}: model_type={model_type!r} is not supported; bigjax imports {SUPPORTED_TYPES}')

  def get(key: str, kind: type = int, default: Any = None):
    value = c.get(key, default)
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or (
        kind is int and int(value) != value):
      raise DataError(f'{path}: {key}={value!r}; expected {"an integer" if kind is int else "a number"}')
    return kind(value)

  if model_type == 'distilbert':
    if c.get('sinusoidal_pos_embds'):
      raise DataError(f'{path}: sinusoidal_pos_embds=true is not supported (learned positions only)')
    act = c.get('activation', 'gelu')
    hidden, layers, heads, inner = get('dim'), get('n_layers'), get('n_heads'), get('hidden_dim')
    positions, types, eps, offset, head = get('max_position_embeddings'), 1, 1e-12, 0, 'relu'
  else:
    embedding_type = c.get('position_embedding_type', 'absolute')
    if embedding_type != 'absolute':
      raise DataError(f'{path}: position_embedding_type={embedding_type!r} is not supported (absolute only)')
    act = c.get('hidden_act', 'gelu')
    hidden, layers = get('hidden_size'), get('num_hidden_layers')
    heads, inner = get('num_attention_heads'), get('intermediate_size')
    types, eps, head = get('type_vocab_size', default=2), get('layer_norm_eps', float, 1e-12), 'tanh'
    offset = get('pad_token_id', default=1) + 1 if model_type == 'roberta' else 0
    positions = get('max_position_embeddings') - offset
  if act not in _GELUS:
    raise DataError(f'{path}: activation {act!r} is not supported; bigjax runs {tuple(_GELUS)}')
  if hidden % heads:
    raise DataError(f'{path}: {heads} attention heads do not divide the hidden size {hidden}')
  return Architecture(model_type=model_type, vocab_size=get('vocab_size'), hidden_size=hidden, num_layers=layers,
                      num_heads=heads, intermediate_size=inner, max_positions=positions, type_vocab_size=types,
                      layer_norm_eps=eps, gelu=_GELUS[act], head_activation=head, position_offset=offset, config=c)


def configure(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The config with init.pretrained's architecture in model.* (a copy; the same config without
  it). The folder fixes the sizes; the config keeps the finetuning choices (pooling, dropout,
  dtype, attention, remat)."""
  folder = config.init.get('pretrained', '')
  if not folder:
    return config
  if config.model.name != 'transformer':
    raise ConfigError(f'init.pretrained={folder} is a Transformer encoder; set --config.model.name=transformer '
                      f'(it is {config.model.name!r})')
  arch = read_architecture(folder)
  if not config.model.transformer.get('pooler', True):
    # The folder's classifier head has its pooler (BERT's and RoBERTa's dense + tanh, DistilBERT's
    # pre_classifier), which an export writes back: leaving it out would silently train another model.
    raise ConfigError(f'model.transformer.pooler=False: a model from init.pretrained={folder} keeps its pooler; '
                      "to keep it fixed, freeze it: --config.optim.param_groups='^pooler_dense/=freeze'")
  config = ml_collections.ConfigDict(config.to_dict())  # Unlocked, and the caller's left as it was.
  settings = arch.model_settings()
  config.model.embed_dim = settings['embed_dim']
  config.model.transformer.update(settings['transformer'])
  if config.data.max_len > arch.max_positions:
    raise ConfigError(f'data.max_len={config.data.max_len} is more than the {arch.max_positions} positions of '
                      f'{os.path.join(folder, CONFIG_FILE)}')
  if max_length(folder) and config.data.max_len > max_length(folder):
    raise ConfigError(f'data.max_len={config.data.max_len} is more than model_max_length={max_length(folder)} of '
                      f'{os.path.join(folder, TOKENIZER_CONFIG_FILE)}')
  return config


def max_length(folder: str) -> int:
  """tokenizer_config.json's model_max_length (0 where it says nothing sensible)."""
  value = (optional_json(folder, TOKENIZER_CONFIG_FILE) or {}).get('model_max_length', 0)
  return int(value) if isinstance(value, (int, float)) and 0 < value < 1e9 else 0


def folder_record(folder: str, arch: Architecture) -> dict:
  """What a run keeps of its pretrained folder (in config.json), to be exported back as one:
  config.json, and the tokenizer's settings files."""
  return {'model_type': arch.model_type, 'config': arch.config,
          'tokenizer_config': optional_json(folder, TOKENIZER_CONFIG_FILE),
          'special_tokens_map': optional_json(folder, SPECIAL_TOKENS_FILE)}
