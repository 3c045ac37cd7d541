"""The pieces of a train-step race between bigjax and a PyTorch peer in a subprocess.

benchmarks.transformer_speed (a BERT-style encoder from scratch) and benchmarks.finetune_speed (a
pretrained BERT-family model's architecture) both race with them: the encoder's sizes (Setup),
bigjax's config and train step as its trainer builds them (bigjax_config, BigjaxStep), the batch
of full rows both sides draw (race_batch), running the peer (run_peer), the checks and medians
over rounds (same_work, medians), the machine's description (cpu_model, versions, bf16_wanted,
pin_cpus) and the output files (write). No flags are defined here, so both import it.
"""
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import time
from typing import Optional

from absl import logging
import jax
import numpy as np

from bigjax import experiment
from bigjax import hostcpu
from bigjax import hostmem
from bigjax.config import checks
from bigjax.models import registry
from bigjax.tasks.classification import Classification
from bigjax.train import parallel
from bigjax.train import step as step_lib
from bigjax.types import Batch
from experiments.configs import transformer_sst2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The torch runs: its default allocator, and bigjax's setting through the environment (like for like).
PEER_SETTINGS = {'torch_same_allocator': hostmem.KEEP_FREED_MEMORY_ENV, 'torch': {}}
HEADLINE_PEER = 'torch_same_allocator'
NUM_CLASSES = 2


@dataclasses.dataclass(frozen=True)
class Setup:
  """What both sides train: the encoder's sizes and the batch."""
  hidden: int
  layers: int
  heads: int
  intermediate: int
  vocab_size: int
  batch_size: int
  seq_len: int = 128


def bigjax_config(setup: Setup, dtype: str, total_steps: int):
  """transformer_sst2.py's config at the race's sizes: pooling and positions as BERT's."""
  c = transformer_sst2.get_config()
  c.model.embed_dim = setup.hidden
  t = c.model.transformer
  t.num_layers, t.num_heads, t.intermediate_dim = setup.layers, setup.heads, setup.intermediate
  t.max_positions = setup.seq_len
  t.pooling, t.pooler = 'cls', True  # BertForSequenceClassification's: the first position, then the pooler.
  t.dtype = dtype
  c.data.max_len = setup.seq_len
  c.train.batch_size = setup.batch_size
  c.train.steps = total_steps
  c.optim.warmup_steps = max(total_steps // 10, 1)  # A tenth of the run, as the config's.
  c.parallel = 'none'  # parallel.JitDriver: one device, as the CPU trainer runs.
  checks.check_config(c)
  return c


def race_batch(setup: Setup, seed: int) -> Batch:
  """Full rows of random ids (never 0, the padding id), drawn as the peer draws them."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(1, setup.vocab_size, (setup.batch_size, setup.seq_len)).astype(np.int32)
  labels = rng.integers(0, NUM_CLASSES, setup.batch_size).astype(np.int32)
  return Batch(token_ids=ids, lengths=np.full(setup.batch_size, setup.seq_len, np.int32), labels=labels,
               weights=np.ones(setup.batch_size, np.float32))


def timed_steps(driver, state, batch: Batch, warmup_steps: int, steps: int):
  """(state, the seconds of each of `steps` steps, each waited for, after `warmup_steps` untimed
  ones, the last step's sums on the host)."""
  for _ in range(warmup_steps):
    state, sums = driver.train_step(state, batch)
  jax.block_until_ready(state)
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    state, sums = driver.train_step(state, batch)
    jax.block_until_ready(state)
    times.append(time.perf_counter() - start)
  return state, times, driver.fetch([sums])[0]


class BigjaxStep:
  """bigjax's train step for the config, as build_experiment assembles it (no data, one fixed batch)."""

  def __init__(self, config, vocab_size: int, batch: Batch):
    module = experiment.build_model(config.model, vocab_size, NUM_CLASSES)
    fns = registry.model_fns(module)
    task = Classification(NUM_CLASSES)
    tx = experiment.build_optimizer(config, config.train.steps, config.train.steps)
    self.driver = parallel.task_driver(config.parallel, task, fns, tx, config.train.accum_steps)
    state = step_lib.create_train_state(fns, tx, jax.random.PRNGKey(config.seed), batch)
    self.parameters = sum(int(np.size(x)) for x in jax.tree.leaves(state.params))
    self.state = self.driver.put_state(state)
    self.batch = batch

  def compile(self) -> None:
    self.state, _ = self.driver.train_step(self.state, self.batch)
    jax.block_until_ready(self.state)

  def run(self, warmup_steps: int, steps: int) -> dict:
    """Median step time over `steps` steps (each waited for) after `warmup_steps` untimed ones."""
    self.state, times, last = timed_steps(self.driver, self.state, self.batch, warmup_steps, steps)
    step_s = statistics.median(times)
    tokens = int(last['tokens'])  # The library's own count of the real tokens it trained on.
    return {'tokens_per_s': tokens / step_s, 'step_s': step_s, 'step_times_s': times, 'tokens_per_step': tokens,
            'examples_per_step': int(last['examples']), 'loss': float(last['loss']) / max(float(last['examples']), 1),
            'parameters': self.parameters}


def run_peer(command: list[str], extra_env: dict, cwd: Optional[str] = None) -> dict:
  """The peer's report (the file its --json_out names); its output is shown only if it fails."""
  out = next(a.split('=', 1)[1] for a in command if a.startswith('--json_out='))
  done = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ, **extra_env), cwd=cwd,
                        check=False)
  if done.returncode:
    raise RuntimeError(f'the PyTorch peer failed (exit {done.returncode}):\n{done.stderr[-3000:]}')
  with open(out, encoding='utf-8') as f:
    return json.load(f)


def cpu_model(cpuinfo_path: str = '/proc/cpuinfo') -> str:
  """The CPU's 'model name', with its family and model numbers (a VM's name can be just 'AMD EPYC')."""
  fields = {}
  try:
    with open(cpuinfo_path, encoding='utf-8', errors='replace') as f:
      for line in f:
        key, sep, value = line.partition(':')
        if not sep and fields:
          break  # The first processor's block is enough.
        if sep:
          fields.setdefault(key.strip(), value.strip())
  except OSError:
    return platform.processor() or 'unknown'
  name = fields.get('model name', platform.processor() or 'unknown')
  if 'cpu family' in fields and 'model' in fields:
    name += f' (family {fields["cpu family"]}, model {fields["model"]})'
  return name


def versions() -> dict:
  import flax  # pylint: disable=import-outside-toplevel
  import jaxlib  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel
  commit = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=ROOT, capture_output=True, text=True,
                          check=False).stdout.strip()
  return {'python': platform.python_version(), 'jax': jax.__version__, 'jaxlib': jaxlib.__version__,
          'flax': flax.__version__, 'optax': optax.__version__, 'bigjax_commit': commit or None}


def bf16_wanted(choice: str) -> bool:
  return choice == 'yes' or (choice == 'auto' and hostcpu.native_bf16_matmuls() is True)


def same_work(runs: dict) -> dict:
  """side -> its parameters and tokens a step, which must be the same on every side (or RuntimeError)."""
  work = {side: {'parameters': r[0]['parameters'], 'tokens_per_step': r[0]['tokens_per_step']}
          for side, r in runs.items()}
  if len({(w['parameters'], w['tokens_per_step']) for w in work.values()}) != 1:
    raise RuntimeError(f'the sides do not do the same work: {work}')
  return work


def medians(runs: dict) -> dict:
  """side -> the medians over rounds of its runs' tokens/s and step time."""
  return {side: {'tokens_per_s': statistics.median(x['tokens_per_s'] for x in r),
                 'step_s': statistics.median(x['step_s'] for x in r)} for side, r in runs.items()}


def pin_cpus(threads: int) -> None:
  """Keeps this process (and the peer it starts) to `threads` CPUs, before XLA sizes its thread pool."""
  if hasattr(os, 'sched_getaffinity'):
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) > threads:
      os.sched_setaffinity(0, cpus[:threads])
      logging.warning('pinned to CPUs %s: %d threads on each side', cpus[:threads], threads)


def write(results: dict, summary: str, json_out: Optional[str], markdown_out: Optional[str]) -> None:
  for path, text in ((json_out, json.dumps(results, indent=2)), (markdown_out, summary)):
    if path:
      os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
      with open(path, 'w', encoding='utf-8') as f:
        f.write(text + '\n')
