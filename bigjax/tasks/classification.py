"""Text classification: softmax cross-entropy per example; accuracy picks the checkpoint."""
import dataclasses

import jax
import jax.numpy as jnp
import optax

from bigjax import metrics as metrics_lib
from bigjax.types import Batch, ModelFns


def at_least_f32(x):
  """The softmax runs in f32 even when the model computes in bf16."""
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


@dataclasses.dataclass(frozen=True)
class Classification:
  num_classes: int
  name: str = 'classification'
  selection_metric: str = 'accuracy'
  higher_is_better: bool = True

  def loss(self, model: ModelFns, params, batch: Batch, dropout_key, constants=None):
    """Weighted cross-entropy sum, and the sums of the training log."""
    del constants
    logits = at_least_f32(model.logits(params, batch.token_ids, batch.lengths, dropout_key))
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch.labels)
    correct = (jnp.argmax(logits, -1) == batch.labels).astype(jnp.float32)
    loss_sum = jnp.sum(losses * batch.weights)
    return loss_sum, {'loss': loss_sum, 'correct': jnp.sum(correct * batch.weights)}

  def count(self, batch: Batch):
    return jnp.sum(batch.weights)

  def eval_sums(self, model: ModelFns, params, batch: Batch) -> dict:
    """Sums for accuracy, loss and the confusion matrix (rows: true, cols: predicted)."""
    logits = at_least_f32(model.logits(params, batch.token_ids, batch.lengths, None))
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch.labels)
    true_1h = jax.nn.one_hot(batch.labels, self.num_classes) * batch.weights[:, None]
    pred_1h = jax.nn.one_hot(jnp.argmax(logits, -1), self.num_classes)
    return {'loss': jnp.sum(losses * batch.weights), 'examples': jnp.sum(batch.weights),
            'confusion': true_1h.T @ pred_1h}

  def report(self, totals: dict) -> dict:
    report = metrics_lib.classification_report(totals['confusion'])
    report['loss'] = float(totals['loss'] / max(totals['examples'], 1))
    return report

  def train_report(self, totals: dict) -> dict:
    examples = max(float(totals['examples']), 1.0)
    return {'loss': float(totals['loss'] / examples), 'accuracy': float(totals['correct'] / examples)}

  def summary(self, report: dict) -> dict:
    """The scalars of a report, for metrics.jsonl and TensorBoard."""
    return {k: report[k] for k in ('accuracy', 'macro_f1', 'loss')}

