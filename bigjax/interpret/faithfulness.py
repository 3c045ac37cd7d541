"""How faithful attributions are to the model, over a data set: ERASER's comprehensiveness and
sufficiency (DeYoung et al. 2020) with their AOPC, and a deletion curve.

For one text x, predicted class y and a ranking of its tokens by attribution (most in
favour of y first), with r_k the top k % of the tokens:

  comprehensiveness_k = p(y | x) - p(y | x without r_k)   (higher: the top tokens mattered)
  sufficiency_k       = p(y | x) - p(y | r_k alone)       (lower: the top tokens suffice)

each averaged over k in FRACTIONS (the area over the perturbation curve, AOPC, as in
ERASER) and over the texts. Tokens are deleted from the text (the rest closes up and the
length shrinks), as ERASER does; occlusion as an attribution method replaces instead.
The deletion curve is p(y | x without its top j/10 of the tokens), j = 0..10, and its
area (trapezoid over the fraction removed): lower is more faithful. Random attributions
(seeded, one draw per text) give the floor any method must clear.
"""
import math
from typing import Callable, Mapping, Sequence

import numpy as np

from bigjax.interpret import batches as batches_lib

FRACTIONS = (0.01, 0.05, 0.10, 0.20, 0.50)
DELETION_FRACTIONS = tuple(j / 10 for j in range(11))


def top_count(length: int, fraction: float) -> int:
  """Tokens in the top `fraction`: at least one (SST-2's sentences are ~20 tokens, 1 % of which
  rounds to none), rounded up, at most all."""
  if length == 0:
    return 0
  return min(length, max(1, math.ceil(fraction * length - 1e-9)))


def ranking(scores: np.ndarray) -> np.ndarray:
  """Token positions, highest score first; ties go to the earlier position (a stable sort)."""
  return np.argsort(-np.asarray(scores, np.float64), kind='stable')


def random_scores(lengths: Sequence[int], seed: int = 0) -> list[np.ndarray]:
  """One uniform random score per token, a function of (seed, text index) only."""
  return [np.random.default_rng([seed, i]).random(n).astype(np.float32) for i, n in enumerate(lengths)]


def variants(row: np.ndarray, scores: np.ndarray) -> list[np.ndarray]:
  """The perturbed rows one text needs: comprehensiveness per fraction, sufficiency per fraction,
  then the deletion curve's points (in that order)."""
  n = len(row)
  order = ranking(scores)
  out = []
  for fraction in FRACTIONS:  # Comprehensiveness: the top tokens deleted.
    keep = np.ones(n, bool)
    keep[order[:top_count(n, fraction)]] = False
    out.append(row[keep])
  for fraction in FRACTIONS:  # Sufficiency: the top tokens alone, in their order in the text.
    keep = np.zeros(n, bool)
    keep[order[:top_count(n, fraction)]] = True
    out.append(row[keep])
  for fraction in DELETION_FRACTIONS:
    keep = np.ones(n, bool)
    keep[order[:int(round(fraction * n))]] = False
    out.append(row[keep])
  return out


def target_probabilities(probabilities_fn: Callable, rows: Sequence[np.ndarray], targets: Sequence[int], *,
                         batch_size: int, widths: Sequence[int]) -> np.ndarray:
  """float64[len(rows)]: p(target | row) for each row, batched by length."""
  out = np.zeros(len(rows), np.float64)
  targets = np.asarray(targets)
  for batch in batches_lib.padded_batches(rows, batch_size, widths):
    p = probabilities_fn(batch.token_ids, batch.lengths)
    out[batch.rows] = p[np.arange(len(batch.rows)), targets[batch.rows]]
  return out


def _paired(a: np.ndarray, b: np.ndarray) -> dict:
  """Mean of a - b over texts with a normal-approximation 95 % interval (paired: same texts).

  One text has no spread to make an interval of: ci95 is None there (JSON's null; NaN is not JSON).
  """
  d = a - b
  if len(d) < 2:
    return {'mean': float(d.mean()), 'ci95': None}
  half = 1.96 * d.std(ddof=1) / math.sqrt(len(d))
  return {'mean': float(d.mean()), 'ci95': [float(d.mean() - half), float(d.mean() + half)]}


def evaluate(probabilities_fn: Callable, rows: Sequence[np.ndarray], targets: Sequence[int],
             scores: Mapping[str, Sequence[np.ndarray]], *, batch_size: int = 256, widths: Sequence[int],
             seed: int = 0) -> dict:
  """The faithfulness table over texts, for each attribution method and for random scores.

  Args:
    probabilities_fn: (int32[B, T], int32[B]) -> float[B, K], the model's probabilities.
    rows: token ids per text; texts without tokens are left out (nothing to delete or keep).
    targets: the class explained per text (the predicted one).
    scores: method name -> one score per token per text (higher: more in favour of the target).
    widths: the padded widths batches may have (the run's length buckets).
  Returns:
    {'examples', 'fractions', 'deletion_fractions', 'methods': {name: {'comprehensiveness',
    'sufficiency' (mean per fraction), 'comprehensiveness_aopc', 'sufficiency_aopc',
    'deletion_curve', 'deletion_auc', 'vs_random': paired differences of the AOPCs}}}; with no text
    that has a token, 'examples' is 0, 'full_probability' None and 'methods' empty (means of nothing
    would be NaN).
  """
  keep = [i for i, r in enumerate(rows) if len(r)]
  if not keep:
    return {'examples': 0, 'fractions': list(FRACTIONS), 'deletion_fractions': list(DELETION_FRACTIONS),
            'full_probability': None, 'methods': {}}
  rows = [np.asarray(rows[i], np.int32) for i in keep]
  targets = np.asarray(targets)[keep]
  scores = {name: [np.asarray(s[i]) for i in keep] for name, s in scores.items()}
  scores['random'] = random_scores([len(r) for r in rows], seed)
  full = target_probabilities(probabilities_fn, rows, targets, batch_size=batch_size, widths=widths)
  per_text = len(FRACTIONS) * 2 + len(DELETION_FRACTIONS)
  results, per_example = {}, {}
  for name, method_scores in scores.items():
    perturbed = [v for row, s in zip(rows, method_scores) for v in variants(row, s)]
    p = target_probabilities(probabilities_fn, perturbed, np.repeat(targets, per_text), batch_size=batch_size,
                             widths=widths).reshape(len(rows), per_text)
    k = len(FRACTIONS)
    comprehensiveness = full[:, None] - p[:, :k]
    sufficiency = full[:, None] - p[:, k:2 * k]
    curve = p[:, 2 * k:]
    per_example[name] = {'comprehensiveness_aopc': comprehensiveness.mean(1), 'sufficiency_aopc': sufficiency.mean(1)}
    results[name] = {
        'comprehensiveness': comprehensiveness.mean(0).tolist(),
        'sufficiency': sufficiency.mean(0).tolist(),
        'comprehensiveness_aopc': float(comprehensiveness.mean()),
        'sufficiency_aopc': float(sufficiency.mean()),
        'deletion_curve': curve.mean(0).tolist(),
        'deletion_auc': float(np.trapezoid(curve.mean(0), DELETION_FRACTIONS)),
    }
  for name in results:
    if name != 'random':
      results[name]['vs_random'] = {key: _paired(per_example[name][key], per_example['random'][key])
                                    for key in ('comprehensiveness_aopc', 'sufficiency_aopc')}
  return {'examples': len(rows), 'fractions': list(FRACTIONS), 'deletion_fractions': list(DELETION_FRACTIONS),
          'full_probability': float(full.mean()), 'methods': results}
