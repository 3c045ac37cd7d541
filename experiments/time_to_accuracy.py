"""Time to a test accuracy: bigjax's LSTM against the PyTorch peer LSTM, same recipe, one run.

  python -m experiments.time_to_accuracy --config=experiments/configs/lstm_imdb.py \
      --config.init.embeddings=runs/w2v_imdb --peer_python=/path/to/torch-venv/bin/python \
      --target=0.85 --workdir=runs/race_imdb

Same recipe on both sides:
- the same token sequences: the config's tokenizer, max_len and truncation, written out
  in the peer's 'LABEL tok tok ...' layout (words out of the vocabulary as <unk>), with
  the same train/dev/test split;
- with init.embeddings, the same starting embedding table (bigjax's initial table, rows
  named by token);
- embed and hidden sizes, dropout, Adam, learning rate, batch size, epochs, seed, and the
  forget-gate bias and gradient clipping through experiments/torch_peer_recipe.py.
Both evaluate dev and test after every epoch (bigjax with train.test_at_checkpoints).
bigjax's curve is read from its workdir's metrics.jsonl ('test_curve' records, beside the
'dev' ones), never from its log; the peer's from the JSON lines it prints. Each side's
clock runs from launching its process to the moment it reports a test accuracy >=
--target (bigjax: the 'time' of that record; the peer: when its line is read); it is
stopped there, or after --max_minutes. The peer runs with
bigjax's allocator setting (like for like; see experiments/compare_peers.py). Nothing
else may run on the machine meanwhile: on 2 cores any other process skews both clocks.
"""
import json
import os
import queue
import subprocess
import sys
import threading
import time
from typing import Optional

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from bigjax import hostmem
from bigjax import workdirs
from bigjax.errors import ConfigError
from experiments import common
from experiments import peers

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file (an LSTM classifier).', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Folder for the peer data, both runs and race.json.')
_PEER_PYTHON = flags.DEFINE_string('peer_python', sys.executable, 'Python that has torch installed.')
_PEERS = flags.DEFINE_string('peers_dir', os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'peers'),
                             'Folder of torch_lstm.py.')
_TARGET = flags.DEFINE_float('target', 0.85, 'Test accuracy to reach.')
_MAX_MINUTES = flags.DEFINE_float('max_minutes', 60.0, 'Stop a side that has not reached the target by then.')
_SIDES = flags.DEFINE_list('sides', ['bigjax', 'torch'], 'Which to run, in this order.')
_VERBOSE = flags.DEFINE_bool('verbose', False, 'Show tracebacks for user errors.')
SIDES = ('bigjax', 'torch')


def race(command: list[str], env: dict, log_path: str, bigjax_workdir: Optional[str] = None) -> dict:
  """Runs command until a test accuracy it reports reaches the target (or time runs out).

  With bigjax_workdir, the curve is that run's metrics.jsonl (peers.BigjaxCurve, polled);
  without, the JSON lines the command prints (the PyTorch peer's own output). Its output
  goes to log_path either way.
  """
  curve, reached = [], None
  points: queue.Queue = queue.Queue()
  with open(log_path, 'w', encoding='utf-8') as log:
    launched, start = time.time(), time.perf_counter()
    proc = subprocess.Popen(command, cwd=peers.ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1)

    def copy_output():  # Also keeps the pipe from filling up.
      for line in proc.stdout:
        log.write(line)
        point = None if bigjax_workdir else peers.parse_peer_curve(line)
        if point is not None:
          point['elapsed_s'] = round(time.perf_counter() - start, 1)
          points.put(point)

    reader = threading.Thread(target=copy_output, daemon=True)
    reader.start()
    bigjax_curve = peers.BigjaxCurve(bigjax_workdir) if bigjax_workdir else None
    timer = threading.Timer(_MAX_MINUTES.value * 60, proc.terminate)
    timer.start()
    try:
      while True:
        ended = not reader.is_alive()  # Its output closed: nothing more will be reported.
        for point in bigjax_curve.poll() if bigjax_curve else ():
          point['elapsed_s'] = round(point.pop('time') - launched, 1)
          points.put(point)
        while not points.empty():
          point = points.get()
          curve.append(point)
          print(f'  {point}', flush=True)
          if point['test_acc'] >= _TARGET.value and reached is None:
            reached = point['elapsed_s']
            proc.terminate()  # bigjax saves a checkpoint and exits; the peer just stops.
        if ended:
          break
        time.sleep(0.02)
    finally:
      timer.cancel()
      proc.wait()
      reader.join()
  return {'command': command, 'curve': curve, 'seconds_to_target': reached,
          'wall_s': round(time.perf_counter() - start, 1), 'exit_status': proc.returncode}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.INFO)
  common.setup_host()
  common.quiet_library_logs(_VERBOSE.value)
  config = _CONFIG.value

  def run():
    common.check_config(config)
    peers.check_recipe(config)
    unknown = [side for side in _SIDES.value if side not in SIDES]
    if unknown:
      raise ConfigError(f'--sides: {unknown} unknown; use {" and/or ".join(SIDES)}')
    if _WORKDIR.value and os.path.exists(os.path.join(_WORKDIR.value, 'bigjax')):
      # experiments.train would resume from the earlier run's checkpoints: not a race.
      raise ConfigError(f'--workdir={_WORKDIR.value} holds an earlier race; use a new one')
    workdir = workdirs.claim(_WORKDIR.value, 'experiments.time_to_accuracy')
    results = {'target': _TARGET.value, 'max_minutes': _MAX_MINUTES.value, 'sides': {}}
    peer_data = os.path.join(workdir, 'peer_data')
    if 'torch' in _SIDES.value:
      results['peer_data'] = peers.write_peer_data(config, peer_data)
    config_args = [a for a in sys.argv[1:] if a.startswith('--config')]
    for side in _SIDES.value:
      print(f'{side}: running until test accuracy >= {_TARGET.value} (at most {_MAX_MINUTES.value:g} min)',
            flush=True)
      if side == 'bigjax':
        bigjax_workdir = os.path.join(workdir, 'bigjax')
        command = [sys.executable, '-m', 'experiments.train', *config_args,
                   '--config.train.test_at_checkpoints=True', f'--workdir={bigjax_workdir}']
        results['sides'][side] = race(command, dict(os.environ), os.path.join(workdir, 'bigjax.log'),
                                      bigjax_workdir=bigjax_workdir)
      else:
        command = peers.lstm_command(config, _PEER_PYTHON.value, os.path.abspath(_PEERS.value), peer_data,
                                     results['peer_data'].get('init_table'), os.path.join(workdir, 'torch.json'))
        env = dict(os.environ, **hostmem.KEEP_FREED_MEMORY_ENV)  # Like for like: bigjax's allocator setting.
        results['sides'][side] = race(command, env, os.path.join(workdir, 'torch.log'))
    times = {side: r['seconds_to_target'] for side, r in results['sides'].items()}
    if times.get('bigjax') and times.get('torch'):
      results['torch_over_bigjax'] = times['torch'] / times['bigjax']
    with open(os.path.join(workdir, 'race.json'), 'w', encoding='utf-8') as f:
      json.dump(results, f, indent=2)
    for side, r in results['sides'].items():
      best = max((p['test_acc'] for p in r['curve']), default=float('nan'))
      reached = f'{r["seconds_to_target"]:.0f} s' if r['seconds_to_target'] else 'not reached'
      print(f'{side:<7} time to test >= {_TARGET.value}: {reached:>12}  (best test {best:.4f}, '
            f'{len(r["curve"])} evaluations, {r["wall_s"]:.0f} s in all)')
    if 'torch_over_bigjax' in results:
      print(f'torch / bigjax: {results["torch_over_bigjax"]:.2f}x')

  common.exit_on_user_error(run, _VERBOSE.value)


if __name__ == '__main__':
  flags.mark_flags_as_required(['config', 'workdir'])
  app.run(main, flags_parser=common.parse_flags)
