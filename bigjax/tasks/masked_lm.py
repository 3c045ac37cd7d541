"""Masked-token prediction, BERT's pretraining objective (Devlin et al. 2019): cross-entropy at
each row's selected positions; dev perplexity (lower is better) picks the checkpoint.

A batch carries M prediction slots per row (Batch.positions, targets and target_weights, all
[B, M]; bigjax.data.masking fills them, an unused slot with weight 0). The model gathers its
states at the slots before the output layer (ModelFns.masked_logits), so a step computes B x M
softmaxes over the vocabulary, not B x T.

Why perplexity selects: dev is masked once, from its rows alone, so every checkpoint is scored
on the same tokens with the same corruption, and exp(mean NLL) orders checkpoints as the mean
NLL does, as the LSTM language model's dev perplexity does. The accuracy of the top prediction,
reported beside it, ignores how much probability the right token got.
"""
import dataclasses
import math

import jax.numpy as jnp
import optax

from bigjax.tasks.classification import at_least_f32
from bigjax.types import Batch, ModelFns


@dataclasses.dataclass(frozen=True)
class MaskedLanguageModeling:
  name: str = 'masked_lm'
  selection_metric: str = 'perplexity'
  higher_is_better: bool = False

  @staticmethod
  def _sums(logits, batch: Batch) -> dict:
    """Weighted NLL and correct predictions over the selected positions, and their count."""
    logits = at_least_f32(logits)
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, batch.targets)
    correct = (jnp.argmax(logits, -1) == batch.targets).astype(jnp.float32)
    weights = batch.target_weights
    return {'loss': jnp.sum(nll * weights), 'correct': jnp.sum(correct * weights), 'targets': jnp.sum(weights)}

  def loss(self, model: ModelFns, params, batch: Batch, dropout_key, constants=None):
    """(summed cross-entropy at the selected positions, the sums of the training log)."""
    del constants
    sums = self._sums(model.masked_logits(params, batch.token_ids, batch.lengths, batch.positions, dropout_key),
                      batch)
    return sums['loss'], sums

  def count(self, batch: Batch):
    return jnp.sum(batch.target_weights)

  def eval_sums(self, model: ModelFns, params, batch: Batch) -> dict:
    return self._sums(model.masked_logits(params, batch.token_ids, batch.lengths, batch.positions, None), batch)

  def report(self, totals: dict) -> dict:
    targets = max(float(totals['targets']), 1.0)
    nll = float(totals['loss']) / targets
    return {'loss': nll, 'accuracy': float(totals['correct']) / targets, 'perplexity': math.exp(min(nll, 700.0)),
            'targets': int(totals['targets'])}

  def train_report(self, totals: dict) -> dict:
    return self.summary(self.report(totals))

  def summary(self, report: dict) -> dict:
    return {k: report[k] for k in ('loss', 'accuracy', 'perplexity')}
