"""Measures training, evaluation and inference speed of a config; prints a table, writes JSON.

  python -m benchmarks.benchmark --config=experiments/configs/lstm_sst2.py \
      --config.model.embed_dim=300 --config.model.lstm.hidden_dim=256 --json_out=bench.json

Same data pipeline, model and step as experiments.train (built by experiment.build_experiment);
nothing is written but --json_out. Works unchanged on CPU, GPU and TPU.
"""
import json
import os
import statistics
import time

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
from ml_collections import config_flags

from benchmarks import measure as bench  # Not `measure`: measure() below is this command's own.
from bigjax import errors
from bigjax import experiment
from bigjax import hostcpu
from bigjax import logs
from bigjax.config import checks
from bigjax.models import registry
from bigjax.train import loop
from experiments import cli

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file.', lock_config=True)
_JSON_OUT = flags.DEFINE_string('json_out', '', 'Also write the figures here.')
_WINDOWS = flags.DEFINE_integer('windows', 10, 'Timed windows; figures are medians over them.')
_WINDOW_STEPS = flags.DEFINE_integer('window_steps', 20, 'Train steps per window.')
_VERBOSE = flags.DEFINE_bool('verbose', False, 'Show tracebacks for user errors.')


def measure(config) -> dict:
  checks.check_config(config)
  with bench.CompileCounter() as compiles:
    return _measure(config, compiles)


def _measure(config, compiles: bench.CompileCounter) -> dict:
  language_model = config.model.name in registry.names(registry.LANGUAGE_MODEL)
  exp = (experiment.build_lm_experiment if language_model else experiment.build_experiment)(config, workdir=None)
  driver, k, windows = exp.driver, _WINDOW_STEPS.value, _WINDOWS.value
  steps = k * windows
  start = time.perf_counter()
  batches = [exp.train_batches.batch(s) for s in range(steps)]
  input_seconds = time.perf_counter() - start
  input_examples, input_tokens = bench.batch_totals(batches)

  state = driver.put_state(exp.init_state())
  first_of_shape = {}
  for b in batches:
    first_of_shape.setdefault(b.token_ids.shape, b)
  compile_start = (compiles.count, compiles.seconds)
  for b in first_of_shape.values():  # Compile every shape before timing.
    state, _ = driver.train_step(state, b)
  jax.block_until_ready(state)

  def device_window(i):
    nonlocal state
    for b in batches[i * k:(i + 1) * k]:
      state, _ = driver.train_step(state, b)
    return state

  faults_before = bench.minor_page_faults()
  device_times = bench.time_windows(device_window, windows)
  faults_per_step = (bench.minor_page_faults() - faults_before) / steps

  def pipeline_window(i):  # As the training loop runs: batches built on a prefetch thread.
    nonlocal state
    for b in loop.prefetch(map(exp.train_batches.batch, range(i * k, (i + 1) * k))):
      state, _ = driver.train_step(state, b)
    return state

  pipeline_times = bench.time_windows(pipeline_window, windows)
  train_compiles = (compiles.count - compile_start[0], compiles.seconds - compile_start[1])

  window_totals = [bench.batch_totals(batches[i * k:(i + 1) * k]) for i in range(windows)]
  examples_per_s = statistics.median(e / t for (e, _), t in zip(window_totals, device_times))
  tokens_per_s = statistics.median(n / t for (_, n), t in zip(window_totals, device_times))
  pipeline_examples_per_s = statistics.median(e / t for (e, _), t in zip(window_totals, pipeline_times))

  m = config.model
  own = registry.own_section(m.to_dict())
  # A language model's training logits per token: the target and the sampled negatives, or the vocabulary.
  outputs = ((1 + config.lm.negatives) if config.lm.negatives else exp.derived.vocab_size) if language_model \
      else exp.derived.num_classes
  spec = registry.spec(m.name)
  flops = [spec.training_flops(own, batch=b.token_ids.shape[0], width=b.token_ids.shape[1],
                               real_tokens=int((b.lengths * (b.weights > 0)).sum()), embed_dim=m.embed_dim,
                               num_classes=outputs)
           for b in batches]
  executed_per_s = statistics.median(sum(f['executed'] for f in flops[i * k:(i + 1) * k]) / t
                                     for i, t in enumerate(device_times))
  useful_per_s = statistics.median(sum(f['useful'] for f in flops[i * k:(i + 1) * k]) / t
                                   for i, t in enumerate(device_times))

  # A language model's evaluation is a full softmax over the vocabulary (~1 min per 40k dev
  # tokens on 2 CPU cores): a few of its windows give the speed.
  dev = exp.dev[:4] if language_model else exp.dev
  loop.evaluate(driver, exp.task, state, dev)  # Compile.
  eval_times = bench.time_windows(lambda _: loop.evaluate(driver, exp.task, state, dev), 3)
  dev_examples, _ = bench.batch_totals(dev)
  inference = None
  if not language_model:  # A language model has no class logits to serve.
    logits_fn = jax.jit(exp.fns.logits)
    params = driver.get_state(state).params
    run_inference = lambda _: [logits_fn(params, b.token_ids, b.lengths) for b in exp.dev]
    run_inference(0)
    inference = {'examples_per_s': dev_examples / statistics.median(bench.time_windows(run_inference, 3)),
                 'batch_size': config.train.eval_batch_size}
  # The f32 ceiling is the common yardstick; bf16 operands also get their own, which says how
  # far a bf16 step is from what the hardware's bf16 units do.
  matmul_dtype = own.get('dtype', 'float32')
  ceilings = {'float32': bench.matmul_ceiling(dtype=jnp.float32)}
  if matmul_dtype != 'float32':
    ceilings[matmul_dtype] = bench.matmul_ceiling(dtype=jnp.dtype(matmul_dtype))

  return {
      'config': {'model': m.to_dict(), 'batch_size': config.train.batch_size, 'max_len': config.data.max_len,
                 'parallel': config.parallel, 'data': config.data.path or config.data.name},
      'devices': [str(d) for d in jax.devices()],
      'host': {'minor_page_faults_per_step': faults_per_step, 'cpu_bf16_instructions': hostcpu.native_bf16_matmuls()},
      'train': {'examples_per_s': examples_per_s, 'tokens_per_s': tokens_per_s,
                'step_ms': 1000 * statistics.median(device_times) / k,
                'pipeline_examples_per_s': pipeline_examples_per_s,
                'input_pipeline_overhead': 1 - pipeline_examples_per_s / examples_per_s,
                'window_steps': k, 'windows': windows},
      'input_pipeline': {'examples_per_s': input_examples / input_seconds, 'tokens_per_s': input_tokens / input_seconds,
                         'vs_train_step': (input_examples / input_seconds) / examples_per_s},
      'compilation': {'train_shapes': len(first_of_shape), 'train_compiles': train_compiles[0],
                      'train_compile_s': train_compiles[1], 'all_compiles': compiles.count,
                      'all_compile_s': compiles.seconds},
      'padding': exp.derived.train_batches,
      'flops': {'executed_per_s': executed_per_s, 'useful_per_s': useful_per_s, 'matmul_operand_dtype': matmul_dtype,
                'matmul_ceiling_per_s': ceilings['float32'],
                'executed_fraction_of_ceiling': executed_per_s / ceilings['float32'],
                'useful_fraction_of_ceiling': useful_per_s / ceilings['float32'],
                # Per operand dtype: {'float32': {...}} and, for a bf16 model, {'bfloat16': {...}}.
                'ceilings': {dtype: {'matmul_ceiling_per_s': c, 'executed_fraction': executed_per_s / c,
                                     'useful_fraction': useful_per_s / c} for dtype, c in ceilings.items()}},
      'eval': {'examples_per_s': dev_examples / statistics.median(eval_times)},
      'inference': inference,
      'memory': {'peak_host_mib': bench.peak_host_memory_mib(), 'peak_device_mib': bench.peak_device_memory_mib()},
  }


def print_table(r: dict) -> None:
  rows = [
      ('train examples/s (device step)', f"{r['train']['examples_per_s']:.0f}"),
      ('train real tokens/s', f"{r['train']['tokens_per_s']:.0f}"),
      ('train step ms', f"{r['train']['step_ms']:.2f}"),
      ('train examples/s (with input pipeline)', f"{r['train']['pipeline_examples_per_s']:.0f}"),
      ('input pipeline examples/s (alone)', f"{r['input_pipeline']['examples_per_s']:.0f}"),
      ('input pipeline / train step', f"{r['input_pipeline']['vs_train_step']:.1f}x"),
      ('compiled train shapes / compile s', f"{r['compilation']['train_shapes']} / "
                                            f"{r['compilation']['train_compile_s']:.1f}"),
      ('padding fraction (epoch 0)', f"{r['padding']['padding_fraction']:.3f}"),
      ('achieved GFLOP/s executed / useful', f"{r['flops']['executed_per_s'] / 1e9:.1f} / "
                                             f"{r['flops']['useful_per_s'] / 1e9:.1f}"),
      *[row for dtype, c in r['flops']['ceilings'].items() for row in (
          (f'{dtype} matmul ceiling GFLOP/s', f"{c['matmul_ceiling_per_s'] / 1e9:.1f}"),
          (f'fraction of {dtype} ceiling executed / useful', f"{c['executed_fraction']:.1%} / {c['useful_fraction']:.1%}"))],
      ('eval examples/s', f"{r['eval']['examples_per_s']:.0f}"),
      ('inference examples/s', f"{r['inference']['examples_per_s']:.0f}" if r['inference'] else '(a language model)'),
      ('peak host memory MiB', f"{r['memory']['peak_host_mib']:.0f}"),
      ('CPU bf16 instructions', {True: 'yes', False: 'no (bf16 matmuls slower than f32)', None: 'unknown'}[
          r['host']['cpu_bf16_instructions']]),
      ('page faults per train step', f"{r['host']['minor_page_faults_per_step']:.0f} (keep_freed_memory={r['host']['keep_freed_memory']})"),
  ]
  width = max(len(name) for name, _ in rows)
  for name, value in rows:
    print(f'{name:<{width}}  {value}')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  keeps_freed_memory = cli.setup_host()
  logs.quiet_library_logs()
  logging.set_verbosity(logging.WARNING)
  results = errors.exit_on_user_error(lambda: measure(_CONFIG.value), _VERBOSE.value)
  results['host']['keep_freed_memory'] = keeps_freed_memory
  print_table(results)
  if _JSON_OUT.value:
    os.makedirs(os.path.dirname(os.path.abspath(_JSON_OUT.value)), exist_ok=True)
    with open(_JSON_OUT.value, 'w', encoding='utf-8') as f:
      json.dump(results, f, indent=2)


if __name__ == '__main__':
  flags.mark_flags_as_required(['config'])
  app.run(main)
