"""A model is one module: a model defined here, in the test, and registered at run time trains,
evaluates, quantizes and exports through the registry, with no other file touched.

What the model declares (bigjax/models/spec.py) is all the rest of bigjax knows of it: its
config section and ranges, its kind, its FLOPs, its description, what int8 it takes.
"""
import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest

from bigjax import runs
from bigjax import training
from bigjax.compress import quantized_run
from bigjax.config import checks, schema
from bigjax.errors import ConfigError
from bigjax.export import export, loader
from bigjax.models import registry
from bigjax.models.common import length_mask
from bigjax.models.spec import CLASSIFIER, ModelSpec
from tests.test_train import tiny_config, write_corpus


class BagOfEmbeddings(nn.Module):
  """The mean of the token embeddings, scaled, then one dense layer: logits."""
  vocab_size: int
  num_classes: int
  embed_dim: int = 16
  dropout: float = 0.0
  scale: float = 1.0

  def setup(self):
    self.embedding = nn.Embed(self.vocab_size, self.embed_dim)
    self.head = nn.Dense(self.num_classes)

  def __call__(self, token_ids, lengths, *, deterministic: bool = True):
    return self.logits_from_embeddings(self.embed(token_ids), lengths, deterministic=deterministic)

  def embed(self, token_ids):
    return self.embedding(token_ids)

  def slot_tokens(self, width: int):
    return jnp.eye(width, dtype=jnp.float32)

  def logits_from_embeddings(self, embeddings, lengths, *, deterministic: bool = True):
    del deterministic
    mask = length_mask(lengths, embeddings.shape[1])[..., None]
    mean = jnp.where(mask, embeddings, 0.0).sum(1) / jnp.maximum(lengths, 1)[:, None].astype(embeddings.dtype)
    return self.head(self.scale * mean)


def _build(own: dict, *, vocab_size, num_classes, embed_dim, dropout) -> BagOfEmbeddings:
  return BagOfEmbeddings(vocab_size=vocab_size, num_classes=num_classes, embed_dim=embed_dim, dropout=dropout,
                         scale=own['scale'])


def _flops(own, *, batch, width, real_tokens, embed_dim, num_classes):
  del own, width, real_tokens
  return {'executed': 3 * batch * 2 * embed_dim * num_classes, 'useful': 3 * batch * 2 * embed_dim * num_classes}


TOY = ModelSpec(name='toy_bag', kind=CLASSIFIER, section='toy_bag', module=BagOfEmbeddings, build=_build,
                training_flops=_flops,
                fields={'scale': (2.0, (0.0, None, 'neither'))}, description='a toy bag of embeddings')


@pytest.fixture
def toy_model():
  registry.register(TOY)
  yield TOY
  registry.unregister(TOY.name)


def test_a_model_defined_in_a_test_trains_evaluates_quantizes_and_exports(toy_model, tmp_path):
  config = schema.get_config()
  assert config.model.toy_bag.scale == 2.0  # Its section, with its defaults, in every config.
  data = write_corpus(str(tmp_path / 'data'))
  config = tiny_config(data, model='toy_bag', **{'train.steps': 30, 'checkpoint.every_steps': 10,
                                                 'optim.learning_rate': 0.05})
  config.model.toy_bag.scale = 0.0
  with pytest.raises(ConfigError, match=r'model.toy_bag.scale=0.0 must be > 0.0'):  # Its ranges are checked.
    checks.check_config(config)
  config.model.toy_bag.scale = 2.0
  checks.check_config(config)

  results = training.run_training(config, str(tmp_path / 'run'))
  assert results['test']['accuracy'] > 0.8  # The corpus's label is readable from its words.
  run = runs.load_run(str(tmp_path / 'run'))
  assert isinstance(run.model, BagOfEmbeddings) and run.model.scale == 2.0
  texts, labels = ['great good fine', 'awful bad poor'], [1, 0]  # The corpus's cue words.
  assert run.evaluate(texts, labels)['accuracy'] == 1.0

  # int8 with static activation scales: the model says it takes them (no matmul inside a scan).
  test = [line.split(' ', 1) for line in (tmp_path / 'data' / 'test.txt').read_text().splitlines()]
  test_texts = [t for _, t in test]
  quantized = quantized_run.quantize_run(run, str(tmp_path / 'int8'), mode='int8', activations='static',
                                         dev_texts=texts, dev_labels=labels, calibration_texts=test_texts)
  agree = quantized.probabilities(test_texts).argmax(1) == run.probabilities(test_texts).argmax(1)
  assert agree.mean() >= 0.95
  stored = quantized.derived.quantization['stored_bytes']
  assert stored['int8_values'] > 3 * stored['float']  # The embedding table and the kernel are int8.

  metadata = export.write_artifact(run, str(tmp_path / 'artifact'))
  assert metadata['model'] == 'toy_bag'
  np.testing.assert_allclose(loader.load(str(tmp_path / 'artifact')).probabilities(texts), run.probabilities(texts),
                             atol=1e-6)
  assert registry.spec('toy_bag').training_flops({}, batch=4, width=8, real_tokens=20, embed_dim=16,
                                                 num_classes=2)['executed'] == 3 * 4 * 2 * 16 * 2


def test_the_registry_refuses_a_taken_name_and_a_section_declared_otherwise(toy_model):
  with pytest.raises(ValueError, match='registered already'):
    registry.register(toy_model)
  other = ModelSpec(name='other', kind=CLASSIFIER, section='mlp', fields={'width': 3}, module=BagOfEmbeddings,
                    build=_build)
  with pytest.raises(ValueError, match="declares section 'mlp' otherwise than 'mlp'"):
    registry.register(other)
  with pytest.raises(ValueError, match="unknown model 'nope'"):
    registry.spec('nope')
  assert registry.names(registry.CLASSIFIER)[:2] == ('mlp', 'lstm') and 'toy_bag' in registry.names()
  assert registry.names(registry.LANGUAGE_MODEL) == ('lstm_lm',)
