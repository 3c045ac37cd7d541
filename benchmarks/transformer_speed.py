"""The Transformer's training step, bigjax against Hugging Face `transformers` in PyTorch, side by side.

  python -m benchmarks.transformer_speed --peer_python=/path/to/torch-venv/bin/python --rounds=3
  python -m benchmarks.transformer_speed --peer_python=... --size=base  # BERT-base sizes, batch 8

bigjax's side is the step its trainer runs, built from the library's own pieces as
experiment.build_experiment builds it (registry.model_fns of the `transformer` model, the
Classification task, the optimizer of the config's optim section, parallel.JitDriver around
bigjax.train.step.train_step), in this process. The peer is benchmarks/torch_peer_transformer.py:
BertForSequenceClassification of the same sizes, in a subprocess of its own (torch and JAX never
share a process), with torch.set_num_threads(--threads). Both train transformer_sst2.py's encoder
and recipe (post-LN, exact GELU, BERT's pooler on the first position, dropout 0.1 on the hidden
states and attention weights, AdamW 5e-4 with weight decay 0.01, clipping at norm 1, a linear
schedule) on the same full rows of random token ids: batch x seq_len real tokens a step. torch's
AdamW is the fused one, which transformers' Trainer uses by default with torch >= 2.8.

The sides alternate within each round (bigjax, torch, ...) so that any drift of the machine hits
all of them; figures are medians over rounds of each run's median step time. Each round also
measures the f32 matmul ceiling of this CPU in JAX (a large jnp.dot); the best of the rounds is
the day's ceiling, and bigjax's step is reported as a fraction of it, counting the model's matmul
FLOPs (the `transformer` spec's training_flops). Parameter counts and tokens per step of both
sides are printed and must agree, or the race stops.

bigjax keeps freed host memory in the process, as its trainer does (bigjax/hostmem.py); torch
runs with that allocator setting ("torch_same_allocator", the like-for-like figure) and with its
default one ("torch"), as benchmarks.compare_peers does. bigjax also runs with bf16 matmul
operands (model.transformer.dtype=bfloat16) where the CPU has bf16 instructions (--bf16=auto):
a second line; the headline is float32 against float32.
"""
import dataclasses
import os
import sys
import tempfile

from absl import app
from absl import flags
from absl import logging

from benchmarks import measure as bench
from benchmarks.step_race import bf16_wanted
from benchmarks.step_race import bigjax_config
from benchmarks.step_race import BigjaxStep
from benchmarks.step_race import cpu_model
from benchmarks.step_race import HEADLINE_PEER
from benchmarks.step_race import medians
from benchmarks.step_race import NUM_CLASSES
from benchmarks.step_race import PEER_SETTINGS
from benchmarks.step_race import pin_cpus
from benchmarks.step_race import race_batch
from benchmarks.step_race import ROOT
from benchmarks.step_race import run_peer
from benchmarks.step_race import same_work
from benchmarks.step_race import Setup
from benchmarks.step_race import versions
from benchmarks.step_race import write
from bigjax import hostcpu
from bigjax import logs
from bigjax.models import registry
from experiments import cli

PEER = os.path.join(ROOT, 'benchmarks', 'torch_peer_transformer.py')

# sst2: transformer_sst2.py's encoder and its SST-2 word vocabulary (14,833 words,
# docs/results/RESULTS.md); base: BERT-base's sizes and WordPiece vocabulary; tiny: the test's.
SIZES = {'sst2': Setup(256, 4, 4, 1024, 14833, 32), 'base': Setup(768, 12, 12, 3072, 30522, 8),
         'tiny': Setup(16, 1, 2, 32, 100, 4, 16)}

_PEER_PYTHON = flags.DEFINE_string('peer_python', sys.executable, 'Python with torch and transformers installed.')
_SIZE = flags.DEFINE_enum('size', 'sst2', list(SIZES), 'Encoder sizes: sst2 (transformer_sst2.py: 256 wide, 4 '
                          'layers, 4 heads, MLP 1024, batch 32) or base (BERT-base: 768/12/12/3072, batch 8).')
_BATCH = flags.DEFINE_integer('batch_size', 0, "Rows per step; 0: the size's.")
_SEQ_LEN = flags.DEFINE_integer('seq_len', 0, "Tokens per row (every row full); 0: the size's (128).")
_VOCAB = flags.DEFINE_integer('vocab_size', 0, "0: the size's.")
_ROUNDS = flags.DEFINE_integer('rounds', 3, 'Alternating rounds.', lower_bound=1)
_STEPS = flags.DEFINE_integer('steps', 10, 'Timed steps per run.', lower_bound=1)
_WARMUP = flags.DEFINE_integer('warmup_steps', 3, 'Untimed steps before them in each run (bigjax compiles '
                               'before its first round).', lower_bound=0)
_THREADS = flags.DEFINE_integer('threads', 2, "torch's threads; a process that may use more CPUs is pinned to "
                                'this many first (the peer inherits it), so XLA has as many.', lower_bound=1)
_BF16 = flags.DEFINE_enum('bf16', 'auto', ['auto', 'yes', 'no'], 'Also run bigjax with bf16 matmul operands; '
                          'auto: where the CPU has bf16 instructions.')
_PEERS = flags.DEFINE_list('peers', list(PEER_SETTINGS), f'Which torch runs: {", ".join(PEER_SETTINGS)}.')
_JSON_OUT = flags.DEFINE_string('json_out', 'runs/transformer_speed.json', 'The figures, as JSON.')
_MARKDOWN_OUT = flags.DEFINE_string('markdown_out', 'runs/transformer_speed.md', 'The summary, as markdown.')


def peer_command(python: str, setup: Setup, config, steps: int, warmup_steps: int, threads: int, seed: int,
                 json_out: str) -> list[str]:
  """torch_peer_transformer.py with the sizes and recipe of bigjax's config."""
  m, o = config.model, config.optim
  if m.dropout != m.transformer.attention_dropout:
    raise ValueError(f'model.dropout={m.dropout} and model.transformer.attention_dropout='
                     f'{m.transformer.attention_dropout}: the peer takes one dropout for both')
  return [python, PEER, f'--hidden={setup.hidden}', f'--layers={setup.layers}', f'--heads={setup.heads}',
          f'--intermediate={setup.intermediate}', f'--vocab_size={setup.vocab_size}',
          f'--max_positions={m.transformer.max_positions}', f'--num_labels={NUM_CLASSES}', f'--dropout={m.dropout}',
          f'--batch_size={setup.batch_size}', f'--seq_len={setup.seq_len}', f'--lr={o.learning_rate}',
          f'--weight_decay={o.weight_decay}', f'--clip_norm={o.clip_norm}', f'--steps={steps}',
          f'--warmup_steps={warmup_steps}', f'--threads={threads}', f'--seed={seed}', f'--json_out={json_out}']


def race(setup: Setup, *, peer_python: str, rounds: int, steps: int, warmup_steps: int, threads: int,
         bf16: bool, peers: list[str], seed: int = 0, ceiling_n: int = 2048, ceiling_s: float = 1.0) -> dict:
  """Runs the race; returns its figures (what --json_out holds)."""
  unknown = sorted(set(peers) - set(PEER_SETTINGS))
  if unknown or not peers:
    raise ValueError(f'--peers={",".join(peers)}: use some of {", ".join(PEER_SETTINGS)}')
  if rounds < 1 or steps < 1:
    raise ValueError(f'rounds={rounds}, steps={steps}: at least one of each')
  total_steps = 1 + rounds * (warmup_steps + steps)
  dtypes = ['float32', 'bfloat16'] if bf16 else ['float32']
  configs = {f'bigjax_{d}': bigjax_config(setup, d, total_steps) for d in dtypes}
  batch = race_batch(setup, seed)
  steppers = {side: BigjaxStep(config, setup.vocab_size, batch) for side, config in configs.items()}
  for stepper in steppers.values():
    stepper.compile()  # Before any timing.
  config = configs['bigjax_float32']
  runs = {side: [] for side in (*steppers, *peers)}
  ceilings = []
  with tempfile.TemporaryDirectory() as tmp:
    for i in range(rounds):
      ceilings.append(bench.matmul_ceiling(n=ceiling_n, seconds=ceiling_s))
      for side, stepper in steppers.items():
        runs[side].append(stepper.run(warmup_steps, steps))
      for peer in peers:
        command = peer_command(peer_python, setup, config, steps, warmup_steps, threads, seed,
                               os.path.join(tmp, f'{peer}_{i}.json'))
        runs[peer].append(run_peer(command, PEER_SETTINGS[peer]))
      print(f'round {i + 1}/{rounds}: ceiling {ceilings[-1] / 1e9:.1f} GFLOP/s; ' +
            ', '.join(f'{side} {r[-1]["tokens_per_s"]:.0f} tokens/s' for side, r in runs.items()), flush=True)

  work = same_work(runs)
  median = medians(runs)
  spec = registry.spec('transformer')
  own = registry.own_section(config.model.to_dict())
  flops = spec.training_flops(own, batch=setup.batch_size, width=setup.seq_len,
                              real_tokens=work['bigjax_float32']['tokens_per_step'], embed_dim=setup.hidden,
                              num_classes=NUM_CLASSES)['executed']
  ceiling = max(ceilings)
  peer_report = runs[peers[0]][0]
  return {
      'cpu': cpu_model(), 'cpus': len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count(),
      'cpu_bf16_instructions': hostcpu.native_bf16_matmuls(), 'threads': threads,
      'versions': dict(versions(), torch=peer_report['torch'], transformers=peer_report['transformers']),
      'configuration': {**dataclasses.asdict(setup), 'max_positions': own['max_positions'], 'pre_ln': own['pre_ln'],
                        'gelu': own['gelu'], 'pooling': own['pooling'], 'pooler': own['pooler'],
                        'dropout': config.model.dropout, 'attention_dropout': own['attention_dropout'],
                        'optimizer': config.optim.name, 'learning_rate': config.optim.learning_rate,
                        'weight_decay': config.optim.weight_decay, 'clip_norm': config.optim.clip_norm,
                        'schedule': config.optim.schedule, 'torch_attention': peer_report['attention'],
                        'torch_adamw': peer_report['adamw'],
                        'steps': steps, 'warmup_steps': warmup_steps, 'rounds': rounds},
      'same_work': work['bigjax_float32'],
      'runs': runs, 'median': median,
      'ratios': {f'{side}_vs_{peer}': median[side]['tokens_per_s'] / median[peer]['tokens_per_s']
                 for side in steppers for peer in peers},
      'headline': {'bigjax': 'bigjax_float32', 'peer': peers[0] if HEADLINE_PEER not in peers else HEADLINE_PEER},
      'matmul_ceiling': {'flops_per_s': ceiling, 'per_round': ceilings, 'n': ceiling_n, 'dtype': 'float32'},
      'flops_per_step': flops,
      'fraction_of_ceiling': {side: flops / median[side]['step_s'] / ceiling for side in steppers},
  }


def markdown(r: dict) -> str:
  c, head = r['configuration'], r['headline']
  peer = head['peer']
  lines = [
      '# Transformer train step: bigjax against PyTorch `transformers`', '',
      f'CPU: {r["cpu"]}, {r["cpus"]} CPUs used, torch threads {r["threads"]}; bf16 instructions: '
      f'{r["cpu_bf16_instructions"]}.',
      'Versions: ' + ', '.join(f'{k} {v}' for k, v in r['versions'].items()) + '.',
      f'Configuration: hidden {c["hidden"]}, {c["layers"]} layers, {c["heads"]} heads, intermediate '
      f'{c["intermediate"]}, vocabulary {c["vocab_size"]}, {c["max_positions"]} positions, '
      f'{"pre" if c["pre_ln"] else "post"}-LN, GELU {c["gelu"]}, pooling {c["pooling"]} + pooler, dropout '
      f'{c["dropout"]} (attention {c["attention_dropout"]}); batch {c["batch_size"]} x {c["seq_len"]} tokens; '
      f'{c["optimizer"]} lr {c["learning_rate"]} wd {c["weight_decay"]}, clip {c["clip_norm"]}, {c["schedule"]} '
      f'schedule; torch attention: {c["torch_attention"]}, AdamW: {c["torch_adamw"]}.',
      f'Same work: {r["same_work"]["parameters"]:,} parameters and {r["same_work"]["tokens_per_step"]:,} tokens a '
      'step on every side.',
      f'Medians of {c["rounds"]} alternating rounds, each run the median of {c["steps"]} steps after '
      f'{c["warmup_steps"]} untimed ones.', '',
      f'| side | parameters | tokens/step | tokens/s | step ms | vs {peer} | fraction of f32 matmul ceiling |',
      '| --- | ---: | ---: | ---: | ---: | ---: | ---: |']
  for side, m in r['median'].items():
    ratio = r['ratios'].get(f'{side}_vs_{peer}')
    fraction = r['fraction_of_ceiling'].get(side)
    first = r['runs'][side][0]
    lines.append(f'| {side} | {first["parameters"]:,} | {first["tokens_per_step"]:,} | {m["tokens_per_s"]:,.0f} | '
                 f'{1000 * m["step_s"]:.1f} | {"" if ratio is None else f"{ratio:.2f}x"} | '
                 f'{"" if fraction is None else f"{fraction:.1%}"} |')
  ceiling = r['matmul_ceiling']
  headline = r['ratios'][f'{head["bigjax"]}_vs_{peer}']
  lines += ['', f'Headline ({head["bigjax"]} / {peer}): **{headline:.2f}x**.',
            f'f32 matmul ceiling in JAX ({ceiling["n"]}x{ceiling["n"]} jnp.dot, best of '
            f'{len(ceiling["per_round"])}): {ceiling["flops_per_s"] / 1e9:.1f} GFLOP/s; the step\'s matmuls: '
            f'{r["flops_per_step"] / 1e9:.1f} GFLOP.', '']
  return '\n'.join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  pin_cpus(_THREADS.value)
  cli.setup_host()  # As the trainer: freed host memory kept in the process.
  logs.quiet_library_logs()
  logging.set_verbosity(logging.WARNING)
  setup = SIZES[_SIZE.value]
  setup = dataclasses.replace(setup, batch_size=_BATCH.value or setup.batch_size,
                              seq_len=_SEQ_LEN.value or setup.seq_len, vocab_size=_VOCAB.value or setup.vocab_size)
  results = race(setup, peer_python=_PEER_PYTHON.value, rounds=_ROUNDS.value, steps=_STEPS.value,
                 warmup_steps=_WARMUP.value, threads=_THREADS.value, bf16=bf16_wanted(_BF16.value),
                 peers=_PEERS.value)
  summary = markdown(results)
  print(summary)
  write(results, summary, _JSON_OUT.value, _MARKDOWN_OUT.value)


if __name__ == '__main__':
  app.run(main)
