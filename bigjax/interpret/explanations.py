"""Texts -> per-token explanations of a trained run's predictions, and their summaries.

Works on anything shaped like `bigjax.runs.Run` (fns, params, tokenizer, config, data,
derived (a bigjax.run_record.Derived), label_names, encode); it never loads one itself, so
this package stays clear of the checkpoint code.
"""
import dataclasses
from typing import Optional, Sequence

import numpy as np

from bigjax.errors import ConfigError
from bigjax.interpret import attributions as attr_lib
from bigjax.interpret import batches as batches_lib
from bigjax.interpret import faithfulness
from bigjax.models import registry


@dataclasses.dataclass
class Explanation:
  """One text's prediction and its tokens' attributions (toward the predicted class)."""
  text: str
  tokens: list  # The tokens the model read (after truncation), as vocabulary strings.
  token_ids: np.ndarray
  label: int  # Predicted class id (the class explained).
  label_name: str
  probabilities: list  # Per class.
  attributions: dict  # Method name -> float32[len(tokens)].
  completeness: Optional[dict] = None  # Integrated gradients': error, relative_error, f_x, f_baseline, sum.
  truncated: bool = False  # The text had more tokens than the run reads (data.max_len).
  gold: Optional[int] = None  # The text's label, where the input had one.

  @property
  def probability(self) -> float:
    return self.probabilities[self.label]

  def to_json(self) -> dict:
    out = {'text': self.text, 'tokens': self.tokens, 'token_ids': [int(i) for i in self.token_ids],
           'label': self.label_name, 'label_id': self.label, 'probability': self.probability,
           'probabilities': self.probabilities,
           'attributions': {k: [float(v) for v in a] for k, a in self.attributions.items()},
           'completeness': self.completeness, 'truncated': self.truncated}
    if self.gold is not None:
      out['gold_label_id'] = self.gold
    return out


def float32_fns(run):
  """The run's model functions computing in float32 (a bf16 LSTM's matmuls too); same parameters.

  For attributions of a bf16 model: its gradients carry bf16 rounding, which integrated
  gradients' completeness check would otherwise measure.
  """
  section = {k: (dict(v) if isinstance(v, dict) else v) for k, v in run.config['model'].items()}
  for own in section.values():
    if isinstance(own, dict) and 'dtype' in own:
      own['dtype'] = 'float32'
  model = registry.from_section(section, vocab_size=run.derived.vocab_size, num_classes=run.derived.num_classes)
  return registry.model_fns(model)


def widths_of(run) -> list:
  """The run's padded widths (its length buckets, or data.max_len): the shapes it compiles."""
  return list(run.derived.bucket_boundaries)


def explain_rows(attributor: attr_lib.Attributor, rows: Sequence[np.ndarray], *, widths: Sequence[int],
                 methods: Sequence[str] = attr_lib.METHODS, batch_size: int = 32,
                 targets: Optional[Sequence[int]] = None) -> dict:
  """Predictions and attributions of token-id rows, batched by length.

  Returns {'probabilities': float[N, K], 'targets': int[N] (the predicted class unless
  given), method: list of float32[len(row)], and for integrated gradients 'ig': float[N, 3]
  of (f_x, f_baseline, error)}.
  """
  for m in methods:
    if m not in attr_lib.METHODS:
      raise ConfigError(f'attribution method {m!r} is unknown; use one of {", ".join(attr_lib.METHODS)}')
  n = len(rows)
  out = {m: [None] * n for m in methods}
  probabilities, ig = None, np.zeros((n, 3))
  chosen = np.zeros(n, np.int64)
  for batch in batches_lib.padded_batches(rows, batch_size, widths):
    real = len(batch.rows)
    p = attributor.probabilities(batch.token_ids, batch.lengths)
    if probabilities is None:
      probabilities = np.zeros((n, p.shape[1]))
    probabilities[batch.rows] = p[:real]
    t = np.argmax(p, axis=1) if targets is None else np.zeros(len(p), np.int64)
    if targets is not None:
      t[:real] = np.asarray(targets)[batch.rows]
    chosen[batch.rows] = t[:real]
    for m in methods:
      if m == 'integrated_gradients':
        result = attributor.integrated_gradients(batch.token_ids, batch.lengths, t.astype(np.int32))
        scores = result.attributions
        ig[batch.rows] = np.stack([result.f_x, result.f_baseline, result.error], 1)[:real]
      else:
        scores = attributor.attribute(m, batch.token_ids, batch.lengths, t.astype(np.int32))
      for i, r in enumerate(batch.rows):
        out[m][r] = scores[i, :batch.lengths[i]].astype(np.float32)
  out['probabilities'] = probabilities if probabilities is not None else np.zeros((0, 0))
  out['targets'] = chosen
  out['ig'] = ig
  return out


def _text_order(run) -> slice:
  """From a row as the run reads it to the text's own order, and back: a backward run reads its
  rows last token first, and explanations show tokens in the order of the text."""
  return slice(None, None, -1 if run.data['direction'] == 'backward' else 1)


def explain_texts(run, texts: Sequence[str], *, attributor: attr_lib.Attributor,
                  methods: Sequence[str] = attr_lib.METHODS, batch_size: int = 32,
                  gold: Optional[Sequence[int]] = None) -> list[Explanation]:
  """Explanations of texts' predictions by a run (and the attributor built for its model)."""
  rows = run.encode(texts)
  full_lengths = [len(r) for r in run.tokenizer.encode(texts, 1 << 30, run.data['keep'])]
  result = explain_rows(attributor, rows, widths=widths_of(run), methods=methods, batch_size=batch_size)
  names = run.label_names
  order = _text_order(run)
  explanations = []
  for i, (text, row) in enumerate(zip(texts, rows)):
    row = row[order]
    label = int(result['targets'][i])
    completeness = None
    if 'integrated_gradients' in methods:
      f_x, f_0, error = (float(v) for v in result['ig'][i])
      delta = f_x - f_0
      # No relative error where f(x) = f(baseline) exactly (an empty text): JSON has no infinity.
      completeness = {'error': error, 'relative_error': error / abs(delta) if delta else None,
                      'f_x': f_x, 'f_baseline': f_0, 'sum': float(np.sum(result['integrated_gradients'][i]))}
    explanations.append(Explanation(
        text=text, tokens=run.tokenizer.tokens(row), token_ids=row, label=label, label_name=names[label],
        probabilities=[float(p) for p in result['probabilities'][i]],
        attributions={m: result[m][i][order] for m in methods}, completeness=completeness,
        truncated=full_lengths[i] > len(row), gold=None if gold is None or gold[i] is None else int(gold[i])))
  return explanations


def completeness_summary(explanations: Sequence[Explanation]) -> dict:
  """Median and worst completeness error, absolute and relative to |f(x) - f(baseline)|."""
  rows = [e.completeness for e in explanations
          if e.completeness is not None and len(e.tokens) and e.completeness['relative_error'] is not None]
  if not rows:
    return {}
  error = np.array([r['error'] for r in rows])
  relative = np.array([r['relative_error'] for r in rows])
  delta = np.abs([r['f_x'] - r['f_baseline'] for r in rows])
  return {'texts': len(rows), 'median_error': float(np.median(error)), 'max_error': float(error.max()),
          'median_relative_error': float(np.median(relative)), 'max_relative_error': float(relative.max()),
          'share_within_1_percent': float(np.mean(relative <= 0.01)),
          'median_abs_delta': float(np.median(delta))}


def faithfulness_table(run, explanations: Sequence[Explanation], *, attributor: attr_lib.Attributor,
                       batch_size: int = 256, seed: int = 0) -> dict:
  """faithfulness.evaluate over the explained texts, every method they carry, and random scores."""
  methods = list(explanations[0].attributions) if explanations else []
  order = _text_order(run)  # The model deletes tokens from rows in its own reading order.
  return faithfulness.evaluate(
      attributor.probabilities, [e.token_ids[order] for e in explanations], [e.label for e in explanations],
      {m: [e.attributions[m][order] for e in explanations] for m in methods}, batch_size=batch_size,
      widths=widths_of(run), seed=seed)


NAMED = 5  # Texts without tokens a message names; the rest are counted.


def with_tokens(rows: Sequence[Sequence[int]], limit: int = 0) -> tuple[list, list]:
  """(kept, skipped): the indices of the rows with tokens (the first `limit` of them; 0: all),
  and of the rows without any before the last kept one.

  A text without tokens has nothing to attribute or delete: left in, it would show an empty
  heat-map, and alone, summaries over no texts (NaN).
  """
  kept, skipped = [], []
  for i, row in enumerate(rows):
    if 0 < limit <= len(kept):
      break
    (kept if len(row) else skipped).append(i)
  return kept, skipped


def named(sources: Sequence[str]) -> str:
  """The first NAMED sources, then how many more."""
  more = len(sources) - NAMED
  return ', '.join(sources[:NAMED]) + (f' and {more} more' if more > 0 else '')
