"""Next-token prediction: cross-entropy per target token; dev perplexity (lower is better)
picks the checkpoint."""
import dataclasses
import math

import jax.numpy as jnp
import optax

from bigjax.tasks.classification import at_least_f32
from bigjax.types import Batch, ModelFns


@dataclasses.dataclass(frozen=True)
class LanguageModeling:
  name: str = 'language_model'
  selection_metric: str = 'perplexity'
  higher_is_better: bool = False

  def _nll_sum(self, model: ModelFns, params, batch: Batch, dropout_key):
    logits = at_least_f32(model.token_logits(params, batch.token_ids, batch.lengths, dropout_key))
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, batch.targets)
    return jnp.sum(nll * batch.target_weights)

  def loss(self, model: ModelFns, params, batch: Batch, dropout_key, constants=None):
    del constants
    nll = self._nll_sum(model, params, batch, dropout_key)
    return nll, {'loss': nll, 'targets': jnp.sum(batch.target_weights)}

  def count(self, batch: Batch):
    return jnp.sum(batch.target_weights)

  def eval_sums(self, model: ModelFns, params, batch: Batch) -> dict:
    return {'loss': self._nll_sum(model, params, batch, None), 'targets': jnp.sum(batch.target_weights)}

  def report(self, totals: dict) -> dict:
    nll = float(totals['loss'] / max(float(totals['targets']), 1.0))
    return {'loss': nll, 'perplexity': math.exp(min(nll, 700.0)), 'targets': int(totals['targets'])}

  def train_report(self, totals: dict) -> dict:
    report = self.report(totals)
    return {'loss': report['loss'], 'perplexity': report['perplexity']}

  def summary(self, report: dict) -> dict:
    return {k: report[k] for k in ('loss', 'perplexity')}
