"""bigjax's MLP against fastText, launch to result, side by side in one run.

  python -m benchmarks.compare_fasttext --peer_python=/path/to/venv-with-fasttext/bin/python \
      --datasets=imdb,sst2 --rounds=2 --out=docs/results/fasttext

For each dataset, fastText is first tuned on dev over its peer's grid (epochs x learning
rate; not timed), then the rounds alternate, each one timing, from launch to exit:
- fastText with the dev-best pair (benchmarks/fasttext_imdb.py, which reads the IMDB
  archive itself; ../shared/peers/fasttext_sst2.py for SST-2), 2 threads;
- `python -m experiments.train` with mlp_DATASET.py on an empty cache ("cold": it reads,
  tokenizes and compiles), then again with another seed on that cache ("warm": the
  tokenized splits and the compiled steps are read back).
Both sides use the same splits (IMDB: 22,500 / 2,500 / 25,000). Writes OUT.json and OUT.md.
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

from experiments import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(ROOT, '..', 'shared')
_PEER_PYTHON = flags.DEFINE_string('peer_python', sys.executable, 'A Python with fasttext-wheel and numpy.')
_DATASETS = flags.DEFINE_list('datasets', ['imdb', 'sst2'], 'imdb and/or sst2.')
_ROUNDS = flags.DEFINE_integer('rounds', 2, 'Alternating timed rounds per dataset.')
# fastText's epoch grids: its peer's for SST-2; IMDB's reviews are 30x longer, so fewer epochs.
EPOCH_GRID = {'imdb': '5,10', 'sst2': '10,25'}
_GRID_LR = flags.DEFINE_string('grid_lr', '0.1,0.25,0.5,1.0', "fastText's learning-rate grid.")
_BEST = flags.DEFINE_list('fasttext_best', [], "DATASET=EPOCH/LR: that dataset's dev-best pair, from an earlier "
                          'grid (the grid is then not run again).')
_OVERRIDES = flags.DEFINE_list('bigjax_overrides', [], 'Extra --config.KEY=VALUE for the bigjax runs.')
_OUT = flags.DEFINE_string('out', '', 'Writes OUT.json and OUT.md.')
_VERBOSE = flags.DEFINE_bool('verbose', False, 'Show tracebacks for user errors.')


def run_timed(cmd: list, cwd: str = ROOT) -> float:
  start = time.perf_counter()
  subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  return time.perf_counter() - start


def fasttext_command(dataset: str, epochs: str, lr: str, json_out: str) -> list:
  if dataset == 'imdb':
    script = [os.path.join(ROOT, 'benchmarks', 'fasttext_imdb.py'),
              f'--archive={os.path.join(SHARED, "data", "imdb", "aclImdb_v1.tar.gz")}']
  else:
    script = [os.path.join(SHARED, 'peers', 'fasttext_sst2.py'), f'--data_dir={os.path.join(SHARED, "data", "sst2")}']
  return [_PEER_PYTHON.value, *script, f'--epochs={epochs}', f'--lr={lr}', '--threads=2', f'--json_out={json_out}']


def bigjax_run(dataset: str, cache_dir: str, workdir: str, seed: int) -> dict:
  cmd = [sys.executable, '-m', 'experiments.train', f'--config=experiments/configs/mlp_{dataset}.py',
         f'--workdir={workdir}', f'--config.cache.dir={cache_dir}', f'--config.seed={seed}',
         *[f'--config.{o}' for o in _OVERRIDES.value]]
  wall = run_timed(cmd)
  with open(os.path.join(workdir, 'results.json'), encoding='utf-8') as f:
    results = json.load(f)
  return {'wall_s': wall, 'test_acc': results['test']['accuracy'], 'dev_acc': results['dev']['accuracy'],
          **results['timing']}


def compare(dataset: str, tmp: str) -> dict:
  given = dict(item.split('=', 1) for item in _BEST.value)
  if dataset in given:
    best, grid = tuple(given[dataset].split('/')), {'grid': 'given by --fasttext_best'}
  else:
    grid_json = os.path.join(tmp, f'ft_{dataset}_grid.json')
    subprocess.run(fasttext_command(dataset, EPOCH_GRID[dataset], _GRID_LR.value, grid_json), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(grid_json, encoding='utf-8') as f:
      grid = json.load(f)
    best = (str(grid['best_epoch']), str(grid['best_lr']))
  rounds = []
  for r in range(_ROUNDS.value):
    ft_json = os.path.join(tmp, f'ft_{dataset}_{r}.json')
    ft_wall = run_timed(fasttext_command(dataset, *best, ft_json))
    with open(ft_json, encoding='utf-8') as f:
      ft = json.load(f)
    cache_dir = os.path.join(tmp, f'cache_{dataset}_{r}')
    cold = bigjax_run(dataset, cache_dir, os.path.join(tmp, f'bj_{dataset}_{r}_cold'), seed=0)
    warm = bigjax_run(dataset, cache_dir, os.path.join(tmp, f'bj_{dataset}_{r}_warm'), seed=1)
    rounds.append({'fasttext': {'wall_s': ft_wall, 'test_acc': ft['test_acc'], 'dev_acc': ft.get('dev_acc',
                                                                                            ft.get('best_dev_acc')),
                                'train_s': ft['train_s']},
                   'bigjax_cold': cold, 'bigjax_warm': warm})
    print(json.dumps({'dataset': dataset, 'round': r, **rounds[-1]}), flush=True)
  median = lambda side, key: statistics.median(r[side][key] for r in rounds)
  summary = {side: {key: median(side, key) for key in ('wall_s', 'test_acc')}
             for side in ('fasttext', 'bigjax_cold', 'bigjax_warm')}
  for side in ('bigjax_cold', 'bigjax_warm'):
    summary[side]['launch_to_first_step_s'] = median(side, 'launch_to_first_step_s')
    summary[side]['wall_vs_fasttext'] = summary[side]['wall_s'] / summary['fasttext']['wall_s']
  return {'dataset': dataset, 'fasttext_best': {'epoch': best[0], 'lr': best[1], 'grid': grid['grid']},
          'rounds': rounds, 'median': summary}


def markdown(reports: list) -> str:
  lines = ['| data | run | test acc | launch to result (s) | vs fastText | launch to first step (s) |',
           '|---|---|---:|---:|---:|---:|']
  for rep in reports:
    m = rep['median']
    ft = rep['fasttext_best']
    lines.append(f"| {rep['dataset']} | fastText (epoch {ft['epoch']}, lr {ft['lr']}, dev-tuned) | "
                 f"{100 * m['fasttext']['test_acc']:.2f} % | {m['fasttext']['wall_s']:.1f} | 1.00 | |")
    for side, name in (('bigjax_cold', 'bigjax MLP, empty cache'), ('bigjax_warm', 'bigjax MLP, cached, seed 1')):
      lines.append(f"| {rep['dataset']} | {name} | {100 * m[side]['test_acc']:.2f} % | {m[side]['wall_s']:.1f} | "
                   f"{m[side]['wall_vs_fasttext']:.2f} | {m[side]['launch_to_first_step_s']:.1f} |")
  return '\n'.join(lines) + '\n'


def main():
  with tempfile.TemporaryDirectory(prefix='compare_fasttext_') as tmp:
    reports = [compare(dataset, tmp) for dataset in _DATASETS.value]
  table = markdown(reports)
  print(table)
  if _OUT.value:
    with open(_OUT.value + '.json', 'w', encoding='utf-8') as f:
      json.dump(reports, f, indent=1)
    with open(_OUT.value + '.md', 'w', encoding='utf-8') as f:
      f.write(table)


if __name__ == '__main__':
  app.run(lambda argv: cli.run_tool(argv, main, _VERBOSE.value))
