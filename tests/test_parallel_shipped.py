"""A shipped config at full size under pmap and mesh on 8 fake devices, through the real entry point.

Why this file exists: `--config.parallel=pmap` with experiments/configs/mlp_sst2.py
failed on the 2-core machine while every unit test passed, because those use toy models
and call the drivers directly:
- XLA:CPU deadlocked (exit 134, "Termination timeout for `all reduce ...` of 40 seconds
  exceeded ... only 7 of them arrived"): the loop added each step's sums on device, 17
  programs on all 8 devices a step, and a host that far ahead of the devices starves a
  step's all-reduce of threads (bigjax/train/parallel.py, _Pacer);
- its final evaluation refused the restored best checkpoint (a pmap sharding mismatch).
Each case trains the shipped config at its real size for a few steps, evaluates dev,
saves, restores the best checkpoint and evaluates dev and test, in a subprocess as a user
runs it, and must exit 0 with finite losses. (lstm_sst2.py passes the same way, but takes
45-80 s a case here, mostly compiling its 12 bucket widths: not run by default.)
"""
import json
import math
import os
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 6
TIMEOUT_S = 240  # A hang fails the case instead of stalling the suite.


def run_entry_point(config: str, mode: str, workdir) -> subprocess.CompletedProcess:
  # 8 fake devices and no other XLA flag of the caller's: the user's command.
  env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS='--xla_force_host_platform_device_count=8')
  args = [f'--config=experiments/configs/{config}.py', f'--workdir={workdir}', f'--config.parallel={mode}',
          f'--config.train.steps={STEPS}', '--config.checkpoint.every_steps=1000', '--config.model.dropout=0.0',
          '--config.seed=1']
  return subprocess.run([sys.executable, '-m', 'experiments.train', *args], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=TIMEOUT_S)


# The mesh mode's run is in the slow tier: tests/test_parallel.py checks that the mesh driver's
# steps equal one device's; the pmap run keeps the shipped config end to end in the default tier.
@pytest.mark.parametrize('mode', ['pmap', pytest.param('mesh', marks=pytest.mark.slow)])
def test_shipped_mlp_sst2_trains_saves_restores_and_tests(shared_data, tmp_path, mode):
  assert (shared_data / 'sst2').is_dir(), f'{shared_data}/sst2 is missing'
  start = time.perf_counter()
  done = run_entry_point('mlp_sst2', mode, tmp_path / 'run')
  seconds = time.perf_counter() - start
  assert done.returncode == 0, f'exit {done.returncode} after {seconds:.0f} s:\n{done.stderr[-4000:]}'
  results = json.loads((tmp_path / 'run' / 'results.json').read_text())
  assert results['step'] == results['best_step'] == STEPS
  assert math.isfinite(results['train']['loss'])
  for split in ('dev', 'test'):
    assert math.isfinite(results[split]['loss']) and 0.0 <= results[split]['accuracy'] <= 1.0
  records = [json.loads(line) for line in (tmp_path / 'run' / 'metrics.jsonl').read_text().splitlines()]
  train = [r for r in records if r['kind'] == 'train']
  assert train and all(math.isfinite(r['loss']) for r in train), records
