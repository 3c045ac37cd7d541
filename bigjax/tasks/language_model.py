"""Next-token prediction: cross-entropy per target token; dev perplexity (lower is better)
picks the checkpoint.

Over a contiguous stream cut into BPTT windows (bigjax.data.streams) the recurrent state
is carried from one window to the next: the train state holds it (TrainState.carry), the
step passes it in as `carry`, and the loss returns the state after the window beside its
sums. Gradients stop at the window's start (truncated BPTT).

A full softmax over a 30k vocabulary is most of an LSTM LM's step on a CPU (4.3 s of a
64 x 70 step against ~0.3 s for the rest; docs/results/pretraining.md). With `negatives=K` training
uses a sampled softmax instead (Jean et al. 2015): each step draws K shared negatives from
the training stream's unigram distribution raised to `sampling_power`, and each logit is
corrected by log(K q), so the loss estimates the full softmax's; evaluation always uses
the full softmax, so dev/test perplexity is exact.
"""
import dataclasses
import math
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bigjax.tasks.classification import at_least_f32
from bigjax.types import Batch, ModelFns


@dataclasses.dataclass(frozen=True)
class LanguageModeling:
  name: str = 'language_model'
  selection_metric: str = 'perplexity'
  higher_is_better: bool = False
  negatives: int = 0  # > 0: a sampled softmax over this many shared negatives while training.
  # log q of each vocabulary entry (sampling_distribution), for the sampled softmax.
  log_q: Optional[np.ndarray] = dataclasses.field(default=None, compare=False, repr=False)

  @property
  def sampled(self) -> bool:
    return self.negatives > 0

  def _nll_sum(self, logits, batch: Batch):
    nll = optax.softmax_cross_entropy_with_integer_labels(at_least_f32(logits), batch.targets)
    return jnp.sum(nll * batch.target_weights)

  def loss(self, model: ModelFns, params, batch: Batch, dropout_key, constants=None, carry=None):
    """(loss sum, sums), or with `carry` (the state before this window) (loss sum, (sums, state after))."""
    del constants
    if carry is None:
      nll = self._nll_sum(model.token_logits(params, batch.token_ids, batch.lengths, dropout_key), batch)
      return nll, {'loss': nll, 'targets': jnp.sum(batch.target_weights)}
    # A row that starts a stream starts from zeros; the others go on from where they stopped.
    keep = batch.continues.astype(jnp.float32)
    carry = jax.tree.map(lambda c: jax.lax.stop_gradient(c) * keep.reshape((-1,) + (1,) * (c.ndim - 1)), carry)
    if self.sampled and dropout_key is not None:
      nll, new_carry = self._sampled_nll_sum(model, params, batch, carry, dropout_key)
    else:
      logits, new_carry = model.token_logits_carried(params, batch.token_ids, batch.lengths, carry, dropout_key)
      nll = self._nll_sum(logits, batch)
    return nll, ({'loss': nll, 'targets': jnp.sum(batch.target_weights)}, jax.lax.stop_gradient(new_carry))

  def _sampled_nll_sum(self, model: ModelFns, params, batch: Batch, carry, dropout_key):
    log_q = jnp.asarray(self.log_q, jnp.float32)
    # Inverse-CDF sampling: K searches in the cumulative distribution (categorical() would
    # draw K x V Gumbel numbers).
    cdf = jnp.cumsum(jnp.exp(log_q))
    uniform = jax.random.uniform(jax.random.fold_in(dropout_key, 0x5a3), (self.negatives,), maxval=cdf[-1])
    negatives = jnp.minimum(jnp.searchsorted(cdf, uniform), log_q.shape[0] - 1).astype(jnp.int32)
    logits, new_carry = model.token_logits_carried(params, batch.token_ids, batch.lengths, carry, dropout_key,
                                                   targets=batch.targets, negatives=negatives)
    log_expected = math.log(self.negatives) + jnp.concatenate(
        [log_q[batch.targets][..., None], jnp.broadcast_to(log_q[negatives], batch.targets.shape + negatives.shape)],
        axis=-1)
    logits = at_least_f32(logits) - log_expected
    # A negative that is the target itself is no negative ("accidental hits", removed as TF does).
    hit = negatives[None, None, :] == batch.targets[..., None]
    logits = logits.at[..., 1:].set(jnp.where(hit, -1e9, logits[..., 1:]))
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.zeros_like(batch.targets))
    return jnp.sum(nll * batch.target_weights), new_carry

  def count(self, batch: Batch):
    return jnp.sum(batch.target_weights)

  def eval_sums(self, model: ModelFns, params, batch: Batch) -> dict:
    """Stateless: an evaluation window's first tokens are context, with target weight 0
    (bigjax.data.streams.eval_windows), so windows can be scored in any order."""
    nll = self._nll_sum(model.token_logits(params, batch.token_ids, batch.lengths, None), batch)
    return {'loss': nll, 'targets': jnp.sum(batch.target_weights)}

  def report(self, totals: dict) -> dict:
    nll = float(totals['loss'] / max(float(totals['targets']), 1.0))
    return {'loss': nll, 'perplexity': math.exp(min(nll, 700.0)), 'targets': int(totals['targets'])}

  def train_report(self, totals: dict) -> dict:
    report = self.report(totals)
    if self.sampled:  # An estimate of the full softmax's loss, not a perplexity to compare with dev's.
      return {'sampled_loss': report['loss']}
    return {'loss': report['loss'], 'perplexity': report['perplexity']}

  def summary(self, report: dict) -> dict:
    return {k: report[k] for k in ('loss', 'perplexity')}


def sampling_distribution(tokens: np.ndarray, vocab_size: int, power: float = 0.75) -> np.ndarray:
  """log q over the vocabulary: token counts ** power, normalized (every id at least one count)."""
  counts = np.bincount(tokens, minlength=vocab_size)[:vocab_size].astype(np.float64) + 1.0
  q = counts ** power
  return np.log(q / q.sum()).astype(np.float32)
