"""Model names -> their ModelSpecs (bigjax/models/spec.py), the modules built from a config's
model section, and the ModelFns view that training, evaluation, attributions and export get.

The mapping is explicit: a new model adds its module and one line to _BUILT_IN. `register`
adds a model at run time (a test's toy model, a research fork) without touching this file.
"""
from typing import Optional

import jax.numpy as jnp

from bigjax.models import lstm, mlp, transformer
from bigjax.models.spec import CLASSIFIER, LANGUAGE_MODEL, MASKED_LM, ModelSpec
from bigjax.types import ModelFns

_BUILT_IN = (mlp.SPEC, lstm.CLASSIFIER_SPEC, lstm.LANGUAGE_MODEL_SPEC, transformer.SPEC, transformer.MLM_SPEC)
MODELS: dict = {spec.name: spec for spec in _BUILT_IN}


def register(spec: ModelSpec) -> ModelSpec:
  """Adds a model (a name not taken, and a section that is its own or shares another model's
  fields exactly); returns it. unregister(name) takes it out again."""
  if spec.name in MODELS:
    raise ValueError(f'a model named {spec.name!r} is registered already')
  for other in MODELS.values():
    if other.section == spec.section and dict(other.fields) != dict(spec.fields):
      raise ValueError(f'model {spec.name!r} declares section {spec.section!r} otherwise than {other.name!r}')
  MODELS[spec.name] = spec
  return spec


def unregister(name: str) -> None:
  MODELS.pop(name, None)


def spec(name: str) -> ModelSpec:
  if name not in MODELS:
    raise ValueError(f'unknown model {name!r}; known: {sorted(MODELS)}')
  return MODELS[name]


def names(kind: Optional[str] = None) -> tuple:
  """The registered models' names, of one kind (CLASSIFIER, LANGUAGE_MODEL, MASKED_LM) or all."""
  return tuple(name for name, s in MODELS.items() if kind is None or s.kind == kind)


def sections() -> dict:
  """{section: the first model declaring it}: the model section's subsections, one per section."""
  out = {}
  for s in MODELS.values():
    out.setdefault(s.section, s)
  return out


def build_model(name: str, **kwargs):
  """The module of model `name` from its constructor's own arguments (tests, benchmarks)."""
  return spec(name).module(**kwargs)


def spec_of_module(module) -> ModelSpec:
  """The spec whose module class this one is."""
  for s in MODELS.values():
    if type(module) is s.module:  # pylint: disable=unidiomatic-typecheck  # Not subclasses.
      return s
  raise ValueError(f'no registered model builds a {type(module).__name__}')


def section_of(model_section: dict) -> dict:
  """The part of a model section that the chosen model reads: what makes two runs' models the same."""
  s = spec(model_section['name'])
  return {'name': s.name, 'embed_dim': model_section['embed_dim'], 'dropout': model_section['dropout'],
          s.section: dict(model_section[s.section])}


def own_section(model_section: dict) -> dict:
  """The chosen model's own settings (model.<its section>)."""
  return dict(model_section[spec(model_section['name']).section])


def from_section(model_section: dict, *, vocab_size: int, num_classes: int):
  """A module from a config's model section as a plain dict (config.json holds the same)."""
  s = spec(model_section['name'])
  return s.build(dict(model_section[s.section]), vocab_size=vocab_size, num_classes=num_classes,
                 embed_dim=model_section['embed_dim'], dropout=model_section['dropout'])


def model_fns(module, name: Optional[str] = None) -> ModelFns:
  """The named functions of a module (see ModelFns); those it lacks are None.

  A language model is a module with a `carried` method (it carries its state across
  windows); a classifier has `logits_from_embeddings`. name: the model's registered name,
  needed where its module serves two kinds: a MASKED_LM model (transformer_mlm, the
  Transformer classifier's module) is initialized through its `mlm_logits`, so its MLM head
  has parameters and its classifier head none, and has `masked_logits` instead of `logits`.
  """

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

  def embed(params, token_ids):
    return module.apply({'params': params}, token_ids, method='embed')

  logical_axes = None
  if hasattr(module, 'logical_axes'):
    # Names only depend on the parameters' shapes, which do not depend on the batch's.
    logical_axes = lambda method=None: module.logical_axes(jnp.ones((1, 1), jnp.int32), jnp.ones((1,), jnp.int32),
                                                           method=method)

  if name is not None and spec(name).kind == MASKED_LM:
    def init_masked(key, token_ids, lengths):
      # One prediction slot a row: init needs the head's shapes, not the logits of every position.
      one_slot = jnp.zeros((token_ids.shape[0], 1), jnp.int32)
      return module.init({'params': key}, token_ids, lengths, one_slot, deterministic=True,
                         method='mlm_logits')['params']

    def masked_logits(params, token_ids, lengths, positions, dropout_key=None):
      return run('mlm_logits', params, token_ids, lengths, positions, dropout_key=dropout_key)

    return ModelFns(init=init_masked, masked_logits=masked_logits, embed=embed, sequence_states=sequence_states,
                    logical_axes=logical_axes and (lambda: logical_axes('mlm_logits')))

  if hasattr(module, 'carried'):
    def carried(params, token_ids, lengths, carry, dropout_key=None, targets=None, negatives=None):
      return run('carried', params, token_ids, lengths, carry, targets, negatives, dropout_key=dropout_key)

    return ModelFns(init=init, token_logits=outputs, sequence_states=sequence_states,
                    token_logits_carried=carried, initial_carry=module.initial_carry)

  def logits_from_embeddings(params, embeddings, lengths, dropout_key=None):
    return run('logits_from_embeddings', params, embeddings, lengths, dropout_key=dropout_key)

  def embedding_rows(params, token_ids):
    return module.apply({'params': params}, token_ids, method='embedding_rows')

  return ModelFns(init=init, logits=outputs, embed=embed, logits_from_embeddings=logits_from_embeddings,
                  slot_tokens=module.slot_tokens,
                  embedding_rows=embedding_rows if hasattr(module, 'embedding_rows') else None,
                  sequence_states=sequence_states if hasattr(module, 'token_states') else None,
                  logical_axes=logical_axes)


__all__ = ['CLASSIFIER', 'LANGUAGE_MODEL', 'MASKED_LM', 'MODELS', 'ModelSpec', 'build_model', 'from_section',
           'model_fns', 'names', 'own_section', 'register', 'section_of', 'sections', 'spec', 'spec_of_module',
           'unregister']
