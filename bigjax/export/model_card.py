"""The model card written beside an artifact (MODEL_CARD.md), after Mitchell et al. 2019,
"Model Cards for Model Reporting": model details, intended use, factors, metrics,
evaluation and training data, quantitative analyses (accuracy, macro-F1, per-class F1,
calibration), ethical considerations, caveats. Fields that do not apply to a sentiment
classifier trained on one public corpus say so rather than being left out silently.

Calibration is the expected calibration error over equal-width confidence bins (Guo et
al. 2017; the bin count is stated wherever the figure appears) and a reliability diagram.
"""
import json
import os
from typing import Optional

import numpy as np

from bigjax import metrics as metrics_lib
from bigjax import run_record
from bigjax.models import registry

DEFAULT_BINS = 15  # Guo et al. 2017's choice, so the figure compares with published ones.
DIAGRAM_FILE = 'reliability.png'
CARD_FILE = 'MODEL_CARD.md'


def calibration(probabilities: np.ndarray, labels: np.ndarray, bins: int = DEFAULT_BINS) -> dict:
  """ECE = sum over bins of (bin share) * |accuracy - mean confidence|, confidence = the top probability.

  Bins are equal-width on [0, 1], right-closed ((0.6, 0.7] ...), the first also holding 0.
  """
  probabilities = np.asarray(probabilities, np.float64)
  labels = np.asarray(labels)
  confidence = probabilities.max(axis=1)
  correct = (probabilities.argmax(axis=1) == labels).astype(np.float64)
  edges = np.linspace(0.0, 1.0, bins + 1)
  which = np.clip(np.searchsorted(edges, confidence, side='left') - 1, 0, bins - 1)
  table, ece = [], 0.0
  for b in range(bins):
    in_bin = which == b
    count = int(in_bin.sum())
    row = {'low': float(edges[b]), 'high': float(edges[b + 1]), 'count': count}
    if count:
      row.update(confidence=float(confidence[in_bin].mean()), accuracy=float(correct[in_bin].mean()))
      ece += count / len(labels) * abs(row['accuracy'] - row['confidence'])
    table.append(row)
  nll = float(-np.mean(np.log(np.maximum(probabilities[np.arange(len(labels)), labels], 1e-12))))
  return {'ece': float(ece), 'bins': bins, 'table': table, 'examples': int(len(labels)), 'nll': nll,
          'mean_confidence': float(confidence.mean()), 'accuracy': float(correct.mean())}


def classification_metrics(probabilities: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
  """The report results.json gives (accuracy, macro-F1, per-class F1, confusion), from probabilities."""
  confusion = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(confusion, (np.asarray(labels), np.asarray(probabilities).argmax(axis=1)), 1)
  return metrics_lib.classification_report(confusion)


def reliability_diagram(calib: dict, path: str, title: str) -> str:
  """A PNG: accuracy against confidence per bin over the diagonal, and how many examples each bin holds."""
  # The object-oriented API, not pyplot: no global figure state, no display backend needed.
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  figure = Figure(figsize=(5, 6), dpi=110)
  FigureCanvasAgg(figure)
  top, bottom = figure.subplots(2, 1, sharex=True, gridspec_kw={'height_ratios': [3, 1]})
  rows = [r for r in calib['table'] if r['count']]
  width = 1.0 / calib['bins']
  centers = [r['low'] + width / 2 for r in rows]
  top.bar(centers, [r['accuracy'] for r in rows], width=width * 0.95, color='#4c72b0', label='accuracy')
  # The gap to each bin's mean confidence as a hatched outline, above or below the bar alike.
  top.bar(centers, [abs(r['confidence'] - r['accuracy']) for r in rows],
          bottom=[min(r['accuracy'], r['confidence']) for r in rows], width=width * 0.95, fill=False,
          edgecolor='#c44e52', hatch='//', linewidth=0.8, label='gap to mean confidence')
  top.plot([0, 1], [0, 1], 'k--', linewidth=1, label='perfect calibration')
  top.set_ylim(0, 1)
  top.set_ylabel('accuracy')
  top.set_title(f'{title}\nECE {100 * calib["ece"]:.2f} % ({calib["bins"]} equal-width bins, '
                f'{calib["examples"]} examples)', fontsize=9)
  top.legend(loc='upper left', fontsize=8)
  bottom.bar(centers, [r['count'] for r in rows], width=width * 0.95, color='#55a868')
  bottom.set_xlim(0, 1)
  bottom.set_xlabel('confidence (top probability)')
  bottom.set_ylabel('examples')
  figure.tight_layout()
  figure.savefig(path)
  return path


def _lowercases(directory: str) -> bool:
  """Whether the artifact's tokenizer lowercases its input (its normalizer has a Lowercase step)."""
  with open(os.path.join(directory, 'tokenizer.json'), encoding='utf-8') as f:
    return '"Lowercase"' in json.dumps(json.load(f).get('normalizer'))


def _pct(x: Optional[float]) -> str:
  return 'not measured' if x is None else f'{100 * x:.2f} %'


def compression_text(record: run_record.RunRecord) -> str:
  """What bigjax.compress did to the run, as the card's line says it ('' for nothing)."""
  parts = []
  prune = record.pruning
  if prune:
    parts.append(f'magnitude pruning to {prune["target_sparsity"]:.0%} sparsity ({prune["scope"]})')
  if record.derived.distill:
    parts.append(f'distilled from the run `{record.derived.distill["teacher"]}`')
  quantization = record.derived.quantization
  if quantization:
    parts.append(f'int8 quantization with qwix ({quantization["mode"]} mode, {quantization["activations"]} '
                 f'activation scales) of the run `{quantization["source"]}`')
  return '; '.join(parts)


def _tokenizer_source(config: dict, spec: dict) -> str:
  data, init = config['data'], config.get('init', {})
  if data.get('tokenizer_file'):
    return f'the public tokenizer {data["tokenizer_file"]}, not trained on this data'
  if init.get('pretrained'):
    return f'the tokenizer of the pretrained model {init["pretrained"]}'
  return f'{spec["tokenizer"]} tokenizer trained on the training split'


def privacy_lines(privacy: Optional[dict]) -> list[str]:
  """The card's privacy section: a DP-SGD run's (epsilon, delta) and what they cover, or that there are none."""
  lines = ['## Privacy', '']
  if not privacy:
    return lines + ['- Trained without differential privacy: the model may have memorised, and may reveal, '
                    'examples of its training data (experiments.audit measures how much).', '']
  return lines + [
      f'- Trained with DP-SGD: (epsilon, delta) = ({privacy["epsilon"]:.3g}, {privacy["delta"]:.3g}) by the '
      f'{privacy["accountant"].upper()} accountant over {privacy["steps"]} steps, each Poisson-sampling the '
      f'{privacy["dataset_size"]:,} training examples at rate {privacy["sampling_rate"]:.4g}, clipping each '
      f'example\'s gradient to norm {privacy["clip_norm"]:g} and adding Gaussian noise of multiplier '
      f'{privacy["noise_multiplier"]:.4g}; neighbouring datasets differ by one example added or removed.',
      f'- What is private: {privacy.get("private", "the training examples")}.',
      f'- Tokenizer: {privacy.get("tokenizer", "not recorded")}.',
      '- The noise is pseudo-random from the run\'s seed (for exact resumption): the guarantee assumes '
      'the seed stays secret.', '']


def write_card(directory: str, *, metadata: dict, evaluation: Optional[dict], training: dict,
               language: str, round_trip: Optional[dict] = None) -> str:
  """MODEL_CARD.md in directory (the artifact). evaluation: {'data', 'report', 'calibration'} or None."""
  # The run's config.json record, as the artifact carries it.
  record = run_record.RunRecord.from_json({'config': metadata['config'], 'derived': metadata['derived']},
                                          os.path.join(directory, 'metadata.json'))
  config, derived, labels = record.config, record.derived, metadata['labels']
  data, model, spec = record.data, record.model, metadata['input']
  model_spec = registry.spec(model['name'])
  own = registry.own_section(model)
  compression = compression_text(record)
  lines = [
      f'# Model card: {model["name"]} text classifier ({", ".join(labels)})', '',
      f'Artifact: this folder (format {metadata["format"]} v{metadata["format_version"]}), exported '
      f'{metadata["created"]} from the bigjax run `{metadata["run"]["workdir"]}` at step {metadata["run"]["step"]}.',
      '', '## Model details', '',
      f'- Type: {model_spec.description or model_spec.name}; embedding width {model["embed_dim"]}, '
      f'{", ".join(f"{k} {v!r}" if v == "" else f"{k} {v}" for k, v in sorted(own.items()))}.',
      f'- Output: a probability for each of {len(labels)} classes ({", ".join(labels)}) and the most probable label.',
      f'- Framework: JAX/Flax (bigjax), exported with `jax.export` (StableHLO) for {", ".join(metadata["platforms"])}'
      f'{"; not lowered for " + ", ".join(metadata["platforms_skipped"]) if metadata.get("platforms_skipped") else ""}.',
      f'- Parameters: {sum(f["bytes"] for n, f in metadata["files"].items() if n.endswith(".npz")):,} bytes of '
      'plain arrays (params.npz).',
      f'- Compression: {compression if compression else "none (full-precision parameters as trained)"}.',
      f'- Training config: seed {config["seed"]}, optimizer {config["optim"]["name"]} at learning rate '
      f'{config["optim"]["learning_rate"]}, batch {config["train"]["batch_size"]}, {derived.total_steps} '
      'steps; the whole resolved config is in metadata.json under `config`.',
      '- License, citation, contact: as for the bigjax project and the training corpus.',
      '', '## Intended use', '',
      f'- Sentiment (or the classes above) of short {language} texts like the training data: research, '
      'baselines, demonstrations of the bigjax deployment path.',
      '- Not for decisions about people, moderation without human review, or any text unlike the training '
      'data (other languages, domains, registers), where its accuracy is unknown.',
      '', '## Limits', '',
      f'- Length: texts are cut to their {"first" if spec["keep"] == "first" else "last"} {spec["max_len"]} tokens; '
      'the rest is not read' + ('; the model reads them last token first (a backward model).'
                                if spec.get('direction') == 'backward' else '.'),
      *([f'- Width: the exported function refuses rows of more than {spec["max_tokens"]} tokens (the '
         f'model\'s {model_spec.max_tokens_key}); predict.py never makes one.'] if spec.get('max_tokens') else []),
      f'- Vocabulary: {spec["vocab_size"]:,} entries ({_tokenizer_source(config, spec)}'
      f'{", input lowercased" if _lowercases(directory) else ""}); '
      f'{"unknown words map to <unk>" if spec["tokenizer"] != "bpe" else "unknown words split into subwords"}.',
      f'- Language: {language} only (that of the training data; nothing checks the input\'s language).',
      '- An empty text (no tokens) gets the model\'s output for an empty sequence, not an error.',
      '', '## Factors', '',
      '- Evaluated on the whole test split only; no breakdown by domain, length, dialect or demographic group '
      'was made (the corpus has no such annotations).',
      '', '## Training data', '',
      f'- {training.get("description") or data["path"] or data["name"]}',
      f'- Size: {training.get("size_text", "unknown")}.',
      '', '## Evaluation data', '',
  ]
  if evaluation:
    lines += [f'- {evaluation["data"]}: {evaluation["report"]["examples"]:,} labelled examples, '
              'scored with this artifact (its own tokenizer and exported function).', '']
  else:
    lines += ['- The run\'s data could not be read at export time; the figures below are the run\'s own '
              'results.json test report, and calibration was not measured.', '']
  report = evaluation['report'] if evaluation else (metadata['run'].get('test') or {})
  lines += ['## Metrics and quantitative analyses', '',
            '| metric | value |', '| --- | --- |',
            f'| test accuracy | {_pct(report.get("accuracy"))} |',
            f'| test macro-F1 | {_pct(report.get("macro_f1"))} |']
  for name, f1 in zip(labels, report.get('f1_per_class', [])):
    lines.append(f'| F1 of class {name} | {_pct(f1)} |')
  if evaluation:
    calib = evaluation['calibration']
    lines += [f'| expected calibration error ({calib["bins"]} equal-width bins) | {_pct(calib["ece"])} |',
              f'| mean confidence / accuracy | {_pct(calib["mean_confidence"])} / {_pct(calib["accuracy"])} |',
              f'| negative log-likelihood | {calib["nll"]:.4f} |', '',
              f'Reliability diagram ({calib["bins"]} bins): [{DIAGRAM_FILE}]({DIAGRAM_FILE})', '',
              f'![reliability diagram]({DIAGRAM_FILE})', '']
    if report.get('confusion'):
      lines += ['Confusion matrix (rows: true, columns: predicted, in the order ' + ', '.join(labels) + '): `'
                + str(report['confusion']) + '`', '']
  if round_trip:
    lines += [f'Export check: on these {round_trip["examples"]:,} texts the artifact\'s probabilities differ '
              f'from the checkpoint\'s by at most {round_trip["max_abs_diff"]:.3g} (absolute).', '']
  lines += privacy_lines(derived.privacy) + ['## Ethical considerations', '',
            '- Movie-review sentiment data carries the opinions and biases of its authors; predictions on text '
            'about people or groups may reflect them. No fairness analysis was done.', '',
            '## Caveats and recommendations', '',
            '- Probabilities are only as calibrated as the ECE above says; recalibrate (e.g. temperature '
            'scaling on held-out data) before thresholding on them.',
            '- Re-evaluate on your own data before use; accuracy drops on text unlike the training data.', '']
  path = os.path.join(directory, CARD_FILE)
  with open(path, 'w', encoding='utf-8') as f:
    f.write('\n'.join(lines))
  return path


def training_summary(description: str, split_sizes: dict, derived: run_record.Derived) -> dict:
  """What the card says about the training data: its origin and example counts per split."""
  if split_sizes:
    size = ', '.join(f'{name} {count:,}' for name, count in split_sizes.items()) + ' examples'
  else:
    size = (f'at most {derived.steps_per_epoch * derived.global_batch_rows:,} training '
            'examples (steps per epoch x batch; the data was not readable at export time)')
  tokens = derived.train_batches.get('real_tokens')  # {} where the run did not record its batches.
  if tokens:
    size += f'; {tokens:,} training tokens after truncation'
  return {'description': description, 'size_text': size}

