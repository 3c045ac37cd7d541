"""keep_freed_memory: XLA:CPU's per-step temporaries are reused, not faulted in again."""
import os
import subprocess
import sys

import pytest

from bigjax import hostmem

# 12 LSTM train steps (SST-2 sizes) over three alternating batch widths, as bucketing
# gives them; prints the minor page faults (fresh pages touched) of those steps.
_PROGRAM = """
import resource, sys
from bigjax import hostmem
if sys.argv[1] != 'default':
  assert hostmem.keep_freed_memory(one_arena=sys.argv[1] == 'keep')
import jax, numpy as np, optax
from bigjax.models import registry
from bigjax.tasks.classification import Classification
from bigjax.train import parallel, step as step_lib
from bigjax.types import Batch

fns = registry.model_fns(registry.build_model('lstm', vocab_size=14830, num_classes=2))
tx = optax.adam(1e-3)
driver = parallel.task_driver('none', Classification(2), fns, tx)
rng = np.random.default_rng(0)
batches = [Batch(rng.integers(1, 14830, (64, w)).astype(np.int32), np.full(64, w, np.int32),
                 rng.integers(0, 2, 64).astype(np.int32), np.ones(64, np.float32)) for w in (16, 32, 64)]
state = driver.put_state(step_lib.create_train_state(fns, tx, jax.random.PRNGKey(0), batches[0]))
for batch in batches:  # Compile.
  state, _ = driver.train_step(state, batch)
jax.block_until_ready(state)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for i in range(12):
  state, _ = driver.train_step(state, batches[i % 3])
jax.block_until_ready(state)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(mode: str, env=None) -> int:
  out = subprocess.run([sys.executable, '-c', _PROGRAM, mode], check=True, capture_output=True, text=True,
                       env=None if env is None else dict(os.environ, **env))
  return int(out.stdout)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc malloc settings: Linux only')
def test_lstm_steps_fault_in_less_fresh_memory():
  default, kept = page_faults('default'), page_faults('keep')
  # Measured on the 2-core VM: 209k and 104k (Intel Xeon, many arenas); 193k and 14-24k (AMD EPYC Zen 3).
  assert kept < 0.7 * default, (default, kept)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc malloc settings: Linux only')
def test_environment_form_gives_a_program_the_same_setting():
  """What the PyTorch peers get in a like-for-like comparison: no mallopt call, the env only."""
  default, by_env = page_faults('default'), page_faults('default', hostmem.KEEP_FREED_MEMORY_ENV)
  assert by_env < 0.7 * default, (default, by_env)


# Slow tier: a measurement of the allocator, as its two siblings.
@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc malloc settings: Linux only')
def test_one_arena_keeps_the_worker_threads_temporaries():
  """mmap off and a high trim threshold alone do not keep the temporaries of XLA:CPU's worker
  threads, each in a glibc arena of its own: every step faults them in again."""
  many_arenas, one_arena = page_faults('keep_many_arenas'), page_faults('keep')
  # Measured on the 2-core VM (AMD EPYC Zen 3): 153k and 14-24k.
  assert one_arena < 0.5 * many_arenas, (many_arenas, one_arena)
