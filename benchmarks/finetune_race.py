"""The race of benchmarks.finetune_speed (its docstring says what is compared and how), without flags so
tests import it: a Hugging Face BERT-family folder's architecture in bigjax's terms, bigjax's config
for it, the peer's command (benchmarks/torch_peer_finetune.py's speed mode), the race and its summary.
"""
import json
import os
import tempfile

from benchmarks import measure as bench
from benchmarks import step_race
from bigjax import hostcpu
from bigjax.config import checks
from bigjax.models import registry

ROOT = step_race.ROOT
PEER_MODULE = 'benchmarks.torch_peer_finetune'
DEFAULT_MODEL_DIR = os.path.normpath(os.path.join(ROOT, '..', 'shared', 'models', 'all-MiniLM-L6-v2'))
# Hugging Face's hidden_act -> bigjax's model.transformer.gelu.
GELUS = {'gelu': 'exact', 'gelu_new': 'tanh', 'gelu_pytorch_tanh': 'tanh'}


def architecture(model_dir: str) -> dict:
  """MODEL_DIR/config.json's encoder in bigjax's terms; ValueError for what bigjax's `transformer` is not."""
  path = os.path.join(model_dir, 'config.json')
  with open(path, encoding='utf-8') as f:
    hf = json.load(f)
  if hf.get('hidden_act') not in GELUS:
    raise ValueError(f'{path}: hidden_act={hf.get("hidden_act")!r}; bigjax runs {", ".join(GELUS)}')
  if hf.get('position_embedding_type', 'absolute') != 'absolute':
    raise ValueError(f'{path}: position_embedding_type={hf["position_embedding_type"]!r}; bigjax learns absolute '
                     'positions only')
  classifier_dropout = hf.get('classifier_dropout')
  if classifier_dropout is not None and classifier_dropout != hf['hidden_dropout_prob']:
    raise ValueError(f'{path}: classifier_dropout={classifier_dropout} differs from hidden_dropout_prob='
                     f'{hf["hidden_dropout_prob"]}; bigjax takes model.dropout for both')
  return {'vocab_size': hf['vocab_size'], 'hidden': hf['hidden_size'], 'layers': hf['num_hidden_layers'],
          'heads': hf['num_attention_heads'], 'intermediate': hf['intermediate_size'],
          'max_positions': hf['max_position_embeddings'], 'type_vocab_size': hf['type_vocab_size'],
          'layer_norm_eps': hf['layer_norm_eps'], 'gelu': GELUS[hf['hidden_act']],
          'dropout': hf['hidden_dropout_prob'], 'attention_dropout': hf['attention_probs_dropout_prob'],
          'init_std': hf.get('initializer_range', 0.02)}


def parse_shape(text: str) -> tuple[int, int]:
  """'16x256' -> (16, 256)."""
  try:
    batch, length = (int(x) for x in text.lower().split('x'))
  except ValueError:
    raise ValueError(f'shape {text!r} is not BATCHxLEN (e.g. 16x256)') from None
  if batch < 1 or length < 1:
    raise ValueError(f'shape {text!r} has an empty side')
  return batch, length


def setup_for(arch: dict, shape: str) -> step_race.Setup:
  batch, length = parse_shape(shape)
  if length > arch['max_positions']:
    raise ValueError(f'shape {shape}: longer than the model\'s {arch["max_positions"]} positions')
  return step_race.Setup(hidden=arch['hidden'], layers=arch['layers'], heads=arch['heads'],
                         intermediate=arch['intermediate'], vocab_size=arch['vocab_size'], batch_size=batch,
                         seq_len=length)


def bigjax_config(arch: dict, setup: step_race.Setup, dtype: str, total_steps: int, learning_rate: float):
  """benchmarks.step_race's config (transformer_sst2.py's at the race's sizes, BERT's pooling and pooler)
  with the pretrained model's architecture and BERT's finetuning recipe."""
  c = step_race.bigjax_config(setup, dtype, total_steps)
  c.model.dropout = arch['dropout']
  t = c.model.transformer
  t.max_positions, t.type_vocab_size = arch['max_positions'], arch['type_vocab_size']
  t.layer_norm_eps, t.gelu, t.pre_ln = arch['layer_norm_eps'], arch['gelu'], False
  t.attention_dropout, t.init_std = arch['attention_dropout'], arch['init_std']
  c.optim.learning_rate = learning_rate
  c.optim.no_decay = 'bias|norm'  # BERT's: no weight decay on biases and LayerNorms, as the peer.
  checks.check_config(c)
  return c


def peer_command(python: str, model_dir: str, shapes: list[str], config, steps: int, warmup_steps: int,
                 threads: int, seed: int, json_out: str) -> list[str]:
  """torch_peer_finetune.py's speed mode at the shapes, with the recipe of bigjax's config."""
  o = config.optim
  return [python, '-m', PEER_MODULE, f'--model_dir={model_dir}', f'--speed_shapes={",".join(shapes)}',
          f'--speed_steps={steps}', f'--speed_warmup_steps={warmup_steps}', f'--learning_rate={o.learning_rate}',
          f'--weight_decay={o.weight_decay}', f'--clip_norm={o.clip_norm}', '--warmup_fraction=0.1',
          f'--threads={threads}', f'--seed={seed}', f'--json_out={json_out}']


def race(model_dir: str, shapes: list[str], *, peer_python: str, rounds: int, steps: int, warmup_steps: int,
         threads: int, bf16: bool, peers: list[str], learning_rate: float = 5e-5, seed: int = 0,
         ceiling_n: int = 2048, ceiling_s: float = 1.0) -> dict:
  """Runs the race; returns its figures (what --json_out holds)."""
  unknown = sorted(set(peers) - set(step_race.PEER_SETTINGS))
  if unknown or not peers:
    raise ValueError(f'--peers={",".join(peers)}: use some of {", ".join(step_race.PEER_SETTINGS)}')
  if rounds < 1 or steps < 1 or not shapes:
    raise ValueError(f'rounds={rounds}, steps={steps}, shapes={shapes}: at least one of each')
  shapes = [f'{b}x{t}' for b, t in map(parse_shape, shapes)]  # Written as the peer keys them.
  arch = architecture(model_dir)
  setups = {shape: setup_for(arch, shape) for shape in shapes}
  total_steps = 1 + rounds * (warmup_steps + steps)
  dtypes = ['float32', 'bfloat16'] if bf16 else ['float32']
  configs = {shape: {f'bigjax_{d}': bigjax_config(arch, setup, d, total_steps, learning_rate) for d in dtypes}
             for shape, setup in setups.items()}
  batches = {shape: step_race.race_batch(setup, seed) for shape, setup in setups.items()}
  steppers = {shape: {side: step_race.BigjaxStep(config, arch['vocab_size'], batches[shape])
                      for side, config in configs[shape].items()} for shape in shapes}
  for by_side in steppers.values():
    for stepper in by_side.values():
      stepper.compile()  # Before any timing.
  config = configs[shapes[0]]['bigjax_float32']  # The recipe, the same at every shape.
  runs = {shape: {side: [] for side in (*steppers[shape], *peers)} for shape in shapes}
  ceilings, peer_reports = [], {}
  with tempfile.TemporaryDirectory() as tmp:
    for i in range(rounds):
      ceilings.append(bench.matmul_ceiling(n=ceiling_n, seconds=ceiling_s))
      for shape in shapes:
        for side, stepper in steppers[shape].items():
          runs[shape][side].append(stepper.run(warmup_steps, steps))
      for peer in peers:
        command = peer_command(peer_python, model_dir, shapes, config, steps, warmup_steps, threads, seed,
                               os.path.join(tmp, f'{peer}_{i}.json'))
        peer_reports[peer] = step_race.run_peer(command, step_race.PEER_SETTINGS[peer], cwd=ROOT)
        for shape in shapes:
          runs[shape][peer].append(peer_reports[peer]['shapes'][shape])
      print(f'round {i + 1}/{rounds}: ceiling {ceilings[-1] / 1e9:.1f} GFLOP/s; ' + '; '.join(
          f'{shape}: ' + ', '.join(f'{side} {r[-1]["tokens_per_s"]:.0f}' for side, r in runs[shape].items())
          for shape in shapes) + ' tokens/s', flush=True)

  ceiling = max(ceilings)
  spec = registry.spec('transformer')
  own = registry.own_section(config.model.to_dict())
  by_shape = {}
  for shape in shapes:
    setup, work, median = setups[shape], step_race.same_work(runs[shape]), step_race.medians(runs[shape])
    flops = spec.training_flops(own, batch=setup.batch_size, width=setup.seq_len,
                                real_tokens=work['bigjax_float32']['tokens_per_step'], embed_dim=setup.hidden,
                                num_classes=step_race.NUM_CLASSES)['executed']
    by_shape[shape] = {
        'batch_size': setup.batch_size, 'seq_len': setup.seq_len, 'same_work': work['bigjax_float32'],
        'parameters': {side: w['parameters'] for side, w in work.items()}, 'runs': runs[shape], 'median': median,
        'ratios': {f'{side}_vs_{peer}': median[side]['tokens_per_s'] / median[peer]['tokens_per_s']
                   for side in steppers[shape] for peer in peers},
        'flops_per_step': flops,
        'fraction_of_ceiling': {side: flops / median[side]['step_s'] / ceiling for side in steppers[shape]}}
  peer_report = peer_reports[peers[0]]
  return {
      'cpu': step_race.cpu_model(),
      'cpus': len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count(),
      'cpu_bf16_instructions': hostcpu.native_bf16_matmuls(), 'threads': threads,
      'versions': dict(step_race.versions(), torch=peer_report['torch'], transformers=peer_report['transformers']),
      'model_dir': model_dir,
      'configuration': {**arch, 'pre_ln': own['pre_ln'], 'pooling': own['pooling'], 'pooler': own['pooler'],
                        'optimizer': config.optim.name, 'learning_rate': config.optim.learning_rate,
                        'weight_decay': config.optim.weight_decay, 'no_decay': config.optim.no_decay,
                        'clip_norm': config.optim.clip_norm, 'schedule': config.optim.schedule,
                        'torch_attention': peer_report['attention'], 'torch_adamw': peer_report['adamw'],
                        'steps': steps, 'warmup_steps': warmup_steps, 'rounds': rounds},
      'shapes': by_shape,
      'headline': {'bigjax': 'bigjax_float32',
                   'peer': step_race.HEADLINE_PEER if step_race.HEADLINE_PEER in peers else peers[0]},
      'matmul_ceiling': {'flops_per_s': ceiling, 'per_round': ceilings, 'n': ceiling_n, 'dtype': 'float32'},
  }


def markdown(r: dict) -> str:
  c, head = r['configuration'], r['headline']
  peer = head['peer']
  ceiling = r['matmul_ceiling']
  lines = [
      '# Finetuning step of a pretrained BERT-family model: bigjax against PyTorch `transformers`', '',
      f'Model: {r["model_dir"]} (bigjax: the same architecture, random weights).',
      f'CPU: {r["cpu"]}, {r["cpus"]} CPUs used, torch threads {r["threads"]}; bf16 instructions: '
      f'{r["cpu_bf16_instructions"]}.',
      'Versions: ' + ', '.join(f'{k} {v}' for k, v in r['versions'].items()) + '.',
      f'Configuration: hidden {c["hidden"]}, {c["layers"]} layers, {c["heads"]} heads, intermediate '
      f'{c["intermediate"]}, vocabulary {c["vocab_size"]}, {c["max_positions"]} positions, {c["type_vocab_size"]} '
      f'token types, LayerNorm eps {c["layer_norm_eps"]}, {"pre" if c["pre_ln"] else "post"}-LN, GELU {c["gelu"]}, '
      f'pooling {c["pooling"]} + pooler, dropout {c["dropout"]} (attention {c["attention_dropout"]}); '
      f'{c["optimizer"]} lr {c["learning_rate"]} wd {c["weight_decay"]} (not on {c["no_decay"]}), clip '
      f'{c["clip_norm"]}, {c["schedule"]} schedule; torch attention: {c["torch_attention"]}, AdamW: '
      f'{c["torch_adamw"]}.',
      f'Medians of {c["rounds"]} alternating rounds, each run the median of {c["steps"]} steps after '
      f'{c["warmup_steps"]} untimed ones; f32 matmul ceiling in JAX ({ceiling["n"]}x{ceiling["n"]} jnp.dot, best '
      f'of {len(ceiling["per_round"])}): {ceiling["flops_per_s"] / 1e9:.1f} GFLOP/s.', '',
      f'| shape | side | parameters | tokens/step | tokens/s | step ms | vs {peer} | fraction of f32 matmul ceiling |',
      '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |']
  for shape, s in r['shapes'].items():
    for side, m in s['median'].items():
      ratio = s['ratios'].get(f'{side}_vs_{peer}')
      fraction = s['fraction_of_ceiling'].get(side)
      lines.append(f'| {shape} | {side} | {s["parameters"][side]:,} | {s["same_work"]["tokens_per_step"]:,} | '
                   f'{m["tokens_per_s"]:,.0f} | {1000 * m["step_s"]:.1f} | '
                   f'{"" if ratio is None else f"{ratio:.2f}x"} | {"" if fraction is None else f"{fraction:.1%}"} |')
  lines += ['', f'Headline ({head["bigjax"]} / {peer}): ' + ', '.join(
      f'{shape} **{s["ratios"][head["bigjax"] + "_vs_" + peer]:.2f}x**' for shape, s in r['shapes'].items()) + '.',
            'Parameters (must agree): ' + '; '.join(
                f'{shape}: ' + ', '.join(f'{side} {n:,}' for side, n in s['parameters'].items())
                for shape, s in r['shapes'].items()) + '.', '']
  return '\n'.join(lines)
