"""Model names -> Flax modules, built from a config's model section, and the ModelFns view
that training, evaluation, attributions and export get of them."""

import jax.numpy as jnp

from bigjax.models.lstm import LSTMClassifier, LSTMLanguageModel
from bigjax.models.mlp import ACTIVATIONS as _MLP_ACTIVATIONS, MLPClassifier
from bigjax.types import ModelFns

MODELS = {'mlp': MLPClassifier, 'lstm': LSTMClassifier, 'lstm_lm': LSTMLanguageModel}
POOLINGS = ('last', 'concat')
MLP_ACTIVATIONS = tuple(_MLP_ACTIVATIONS)
COMPUTE_DTYPES = {'float32': None, 'bfloat16': jnp.bfloat16}  # None: the params' dtype.


def build_model(name: str, **kwargs):
  if name not in MODELS:
    raise ValueError(f'unknown model {name!r}; known: {sorted(MODELS)}')
  return MODELS[name](**kwargs)


def _mlp(own: dict, **common):
  return MLPClassifier(hidden_dims=(own['hidden_dim'],) * own['num_layers'], word_dropout=own['word_dropout'],
                       bigram_buckets=own['bigram_buckets'], embed_init_std=own.get('embed_init_std', 1.0),
                       activation=own.get('activation', 'relu'), **common)


def _lstm(own: dict, **common):
  return LSTMClassifier(hidden_dim=own['hidden_dim'], num_layers=own['num_layers'],
                        bidirectional=own['bidirectional'], forget_bias=own['forget_bias'],
                        weight_drop=own.get('weight_drop', 0.0), pooling=own.get('pooling', 'last'),
                        head_hidden_dim=own.get('head_hidden_dim', 0), dtype=COMPUTE_DTYPES[own['dtype']], **common)


def _lstm_lm(own: dict, num_classes, **common):
  del num_classes  # A language model predicts tokens.
  return LSTMLanguageModel(hidden_dim=own['hidden_dim'], num_layers=own['num_layers'],
                           forget_bias=own['forget_bias'], tie_embeddings=own['tie_embeddings'],
                           token_dropout=own.get('token_dropout', 0.0), weight_drop=own.get('weight_drop', 0.0),
                           dtype=COMPUTE_DTYPES[own['dtype']], **common)


# A model's settings live in its own subsection of the model section, named after it
# (model.mlp.*, model.lstm.*); embed_dim and dropout are shared by all.
_FROM_SECTION = {'mlp': _mlp, 'lstm': _lstm, 'lstm_lm': _lstm_lm}


def own_section_name(name: str) -> str:
  """The model section's part with a model's own settings: the language model reads the LSTM's."""
  return 'lstm' if name == 'lstm_lm' else name


def section_of(model_section: dict) -> dict:
  """The part of a model section that the chosen model reads: what makes two runs' models the same."""
  name = model_section['name']
  own = own_section_name(name)
  return {'name': name, 'embed_dim': model_section['embed_dim'], 'dropout': model_section['dropout'],
          own: dict(model_section[own])}


def from_section(model_section: dict, *, vocab_size: int, num_classes: int):
  """A module from a config's model section as a plain dict (config.json holds the same)."""
  name = model_section['name']
  if name not in _FROM_SECTION:
    raise ValueError(f'unknown model {name!r}; known: {sorted(_FROM_SECTION)}')
  own = model_section[own_section_name(name)]
  return _FROM_SECTION[name](own, vocab_size=vocab_size, num_classes=num_classes,
                             embed_dim=model_section['embed_dim'], dropout=model_section['dropout'])


def model_fns(module) -> ModelFns:
  """The named functions of a module (see ModelFns); those it lacks are None."""

  def run(method, params, *args, dropout_key=None):
    if dropout_key is None:
      return module.apply({'params': params}, *args, deterministic=True, method=method)
    return module.apply({'params': params}, *args, deterministic=False, rngs={'dropout': dropout_key},
                        method=method)

  def init(key, token_ids, lengths):
    return module.init({'params': key}, token_ids, lengths, deterministic=True)['params']

  def outputs(params, token_ids, lengths, dropout_key=None):
    return run(None, params, token_ids, lengths, dropout_key=dropout_key)

  def sequence_states(params, token_ids, lengths, dropout_key=None):
    return run('token_states', params, token_ids, lengths, dropout_key=dropout_key)

  if isinstance(module, LSTMLanguageModel):
    def carried(params, token_ids, lengths, carry, dropout_key=None, targets=None, negatives=None):
      return run('carried', params, token_ids, lengths, carry, targets, negatives, dropout_key=dropout_key)

    return ModelFns(init=init, token_logits=outputs, sequence_states=sequence_states,
                    token_logits_carried=carried, initial_carry=module.initial_carry)

  def embed(params, token_ids):
    return module.apply({'params': params}, token_ids, method='embed')

  def logits_from_embeddings(params, embeddings, lengths, dropout_key=None):
    return run('logits_from_embeddings', params, embeddings, lengths, dropout_key=dropout_key)

  return ModelFns(init=init, logits=outputs, embed=embed, logits_from_embeddings=logits_from_embeddings,
                  slot_tokens=module.slot_tokens,
                  sequence_states=sequence_states if isinstance(module, LSTMClassifier) else None)
