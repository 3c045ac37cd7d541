"""Before and after: what a compression method bought, measured on two loaded runs side by side.

Parameters, bytes on disk (the best/ checkpoint: what export and deployment ship), CPU
latency per example at batch 1 and at batch 64, and dev and test accuracy. Latencies are
measured in alternating rounds (source, compressed, source, ...) in one process, so that
a slower minute of the machine lands on both; each figure is the median over rounds.
"""
import os
import statistics
import time
from typing import Sequence

import jax
import numpy as np

from bigjax.compress import pruning, quantize
from bigjax.data import batching


def bytes_under(folder: str) -> int:
  return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(folder) for name in names)


def parameter_count(params) -> int:
  """Weights, whatever their storage: an int8 array counts as the weights it encodes, not its scales."""
  def count(leaf):
    if isinstance(leaf, quantize.WithAux):
      leaf = leaf.array
    return leaf.qvalue.size if isinstance(leaf, quantize.qwix.QArray) else np.size(leaf)

  return int(sum(count(leaf) for leaf in jax.tree.leaves(params, is_leaf=quantize.is_quantized)))


def latency_batches(run, texts: Sequence[str], batch_size: int, count: int) -> list:
  """`count` batches of `batch_size` texts (the first ones, in order), each padded to its own bucket."""
  boundaries = run.derived.bucket_boundaries
  rows = run.encode(list(texts[:batch_size * count]))
  split = batching.EncodedSplit.from_rows(rows, np.zeros(len(rows), np.int32))
  return [batching.make_batch(split, np.arange(i, min(i + batch_size, len(split))), batch_size, boundaries,
                              batching.bucket_width(split.lengths[i:i + batch_size], boundaries))
          for i in range(0, len(split), batch_size)]


def side_by_side_latency(runs: dict, texts: Sequence[str], batch_sizes=(1, 64), rounds: int = 5,
                         examples_per_round: int = 256) -> dict:
  """{name: {'batch_1_ms': ..., 'batch_64_ms': ...}}: milliseconds per example, median over rounds.

  Each round runs every run over the same batches (examples_per_round texts), one after
  the other; compilation happens before the first round.
  """
  results = {name: {} for name in runs}
  for batch_size in batch_sizes:
    count = max(1, examples_per_round // batch_size)
    jobs = {}
    for name, run in runs.items():
      batches = latency_batches(run, texts, batch_size, count)
      logits = jax.jit(run.fns.logits)
      params = jax.device_put(run.params)
      for batch in batches:  # Compile every bucket width.
        jax.block_until_ready(logits(params, batch.token_ids, batch.lengths))
      jobs[name] = (logits, params, batches)
    times = {name: [] for name in runs}
    for _ in range(rounds):
      for name, (logits, params, batches) in jobs.items():
        start = time.perf_counter()
        for batch in batches:
          jax.block_until_ready(logits(params, batch.token_ids, batch.lengths))
        examples = sum(float(np.sum(b.weights)) for b in batches)
        times[name].append(1e3 * (time.perf_counter() - start) / examples)
    for name in runs:
      results[name][f'batch_{batch_size}_ms'] = statistics.median(times[name])
  return results


def compare(source, compressed, dev, test, rounds: int = 5) -> dict:
  """{'before': ..., 'after': ...}: each run's size, accuracy and latency (see the module docstring).

  dev, test: splits with .texts and .labels.
  """
  rows = {}
  for name, run in (('before', source), ('after', compressed)):
    rows[name] = {'workdir': run.workdir, 'parameters': parameter_count(run.params),
                  'bytes_on_disk': bytes_under(os.path.join(run.workdir, 'best')),
                  'dev_accuracy': run.evaluate(dev.texts, dev.labels)['accuracy'],
                  'test_accuracy': run.evaluate(test.texts, test.labels)['accuracy']}
  latency = side_by_side_latency({'before': source, 'after': compressed}, test.texts, rounds=rounds)
  for name, row in rows.items():
    row.update(latency[name])
  return rows


def markdown(report: dict) -> str:
  """The report's table: one row per run."""
  before, after = report['before'], report['after']
  lines = [f"# {report['method']}: {os.path.basename(before['workdir'])} -> {os.path.basename(after['workdir'])}",
           '', f"{report.get('description', '')}", '',
           '| | parameters | bytes on disk | batch 1 ms/example | batch 64 ms/example | dev accuracy | '
           'test accuracy |', '|---|---:|---:|---:|---:|---:|---:|']
  for name, row in (('before', before), ('after', after)):
    lines.append(f"| {name} | {row['parameters']:,} | {row['bytes_on_disk']:,} | {row['batch_1_ms']:.3f} | "
                 f"{row['batch_64_ms']:.4f} | {100 * row['dev_accuracy']:.2f} % | "
                 f"{100 * row['test_accuracy']:.2f} % |")
  ratio = after['bytes_on_disk'] / max(before['bytes_on_disk'], 1)
  lines += ['', f"Size after / before: {ratio:.3f}. Test accuracy change: "
                f"{100 * (after['test_accuracy'] - before['test_accuracy']):+.2f} points. Latency after / before: "
                f"{after['batch_1_ms'] / before['batch_1_ms']:.2f} (batch 1), "
                f"{after['batch_64_ms'] / before['batch_64_ms']:.2f} (batch 64)."]
  for key in ('sparsity', 'int8'):
    if key in report:
      lines += ['', f'{key}: {report[key]}']
  return '\n'.join(lines) + '\n'


def method_report(method: str, source, compressed, dataset, config, rounds: int) -> dict:
  """compare()'s report with what the method did: its description, and int8's or pruning's figures."""
  result = compare(source, compressed, dataset.splits['dev'], dataset.splits['test'], rounds)
  result['method'] = method
  if method == 'quantize':
    result['int8'] = compressed.derived.quantization
    result['description'] = (f'int8 ({config.quantize.mode}, activations {config.quantize.activations}) of '
                             f'{source.workdir}')
  elif method == 'prune':
    sparsity = pruning.sparsity_report(compressed.params, config.prune.include)
    result['per_leaf_sparsity'] = sparsity.pop('per_leaf')
    result['sparsity'] = sparsity
    # train.steps, where set, is what ran (it overrides train.epochs).
    finetuning = f'{config.train.steps} steps' if config.train.steps else f'{config.train.epochs} epochs'
    taught = (f', distilled from {config.distill.teacher} (T={config.distill.temperature}, '
              f'alpha={config.distill.alpha})' if config.distill.teacher else ', on the labels alone')
    result['description'] = (f'magnitude pruning to {config.prune.target_sparsity:.0%} ({config.prune.scope}), '
                             f'{finetuning} of finetuning from {source.workdir}{taught}')
  else:
    result['description'] = (f'student {compressed.model_name} distilled from {source.workdir} '
                             f'(T={config.distill.temperature}, alpha={config.distill.alpha})')
  return result
