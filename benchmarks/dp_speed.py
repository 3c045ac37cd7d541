"""DP-SGD's train step: bigjax's private step against its own non-private step and against Opacus.

  python -m benchmarks.dp_speed --rounds=5                       # SST-2's MLP (mlp_sst2.py)
  python -m benchmarks.dp_speed --shape=imdb --rounds=3          # IMDB's MLP (mlp_imdb.py: bigrams, 1,024 tokens)
  python -m benchmarks.dp_speed --shape=dp_minilm --rounds=2     # dp_minilm_sst2.py's MiniLM, frozen encoder

Three sides, on one model shape and one batch shape, alternating within each round so that any
drift of the machine hits all of them; figures are medians over rounds of each run's median step:

  bigjax_nonprivate: bigjax's train step (bigjax.train.step via parallel.task_driver, jitted), the
    config's optimizer with dense updates (optim.sparse_embeddings='': what DP-SGD must use, so the
    two bigjax sides differ only in `private=`);
  bigjax_dp: the same driver with private=clipping.PrivateGradients(task, fns, clip_norm,
    noise_multiplier, expected_batch), as experiment.build_experiment builds it (ghost norms for
    the embedding tables);
  opacus: benchmarks/opacus_peer.py, the same model in PyTorch made private by Opacus
    (PrivacyEngine.make_private, Poisson sampling, the same clip norm and noise multiplier, Adam),
    in a subprocess of its own with torch.set_num_threads(--threads), grad-sample mode
    --grad_sample_mode (ghost clipping by default: see that file);
  bigjax_shipped (with --shipped, where the config has row-sparse tables): the config's own
    non-private recipe (lazy Adam on the tables' rows) on a batch of the expected size, unpadded:
    what a non-private run of the shipped config does. Context only; no goal refers to it.

The shape: the config's model (embed_dim, hidden layers, bigrams, dropout, word dropout) with the
vocabulary of the public tokenizer DP-SGD needs (--tokenizer_file, MiniLM's 30,522 WordPiece
tokens by default), train.batch_size = --batch_size as the expected Poisson batch, and the width of
the config's longest length bucket (data.max_len: nearly every Poisson sample holds a row that
long, bigjax.privacy.sampling). bigjax's batch has the padded rows bigjax.privacy.make_plan gives
the run (the training set's size, the config's epochs, overflow 1e-3): --batch_size real rows, the
rest filler (weight 0), as a private run's steps are; both bigjax sides take this batch. Opacus
takes --batch_size rows, unpadded (its Poisson batches are as large as drawn; the expected one is
--batch_size). examples/s counts real examples only, the same --batch_size a step on every side.

The token ids are synthetic: full rows of uniform random ids in [1, vocab) (numpy's generator,
the same rows on both sides), labels random; a step's cost does not depend on which ids they are.

Goals (the issue): bigjax_dp / opacus examples/s >= 3; bigjax_dp step / bigjax_nonprivate step
<= 2. Both are printed, with the CPU (/proc/cpuinfo) and the versions, and written as JSON.
"""
import dataclasses
import os
import statistics
import sys
import tempfile
import time

from absl import app
from absl import flags
from absl import logging
import jax
import numpy as np

from benchmarks.step_race import cpu_model
from benchmarks.step_race import pin_cpus, timed_steps
from benchmarks.step_race import ROOT
from benchmarks.step_race import run_peer
from benchmarks.step_race import versions
from benchmarks.step_race import write
from bigjax import experiment
from bigjax import huggingface
from bigjax import logs
from bigjax import privacy
from bigjax.data import batching
from bigjax.models import registry
from bigjax.privacy import clipping
from bigjax.tasks.classification import Classification
from bigjax.train import parallel
from bigjax.train import step as step_lib
from bigjax.types import Batch
from experiments import cli

PEER = os.path.join(ROOT, 'benchmarks', 'opacus_peer.py')
NUM_CLASSES = 2
PUBLIC_TOKENIZER = os.path.normpath(os.path.join(ROOT, '..', 'shared', 'models', 'all-MiniLM-L6-v2'))


@dataclasses.dataclass(frozen=True)
class Shape:
  config: str  # The config module under experiments/configs.
  train_examples: int  # The training set Poisson sampling draws from: it sets the padded rows.


# SST-2's train split; IMDB's 25,000 training reviews less the 10 % dev carved from them.
# dp_*: the models the private runs train (docs/results/privacy.md), at their batch of 1,024.
# dp_minilm: dp_minilm_sst2.py's MiniLM (random weights of the pretrained folder's architecture),
# the parameters its optim.param_groups freezes left out; no Opacus side (the peer is the MLP).
SHAPES = {'sst2': Shape('mlp_sst2', 6920), 'imdb': Shape('mlp_imdb', 22500),
          'dp_sst2': Shape('dp_mlp_sst2', 6920), 'dp_imdb': Shape('dp_mlp_imdb', 22500),
          'dp_minilm': Shape('dp_minilm_sst2', 6920)}
SIDES = ('bigjax_nonprivate', 'bigjax_dp')
GOALS = {'dp_vs_opacus': 3.0, 'dp_step_cost': 2.0}

_SHAPE = flags.DEFINE_enum('shape', 'sst2', list(SHAPES), "Whose MLP config and training-set size: sst2 "
                           "(mlp_sst2.py, 6,920 sentences) or imdb (mlp_imdb.py, 22,500 reviews).")
_TINY = flags.DEFINE_bool('tiny', False, "The config's toy sizes (its ':tiny' variant): a smoke test.")
_TOKENIZER = flags.DEFINE_string('tokenizer_file', PUBLIC_TOKENIZER, 'The public tokenizer (data.tokenizer_file): '
                                 'its vocabulary sizes the embedding table.')
_VOCAB = flags.DEFINE_integer('vocab_size', 0, "0: the tokenizer's.", lower_bound=0)
_BATCH = flags.DEFINE_integer('batch_size', 256, 'The expected Poisson batch (train.batch_size): real rows a step.',
                              lower_bound=1)
_WIDTH = flags.DEFINE_integer('width', 0, "Tokens per row; 0: the config's longest bucket.", lower_bound=0)
_ROWS = flags.DEFINE_integer('rows', 0, "bigjax's padded rows; 0: bigjax.privacy.make_plan's for the run "
                             '(--rows=--batch_size: no filler rows).', lower_bound=0)
_EXAMPLES = flags.DEFINE_integer('train_examples', 0, "The training set's size; 0: the shape's.", lower_bound=0)
_CLIP = flags.DEFINE_float('clip_norm', 1.0, 'dp.clip_norm, on both sides.')
_NOISE = flags.DEFINE_float('noise_multiplier', 1.0, 'dp.noise_multiplier, on both sides.')
_ACCUM = flags.DEFINE_integer('accum_steps', 0, "bigjax's micro-batches (train.accum_steps; they bound the "
                              "per-example gradients' memory); 0: the config's.", lower_bound=0)
_MODE = flags.DEFINE_enum('grad_sample_mode', 'ghost', ['ghost', 'hooks', 'functorch'], "Opacus's grad-sample "
                          'mode (benchmarks/opacus_peer.py).')
_SHIPPED = flags.DEFINE_bool('shipped', True, "Also time the config's own non-private step (row-sparse tables) "
                             'where it has one.')
_GROUPS = flags.DEFINE_string('param_groups', None, "optim.param_groups for both bigjax sides (REGEX=freeze leaves "
                              "parameters out); default: the config's.")
_ROUNDS = flags.DEFINE_integer('rounds', 3, 'Alternating rounds.', lower_bound=1)
_STEPS = flags.DEFINE_integer('steps', 10, 'Timed steps per run.', lower_bound=1)
_WARMUP = flags.DEFINE_integer('warmup_steps', 3, 'Untimed steps before them in each run (bigjax compiles before '
                               'its first round).', lower_bound=0)
_THREADS = flags.DEFINE_integer('threads', 2, "torch's threads; a process that may use more CPUs is pinned to this "
                                'many first (the peer inherits it), so XLA has as many.', lower_bound=1)
_PEER_PYTHON = flags.DEFINE_string('peer_python', sys.executable, 'Python with torch and opacus installed.')
_JSON_OUT = flags.DEFINE_string('json_out', '', 'The figures, as JSON; default runs/dp_speed_<shape>.json.')
_MARKDOWN_OUT = flags.DEFINE_string('markdown_out', '', 'The summary, as markdown; default runs/dp_speed_<shape>.md.')


@dataclasses.dataclass(frozen=True)
class Setup:
  """What every side trains: the model's config, the vocabulary, the batch, the privacy."""
  name: str  # The config file it comes from.
  config: object  # ml_collections.ConfigDict: model.*, optim.*, train.accum_steps
  vocab_size: int
  batch_size: int  # Real rows a step (the expected Poisson batch).
  width: int
  rows: int  # bigjax's padded rows.
  train_examples: int
  clip_norm: float
  noise_multiplier: float


def load_config(shape: str, tiny: bool = False):
  module = __import__(f'experiments.configs.{SHAPES[shape].config}', fromlist=['get_config'])
  return module.get_config('tiny' if tiny else '')


def make_setup(name: str, config, *, vocab_size: int, batch_size: int, train_examples: int, width: int = 0,
               rows: int = 0, clip_norm: float = 1.0, noise_multiplier: float = 1.0, accum_steps: int = 0) -> Setup:
  """The shape of the race: the longest bucket's width, and the padded rows of the run's plan."""
  config.train.batch_size = batch_size
  if accum_steps:
    config.train.accum_steps = accum_steps
  config.dp.update(enabled=True, clip_norm=clip_norm, noise_multiplier=noise_multiplier, target_epsilon=0.0)
  d = config.data
  width = width or batching.bucket_boundaries(d.max_len, d.smallest_bucket, d.bucket_growth)[-1]
  if not rows:  # As experiment._privacy_plan sizes a private run's batches.
    steps_per_epoch = max(1, round(train_examples / batch_size))
    total_steps = config.train.steps or config.train.epochs * steps_per_epoch
    plan = privacy.make_plan(config.dp, train_examples, batch_size, total_steps, config.train.accum_steps)
    rows = plan.mechanism.max_rows
  if rows < batch_size or rows % config.train.accum_steps:
    raise ValueError(f'rows={rows}: at least batch_size={batch_size}, and a multiple of accum_steps='
                     f'{config.train.accum_steps}')
  return Setup(name, config, vocab_size, batch_size, width, rows, train_examples, clip_norm, noise_multiplier)


def real_rows(setup: Setup, seed: int):
  """(ids, labels) of the real rows: what benchmarks/opacus_peer.py's fixed_batch draws."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(1, setup.vocab_size, (setup.batch_size, setup.width)).astype(np.int64)
  labels = rng.integers(0, NUM_CLASSES, setup.batch_size).astype(np.int64)
  return ids, labels


def make_batch(setup: Setup, rows: int, seed: int) -> Batch:
  """The real rows, full, then filler rows (ids 0, length 0, weight 0) up to `rows`."""
  ids, labels = real_rows(setup, seed)
  n = setup.batch_size
  token_ids = np.zeros((rows, setup.width), np.int32)
  token_ids[:n] = ids
  lengths, weights, padded_labels = np.zeros(rows, np.int32), np.zeros(rows, np.float32), np.zeros(rows, np.int32)
  lengths[:n], weights[:n], padded_labels[:n] = setup.width, 1.0, labels
  return Batch(token_ids=token_ids, lengths=lengths, labels=padded_labels, weights=weights)


class Stepper:
  """One bigjax side: a driver's jitted train step on one fixed batch."""

  def __init__(self, setup: Setup, *, private: bool, shipped_optimizer: bool = False, seed: int = 0):
    config = setup.config
    fns = registry.model_fns(experiment.build_model(config.model, setup.vocab_size, NUM_CLASSES))
    task = Classification(NUM_CLASSES)
    steps = config.train.epochs * max(1, round(setup.train_examples / setup.batch_size))
    optimizer_config = config.copy_and_resolve_references()
    if not shipped_optimizer:  # Dense updates: what DP-SGD needs (noise reaches every row).
      optimizer_config.optim.sparse_embeddings = ''
    tx = experiment.build_optimizer(optimizer_config, steps, max(1, round(setup.train_examples / setup.batch_size)))
    frozen = experiment.frozen_mask(config)  # As the trainer's (None: all train).
    gradients = None
    if private:
      gradients = clipping.PrivateGradients(task, fns, setup.clip_norm, setup.noise_multiplier,
                                            float(setup.batch_size), frozen=frozen)
      self.ghost_tables = gradients._tables(  # pylint: disable=protected-access
          fns.init(jax.random.PRNGKey(0), np.zeros((1, 4), np.int32), np.ones(1, np.int32)),
          np.zeros((1, 4), np.int32)) is not None
    accum = config.train.accum_steps if private or not shipped_optimizer else 1
    self.driver = parallel.task_driver('none', task, fns, tx, accum, private=gradients, frozen=frozen)
    self.batch = make_batch(setup, setup.batch_size if shipped_optimizer else setup.rows, seed)
    state = step_lib.create_train_state(fns, tx, jax.random.PRNGKey(seed), self.batch)
    self.parameters = sum(int(np.size(x)) for x in jax.tree.leaves(state.params))
    self.state = self.driver.put_state(state)
    self.accum_steps = accum

  def compile(self) -> float:
    start = time.perf_counter()
    self.state, _ = self.driver.train_step(self.state, self.batch)
    jax.block_until_ready(self.state)
    return time.perf_counter() - start

  def run(self, warmup_steps: int, steps: int) -> dict:
    """Median step time over `steps` steps (each waited for) after `warmup_steps` untimed ones."""
    self.state, times, last = timed_steps(self.driver, self.state, self.batch, warmup_steps, steps)
    step_s = statistics.median(times)
    examples = int(last['examples'])  # The library's own count of the real rows it trained on.
    report = {'examples_per_s': examples / step_s, 'tokens_per_s': int(last['tokens']) / step_s, 'step_s': step_s,
              'step_times_s': times, 'examples_per_step': examples, 'tokens_per_step': int(last['tokens']),
              'rows_per_step': int(self.batch.weights.shape[0]), 'parameters': self.parameters,
              'loss': float(last['loss']) / max(examples, 1), 'nonfinite_steps': float(last['nonfinite_steps'])}
    if 'clipped' in last:
      report['clipped_fraction'] = float(last['clipped']) / max(examples, 1)
    return report


def peer_command(python: str, setup: Setup, *, grad_sample_mode: str, steps: int, warmup_steps: int, threads: int,
                 seed: int, json_out: str) -> list[str]:
  """benchmarks/opacus_peer.py with bigjax's model, batch and privacy."""
  m = setup.config.model
  own = m.mlp
  return [python, PEER, f'--vocab_size={setup.vocab_size}', f'--num_classes={NUM_CLASSES}',
          f'--embed_dim={m.embed_dim}', f'--hidden_dim={own.hidden_dim}', f'--num_layers={own.num_layers}',
          f'--dropout={m.dropout}', f'--word_dropout={own.word_dropout}', f'--bigram_buckets={own.bigram_buckets}',
          f'--embed_init_std={own.embed_init_std}', f'--batch_size={setup.batch_size}', f'--width={setup.width}',
          f'--train_examples={setup.train_examples}', f'--clip_norm={setup.clip_norm}',
          f'--noise_multiplier={setup.noise_multiplier}', f'--lr={setup.config.optim.learning_rate}',
          f'--grad_sample_mode={grad_sample_mode}', f'--steps={steps}', f'--warmup_steps={warmup_steps}',
          f'--threads={threads}', f'--seed={seed}', f'--json_out={json_out}']


def race(setup: Setup, *, peer_python: str, rounds: int, steps: int, warmup_steps: int, threads: int,
         grad_sample_mode: str = 'ghost', shipped: bool = True, seed: int = 0) -> dict:
  """Runs the race; returns its figures (what --json_out holds)."""
  c = setup.config
  with_peer = c.model.name == 'mlp' and c.model.mlp.activation == 'relu'  # What the Opacus peer builds.
  steppers = {'bigjax_nonprivate': Stepper(setup, private=False, seed=seed),
              'bigjax_dp': Stepper(setup, private=True, seed=seed)}
  if shipped and c.optim.sparse_embeddings:
    steppers['bigjax_shipped'] = Stepper(setup, private=False, shipped_optimizer=True, seed=seed)
  compile_s = {side: stepper.compile() for side, stepper in steppers.items()}  # Before any timing.
  runs = {side: [] for side in (*steppers, *(['opacus'] if with_peer else []))}
  with tempfile.TemporaryDirectory() as tmp:
    for i in range(rounds):
      for side, stepper in steppers.items():
        runs[side].append(stepper.run(warmup_steps, steps))
      if with_peer:
        command = peer_command(peer_python, setup, grad_sample_mode=grad_sample_mode, steps=steps,
                               warmup_steps=warmup_steps, threads=threads, seed=seed,
                               json_out=os.path.join(tmp, f'opacus_{i}.json'))
        runs['opacus'].append(run_peer(command, {}))
      print(f'round {i + 1}/{rounds}: ' + ', '.join(f'{side} {r[-1]["examples_per_s"]:.0f} examples/s '
                                                     f'({1000 * r[-1]["step_s"]:.1f} ms)' for side, r in runs.items()),
            flush=True)
  parameters = {side: r[0]['parameters'] for side, r in runs.items()}
  examples = {side: r[0]['examples_per_step'] for side, r in runs.items()}
  if len(set(parameters.values())) != 1 or len(set(examples.values())) != 1:
    raise RuntimeError(f'the sides do not do the same work: parameters {parameters}, real examples a step {examples}')
  median = {side: {'examples_per_s': statistics.median(x['examples_per_s'] for x in r),
                   'step_s': statistics.median(x['step_s'] for x in r)} for side, r in runs.items()}
  ratios = {'dp_step_cost': median['bigjax_dp']['step_s'] / median['bigjax_nonprivate']['step_s']}
  if with_peer:
    ratios['dp_vs_opacus'] = median['bigjax_dp']['examples_per_s'] / median['opacus']['examples_per_s']
  if 'bigjax_shipped' in median:
    ratios['dp_step_cost_vs_shipped'] = median['bigjax_dp']['step_s'] / median['bigjax_shipped']['step_s']
  m = c.model
  model = {'name': m.name, 'embed_dim': m.embed_dim, 'dropout': m.dropout, **registry.own_section(m.to_dict())}
  configuration = {
      'config': setup.name, 'model': model, 'vocab_size': setup.vocab_size, 'optimizer': c.optim.name,
      'learning_rate': c.optim.learning_rate, 'param_groups': c.optim.get('param_groups', '') or None,
      'expected_batch': setup.batch_size, 'width': setup.width, 'bigjax_padded_rows': setup.rows,
      'train_examples': setup.train_examples, 'sampling_rate': setup.batch_size / setup.train_examples,
      'clip_norm': setup.clip_norm, 'noise_multiplier': setup.noise_multiplier,
      'accum_steps': steppers['bigjax_dp'].accum_steps, 'bigjax_ghost_tables': steppers['bigjax_dp'].ghost_tables,
      'shipped_sparse_embeddings': c.optim.sparse_embeddings or None,
      'steps': steps, 'warmup_steps': warmup_steps, 'rounds': rounds}
  extra_versions = {}
  if with_peer:
    peer = runs['opacus'][0]
    extra_versions = {'torch': peer['torch'], 'opacus': peer['opacus']}
    configuration.update({
        'opacus_rows': setup.batch_size, 'opacus_grad_sample_mode': peer['grad_sample_mode'],
        'opacus_module': peer['module'], 'opacus_optimizer': peer['optimizer'],
        'opacus_sample_rate': peer['sample_rate'], 'opacus_expected_batch': peer['expected_batch'],
        'opacus_poisson_batch_rows': peer['poisson_batch_rows']})
  return {
      'cpu': cpu_model(), 'cpus': len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count(),
      'threads': threads,
      'versions': dict(versions(), **extra_versions),
      'data': 'synthetic: full rows of uniform random token ids in [1, vocab) and random labels, the same real rows '
              'on every side (a step costs the same whatever the ids)',
      'configuration': configuration,
      'same_work': {'parameters': parameters['bigjax_dp'], 'examples_per_step': examples['bigjax_dp']},
      'compile_s': compile_s, 'runs': runs, 'median': median, 'ratios': ratios, 'goals': GOALS,
      'goals_met': {k: (ratios[k] >= v if k == 'dp_vs_opacus' else ratios[k] <= v)
                    for k, v in GOALS.items() if k in ratios},
  }


def markdown(r: dict) -> str:
  c, ratios, met = r['configuration'], r['ratios'], r['goals_met']
  lines = [
      '# DP-SGD train step: bigjax (private and not)' + (' against Opacus' if 'dp_vs_opacus' in ratios else ''), '',
      f'CPU: {r["cpu"]}, {r["cpus"]} CPUs used, torch threads {r["threads"]}.',
      'Versions: ' + ', '.join(f'{k} {v}' for k, v in r['versions'].items()) + '.',
      f'Model: {c["config"]}\'s, vocabulary {c["vocab_size"]:,}: '
      + ', '.join(f'{k} {v}' for k, v in c['model'].items())
      + f'; {c["optimizer"]} lr {c["learning_rate"]}, param_groups {c["param_groups"]}. '
      f'{r["same_work"]["parameters"]:,} parameters on every side.',
      f'Batch: {c["expected_batch"]} real examples x {c["width"]} tokens a step on every side; bigjax pads to '
      f'{c["bigjax_padded_rows"]} rows (its Poisson batches\' fixed shape for {c["train_examples"]:,} training '
      f'examples). Clip {c["clip_norm"]}, noise multiplier {c["noise_multiplier"]}; bigjax accum_steps '
      f'{c["accum_steps"]}, ghost norms for the tables: {c["bigjax_ghost_tables"]}'
      + (f'; Opacus takes the {c["opacus_rows"]} rows unpadded, grad_sample_mode {c["opacus_grad_sample_mode"]} '
         f'({c["opacus_module"]}, {c["opacus_optimizer"]}).' if 'opacus_rows' in c else '.'),
      f'Data: {r["data"]}.',
      f'Medians of {c["rounds"]} alternating rounds, each run the median of {c["steps"]} steps after '
      f'{c["warmup_steps"]} untimed ones.', '',
      '| side | rows/step | real examples/step | step ms | examples/s |', '| --- | ---: | ---: | ---: | ---: |']
  for side, m in r['median'].items():
    first = r['runs'][side][0]
    lines.append(f'| {side} | {first.get("rows_per_step", first["examples_per_step"])} | {first["examples_per_step"]} '
                 f'| {1000 * m["step_s"]:.1f} | {m["examples_per_s"]:,.0f} |')
  lines.append('')
  if 'dp_vs_opacus' in ratios:
    lines.append(f'bigjax_dp / opacus examples/s: **{ratios["dp_vs_opacus"]:.2f}x** (goal >= '
                 f'{r["goals"]["dp_vs_opacus"]:g}x: {"met" if met["dp_vs_opacus"] else "not met"}).')
  lines.append(f'bigjax_dp step / bigjax_nonprivate step: **{ratios["dp_step_cost"]:.2f}x** (goal <= '
               f'{r["goals"]["dp_step_cost"]:g}x: {"met" if met["dp_step_cost"] else "not met"}).')
  if 'dp_step_cost_vs_shipped' in ratios:
    lines.append(f'bigjax_dp step / the shipped non-private step (row-sparse tables, {c["expected_batch"]} rows): '
                 f'{ratios["dp_step_cost_vs_shipped"]:.2f}x (context).')
  return '\n'.join(lines + [''])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  pin_cpus(_THREADS.value)
  cli.setup_host()  # As the trainer: freed host memory kept in the process.
  logs.quiet_library_logs()
  logging.set_verbosity(logging.WARNING)
  shape = _SHAPE.value
  config = huggingface.configure(load_config(shape, _TINY.value))  # A pretrained folder's sizes, if it names one.
  config.data.tokenizer_file = _TOKENIZER.value
  if _GROUPS.value is not None:
    config.optim.param_groups = _GROUPS.value
  vocab = _VOCAB.value
  if not vocab:
    from bigjax.data.tokenizer import from_file  # pylint: disable=import-outside-toplevel
    vocab = from_file(_TOKENIZER.value).vocab_size
  name = f'experiments/configs/{SHAPES[shape].config}.py' + (':tiny' if _TINY.value else '')
  setup = make_setup(name, config, vocab_size=vocab, batch_size=_BATCH.value, width=_WIDTH.value, rows=_ROWS.value,
                     train_examples=_EXAMPLES.value or SHAPES[shape].train_examples, clip_norm=_CLIP.value,
                     noise_multiplier=_NOISE.value, accum_steps=_ACCUM.value)
  results = race(setup, peer_python=_PEER_PYTHON.value, rounds=_ROUNDS.value, steps=_STEPS.value,
                 warmup_steps=_WARMUP.value, threads=_THREADS.value, grad_sample_mode=_MODE.value,
                 shipped=_SHIPPED.value)
  summary = markdown(results)
  print(summary)
  suffix = f'{shape}_tiny' if _TINY.value else shape
  write(results, summary, _JSON_OUT.value or os.path.join(ROOT, 'runs', f'dp_speed_{suffix}.json'),
        _MARKDOWN_OUT.value or os.path.join(ROOT, 'runs', f'dp_speed_{suffix}.md'))


if __name__ == '__main__':
  app.run(main)
