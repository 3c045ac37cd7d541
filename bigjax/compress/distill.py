"""Knowledge distillation (Hinton et al. 2015) as a task: the student learns the teacher's
temperature-softened class probabilities, mixed with the labels.

The teacher's parameters reach the loss as the train step's `constants`: they are placed on
the devices once, never differentiated, never donated, and never seen by the optimizer.
Its logits are computed in each step from the batch the student sees (one deterministic
forward pass of the teacher per step), not cached: a cache would need an example index in
every batch and a pass over the training set before the first step, and the student would
then see one fixed view of each example (for the MLP teacher the extra forward pass costs
less than the student's own backward pass; docs/results/compression.md measures it).
Evaluation, reports and checkpoint selection are the base task's: on the labels alone.
"""
import dataclasses

import jax
import jax.numpy as jnp
import optax

from bigjax.tasks.classification import Classification, at_least_f32
from bigjax.types import Batch, ModelFns


def distillation_term(student_logits, teacher_logits, temperature: float):
  """T^2 KL(teacher_T || student_T) per example: zero exactly when the logits agree.

  The T^2 keeps the soft term's gradients on the scale of the hard term's as T grows.
  """
  log_student = jax.nn.log_softmax(student_logits / temperature, axis=-1)
  log_teacher = jax.nn.log_softmax(teacher_logits / temperature, axis=-1)
  return temperature ** 2 * optax.losses.kl_divergence_with_log_targets(log_student, log_teacher)


@dataclasses.dataclass(frozen=True)
class Distillation:
  """alpha * T^2 KL(teacher_T || student_T) + (1 - alpha) * cross-entropy with the labels."""
  base: Classification
  teacher: ModelFns
  temperature: float = 2.0
  alpha: float = 0.5
  name: str = 'distillation'

  def __getattr__(self, attribute):
    # Counting, evaluation, reports and selection are the base task's.
    if attribute == 'base':  # Not set yet (copy, unpickling): no recursion.
      raise AttributeError(attribute)
    return getattr(self.base, attribute)

  def loss(self, model: ModelFns, params, batch: Batch, dropout_key, constants=None):
    if constants is None:
      raise ValueError("distillation needs the teacher's parameters as the train step's constants")
    teacher_logits = jax.lax.stop_gradient(
        at_least_f32(self.teacher.logits(constants, batch.token_ids, batch.lengths, None)))
    logits = at_least_f32(model.logits(params, batch.token_ids, batch.lengths, dropout_key))
    hard = optax.softmax_cross_entropy_with_integer_labels(logits, batch.labels)
    soft = distillation_term(logits, teacher_logits, self.temperature)
    loss_sum = jnp.sum((self.alpha * soft + (1.0 - self.alpha) * hard) * batch.weights)
    correct = (jnp.argmax(logits, -1) == batch.labels).astype(jnp.float32)
    # 'loss' stays the cross-entropy with the labels, comparable with a run without a teacher.
    return loss_sum, {'loss': jnp.sum(hard * batch.weights), 'distill': jnp.sum(soft * batch.weights),
                      'correct': jnp.sum(correct * batch.weights)}

  def train_report(self, totals: dict) -> dict:
    report = self.base.train_report(totals)
    report['distill'] = float(totals['distill'] / max(float(totals['examples']), 1.0))
    return report
