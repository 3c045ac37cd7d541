"""Multi-process jobs on 127.0.0.1 (gloo collectives) and checkpoints across device counts.

Each case runs the real entry point in subprocesses, as a launcher on a cluster would.
"""
import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

from test_reliability import flip_one_byte
from test_train import ROOT, write_corpus

TIMEOUT_S = 240


def tiny_args(data, workdir, steps, parallel='mesh'):
  return ['--config=experiments/configs/mlp_sst2.py', f'--workdir={workdir}', f'--config.data.path={data}',
          '--config.data.vocab_size=120', '--config.data.max_len=24', '--config.data.smallest_bucket=8',
          '--config.model.embed_dim=16', '--config.model.mlp.hidden_dim=16', '--config.model.dropout=0.0',
          '--config.optim.learning_rate=0.01', f'--config.train.steps={steps}', '--config.train.batch_size=12',
          '--config.checkpoint.every_steps=5', f'--config.parallel={parallel}']


def launch(args, cpu_devices, extra=()):
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}  # --cpu_devices decides instead.
  return subprocess.Popen([sys.executable, '-m', 'experiments.train', *args, f'--cpu_devices={cpu_devices}',
                           *extra], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process):
  try:
    _, err = process.communicate(timeout=TIMEOUT_S)
  except subprocess.TimeoutExpired:
    process.kill()
    raise
  assert process.returncode == 0, err[-3000:]
  return err


def results(workdir):
  return json.loads((workdir / 'results.json').read_text())


def start_steps(workdir):
  """The step each attempt started at (metrics.jsonl 'start' records)."""
  records = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
  return [r['start_step'] for r in records if r['kind'] == 'start']


def launch_pair(args):
  port = free_port()
  return [launch(args, cpu_devices=4, extra=[f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2',
                                              f'--process_id={i}']) for i in range(2)]


def assert_same_params(a, b):
  assert a['params_l2'].keys() == b['params_l2'].keys()
  np.testing.assert_allclose(list(a['params_l2'].values()), list(b['params_l2'].values()), rtol=1e-5)


def free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_two_processes_of_four_devices_equal_one_process_of_eight(tmp_path):
  data = write_corpus(tmp_path / 'data')
  single = launch(tiny_args(data, tmp_path / 'single', steps=12), cpu_devices=8)
  finish(single)
  for worker in launch_pair(tiny_args(data, tmp_path / 'multi', steps=12)):
    finish(worker)
  multi, one = results(tmp_path / 'multi'), results(tmp_path / 'single')
  assert multi['step'] == one['step'] == 12
  assert_same_params(multi, one)
  assert multi['test']['confusion'] == one['test']['confusion']
  assert multi['dev']['examples'] == one['dev']['examples'] == 40  # Every example once, none twice.
  config = json.loads((tmp_path / 'multi' / 'config.json').read_text())
  assert config['derived']['processes'] == 2 and config['derived']['global_batch_rows'] == 16


@pytest.mark.slow
def test_checkpoint_from_8_devices_continues_on_1_and_on_4_and_back_on_8(tmp_path):
  data = write_corpus(tmp_path / 'data')
  finish(launch(tiny_args(data, tmp_path / 'eight', steps=10), cpu_devices=8))
  for name in ('one', 'four', 'straight'):
    shutil.copytree(tmp_path / 'eight', tmp_path / name)
  runs = {'one': (1, 'none'), 'four': (4, 'mesh'), 'straight': (8, 'mesh')}
  for name, (devices, mode) in runs.items():
    finish(launch(tiny_args(data, tmp_path / name, steps=20, parallel=mode), cpu_devices=devices))
    assert start_steps(tmp_path / name) == [0, 10]
  straight = results(tmp_path / 'straight')
  assert straight['step'] == 20
  for name in ('one', 'four'):
    assert results(tmp_path / name)['step'] == 20
    assert_same_params(results(tmp_path / name), straight)
  # And the other way: the checkpoint written on 1 device continues on 8.
  finish(launch(tiny_args(data, tmp_path / 'one', steps=25), cpu_devices=8))
  assert start_steps(tmp_path / 'one')[-1] == 20 and results(tmp_path / 'one')['step'] == 25


@pytest.mark.slow
def test_two_processes_move_a_damaged_checkpoint_aside_and_resume_from_the_one_before(tmp_path):
  data = write_corpus(tmp_path / 'data')
  for worker in launch_pair(tiny_args(data, tmp_path / 'multi', steps=10)):
    finish(worker)
  flip_one_byte(str(tmp_path / 'multi' / 'checkpoints' / '10'))  # Restores silently wrong unless checked.
  for worker in launch_pair(tiny_args(data, tmp_path / 'multi', steps=20)):
    finish(worker)
  assert (tmp_path / 'multi' / 'checkpoints' / '10.damaged').is_dir()  # Set aside once, not deleted.
  assert start_steps(tmp_path / 'multi') == [0, 5]
  finish(launch(tiny_args(data, tmp_path / 'single', steps=20), cpu_devices=8))
  assert results(tmp_path / 'multi')['step'] == 20
  assert_same_params(results(tmp_path / 'multi'), results(tmp_path / 'single'))


# Slow tier: the default tier checks FSDP's exactness in one process (tests/test_sharding.py) and
# two processes against one with the state replicated (above).
@pytest.mark.slow
def test_two_processes_split_the_parameters_over_fsdp_and_equal_one_process_of_eight(tmp_path):
  # The bigram table and the dense kernels split over all 8 devices of both processes: saving,
  # the checkpoint digest and the results gather them across processes.
  data = write_corpus(tmp_path / 'data')
  fsdp = ['--config.mesh.data=1', '--config.mesh.fsdp=-1', '--config.mesh.fsdp_min_size=64',
          '--config.model.mlp.bigram_buckets=64']
  finish(launch(tiny_args(data, tmp_path / 'single', steps=10) + fsdp, cpu_devices=8))
  for worker in launch_pair(tiny_args(data, tmp_path / 'multi', steps=10) + fsdp):
    finish(worker)
  multi, one = results(tmp_path / 'multi'), results(tmp_path / 'single')
  assert multi['memory']['mesh'] == one['memory']['mesh'] == {'data': 1, 'fsdp': 8, 'tensor': 1}
  assert multi['memory']['split_params'] > 0
  assert_same_params(multi, one)
  assert multi['test']['confusion'] == one['test']['confusion']
