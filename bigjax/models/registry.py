"""Model names -> Flax modules, and the ModelFns view the trainer gets of them."""

from bigjax.models.lstm import LSTMClassifier
from bigjax.models.mlp import MLPClassifier
from bigjax.types import ModelFns

MODELS = {'mlp': MLPClassifier, 'lstm': LSTMClassifier}
# Where every classifier keeps its token table, params[module][name]: pretrained word
# vectors are put there, and attributions differentiate with respect to its output.
EMBEDDING_TABLE = ('embedding', 'embedding')


def build_model(name: str, **kwargs):
  if name not in MODELS:
    raise ValueError(f'unknown model {name!r}; known: {sorted(MODELS)}')
  return MODELS[name](**kwargs)


def model_fns(module) -> ModelFns:
  """Wraps a classifier module into the (init, logits) pair the training code uses."""

  def init_fn(key, token_ids, lengths):
    return module.init({'params': key}, token_ids, lengths, deterministic=True)['params']

  def logits_fn(params, token_ids, lengths, dropout_key=None):
    if dropout_key is None:
      return module.apply({'params': params}, token_ids, lengths, deterministic=True)
    return module.apply({'params': params}, token_ids, lengths, deterministic=False,
                        rngs={'dropout': dropout_key})

  return ModelFns(init_fn, logits_fn)
