"""Evidence that a run's epsilon means something: what an attacker learns of its training set.

- Membership inference by loss threshold (Yeom et al. 2018): training examples (members) and
  test examples (non-members, from the same distribution) scored by the trained model's loss on
  them; the attack's AUC is the chance that a random member has a lower loss than a random
  non-member (0.5: it learns nothing).
- Canaries (Carlini et al. 2019, "The Secret Sharer"): random token sequences with random labels,
  each inserted `repeats` times into the training set (audit.canaries > 0). After training, each
  canary's loss is ranked among `references` sequences of the same kind that were never
  inserted; exposure = log2(references + 1) - log2(rank), from 0 (nothing learnt) to
  log2(references + 1) (the canary is the model's favourite).

Canaries are drawn from (audit.seed, the vocabulary), so the audit command draws the same ones the
training run inserted, and the references from another stream.
"""
import dataclasses
import math
from typing import Optional, Sequence

import jax
import numpy as np

from bigjax.data import batching
from bigjax.types import ModelFns

_CANARIES, _REFERENCES = 0xCA4, 0x4EF


@dataclasses.dataclass(frozen=True)
class Canaries:
  """How many random sequences go into the training set, how often, and how long."""
  count: int
  repeats: int
  length: int
  seed: int = 0


def ordinary_ids(tokenizer) -> np.ndarray:
  """The ids a canary is drawn from: every id but padding and the special tokens."""
  specials = set(tokenizer.special_ids()) | {0}
  return np.array([i for i in range(tokenizer.vocab_size) if i not in specials], np.int32)


def draw(tokenizer, num_classes: int, how: Canaries, count: int, stream: int) -> batching.EncodedSplit:
  """`count` random sequences of how.length ordinary tokens (between the tokenizer's special
  ends, as its texts are), each with a random label."""
  rng = np.random.default_rng([how.seed, stream])
  ids = ordinary_ids(tokenizer)
  prefix, suffix = tokenizer.special_ends
  rows = [np.concatenate([prefix, rng.choice(ids, how.length), suffix]).astype(np.int32) for _ in range(count)]
  return batching.EncodedSplit.from_rows(rows, rng.integers(0, num_classes, count))


def canaries(tokenizer, num_classes: int, how: Canaries) -> batching.EncodedSplit:
  return draw(tokenizer, num_classes, how, how.count, _CANARIES)


def settings(config) -> Optional[Canaries]:
  """The canaries a config's audit section inserts (a ConfigDict or config.json's dict), or None."""
  c = config['audit'] if 'audit' in config else None
  if not c or not c['canaries']:
    return None
  return Canaries(c['canaries'], c['canary_repeats'], c['canary_length'], c['seed'])


def inserted(config, tokenizer, num_classes: int) -> Optional[batching.EncodedSplit]:
  """The canaries a run of `config` adds to its training set, or None."""
  how = settings(config)
  return None if how is None else canaries(tokenizer, num_classes, how)


def references(tokenizer, num_classes: int, how: Canaries, count: int) -> batching.EncodedSplit:
  return draw(tokenizer, num_classes, how, count, _REFERENCES)


def with_canaries(train: batching.EncodedSplit, inserted: batching.EncodedSplit, repeats: int) -> batching.EncodedSplit:
  """The training split with each canary added `repeats` times (at its end: batches are shuffled)."""
  rows = [train.tokens[train.offsets[i]:train.offsets[i + 1]] for i in range(len(train))]
  extra = [inserted.tokens[inserted.offsets[i]:inserted.offsets[i + 1]] for i in range(len(inserted))]
  return batching.EncodedSplit.from_rows(rows + extra * repeats,
                                         np.concatenate([train.labels, np.tile(inserted.labels, repeats)]))


def example_losses(fns: ModelFns, params, split: batching.EncodedSplit, batch_size: int,
                   boundaries: Sequence[int]) -> np.ndarray:
  """float32[N]: the model's cross-entropy on each example of `split`, in its order."""
  logits_fn = jax.jit(fns.logits)
  losses = np.zeros(len(split), np.float32)
  order = np.argsort(split.lengths, kind='stable')  # Similar lengths together: little padding.
  for start in range(0, len(order), batch_size):
    rows = order[start:start + batch_size]
    batch = batching.make_batch(split, rows, batch_size, boundaries)
    logits = np.asarray(logits_fn(params, batch.token_ids, batch.lengths), np.float64)[:len(rows)]
    top = logits.max(axis=1, keepdims=True)
    log_probs = logits - top - np.log(np.sum(np.exp(logits - top), axis=1, keepdims=True))
    losses[rows] = -log_probs[np.arange(len(rows)), batch.labels[:len(rows)]]
  return losses


def auc(member_losses: np.ndarray, nonmember_losses: np.ndarray) -> float:
  """The loss-threshold attack's ROC AUC: P(a member's loss < a non-member's), ties counted half."""
  scores = np.concatenate([-member_losses, -nonmember_losses])
  ranks = _ranks(scores)
  m, n = len(member_losses), len(nonmember_losses)
  return float((ranks[:m].sum() - m * (m + 1) / 2) / (m * n))


def _ranks(x: np.ndarray) -> np.ndarray:
  """1-based ranks, ties given their mean rank."""
  order = np.argsort(x, kind='stable')
  ranks = np.empty(len(x), np.float64)
  sorted_x = x[order]
  start = 0
  for end in range(1, len(x) + 1):
    if end == len(x) or sorted_x[end] != sorted_x[start]:
      ranks[order[start:end]] = (start + end + 1) / 2
      start = end
  return ranks


def exposure(canary_losses: np.ndarray, reference_losses: np.ndarray) -> np.ndarray:
  """Each canary's exposure: log2(R + 1) - log2(its rank by loss among itself and the R references)."""
  rank = 1 + np.sum(reference_losses[None, :] < canary_losses[:, None], axis=1)
  return math.log2(len(reference_losses) + 1) - np.log2(rank)


def _take(split: batching.EncodedSplit, rows: np.ndarray) -> batching.EncodedSplit:
  return batching.EncodedSplit.from_rows([split.tokens[split.offsets[i]:split.offsets[i + 1]] for i in rows],
                                         split.labels[rows])


def _sample(split: batching.EncodedSplit, count: int, rng) -> batching.EncodedSplit:
  rows = np.arange(len(split)) if len(split) <= count else np.sort(rng.choice(len(split), count, replace=False))
  return _take(split, rows)


def audit_run(run, splits: dict, *, max_examples: int = 5000, reference_count: int = 1000,
              batch_size: int = 256, seed: int = 0) -> dict:
  """The membership attack on a trained run (members: its training split's examples without the
  canaries; non-members: test's; at most max_examples of each), and its canaries' exposure
  against reference_count references. splits: the run's encoded 'train' and 'test'."""
  rng = np.random.default_rng([seed, 0xA0D])
  boundaries = run.derived.bucket_boundaries
  members, nonmembers = _sample(splits['train'], max_examples, rng), _sample(splits['test'], max_examples, rng)
  member_losses = example_losses(run.fns, run.params, members, batch_size, boundaries)
  nonmember_losses = example_losses(run.fns, run.params, nonmembers, batch_size, boundaries)
  report = {
      'workdir': run.workdir, 'step': run.step,
      'privacy': run.derived.privacy,  # None: a run trained without DP.
      'membership': {'attack': 'loss threshold', 'auc': auc(member_losses, nonmember_losses),
                     'members': len(members), 'nonmembers': len(nonmembers),
                     'member_loss': float(member_losses.mean()), 'nonmember_loss': float(nonmember_losses.mean())},
  }
  how = settings(run.config)
  if how is not None:
    num_classes = run.derived.num_classes
    inserted_losses = example_losses(run.fns, run.params, canaries(run.tokenizer, num_classes, how), batch_size,
                                     boundaries)
    reference_losses = example_losses(run.fns, run.params, references(run.tokenizer, num_classes, how,
                                                                      reference_count), batch_size, boundaries)
    exposures = exposure(inserted_losses, reference_losses)
    report['canaries'] = {'count': how.count, 'repeats': how.repeats, 'length': how.length,
                          'references': reference_count, 'exposure_mean': float(exposures.mean()),
                          'exposure_max': float(exposures.max()), 'exposure_ceiling': math.log2(reference_count + 1),
                          'exposures': [round(float(e), 3) for e in exposures]}
  return report
