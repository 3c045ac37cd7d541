"""Train steps per second of the dense and the row-sparse embedding updates against table size.

  python -m benchmarks.sparse_scaling --out=docs/results/sparse_scaling   # ~10 min on 2 cores

For each bigram table size in --rows (the word table keeps its 30k rows) and each update
in --updates, benchmarks.benchmark measures the MLP's train step on real IMDB batches
(mlp_imdb.py, embeddings of --embed_dim, --overrides) in a process of its own, one after another.
dense: optax Adam over every row of both tables; lazy_adam / sgd: optim.sparse_embeddings
with that rule. Writes OUT.json, OUT.md (a table) and OUT.png (steps/s against rows, log x).
"""
import json
import os
import subprocess
import sys
import tempfile

from absl import app
from absl import flags

from experiments import cli

_ROWS = flags.DEFINE_list('rows', ['16384', '131072', '1048576'], 'Bigram table sizes (rows).')
_UPDATES = flags.DEFINE_list('updates', ['dense', 'lazy_adam', 'sgd'], 'dense, or a row-sparse rule.')
_CONFIG = flags.DEFINE_string('config', 'experiments/configs/mlp_imdb.py', 'The config measured.')
_EMBED_DIM = flags.DEFINE_integer('embed_dim', 100, 'Embedding width.')
_OVERRIDES = flags.DEFINE_list('overrides', ['data.bucket_growth=2.0'],
                                'KEY=VALUE config overrides for every measurement (default: 5 length buckets, '
                                'fewer compilations per measurement).')
_WINDOWS = flags.DEFINE_integer('windows', 5, 'Timed windows of 20 steps per measurement (medians).')
_OUT = flags.DEFINE_string('out', '', 'Writes OUT.json, OUT.md and OUT.png.')
_VERBOSE = flags.DEFINE_bool('verbose', False, 'Show tracebacks for user errors.')


def measure(rows: int, update: str) -> dict:
  overrides = [f'--config.model.mlp.bigram_buckets={rows}', f'--config.model.embed_dim={_EMBED_DIM.value}',
               *[f'--config.{o}' for o in _OVERRIDES.value]]
  if update == 'dense':
    overrides.append('--config.optim.sparse_embeddings=')
  else:
    overrides += ['--config.optim.sparse_embeddings=embedding', f'--config.optim.sparse_rule={update}']
  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, 'bench.json')
    subprocess.run([sys.executable, '-m', 'benchmarks.benchmark', f'--config={_CONFIG.value}', *overrides,
                    f'--windows={_WINDOWS.value}', f'--json_out={out}'], check=True, stdout=subprocess.DEVNULL)
    with open(out, encoding='utf-8') as f:
      result = json.load(f)
  step_ms = result['train']['step_ms']
  return {'rows': rows, 'update': update, 'step_ms': step_ms, 'steps_per_s': 1000 / step_ms,
          'tokens_per_s': result['train']['tokens_per_s'], 'peak_host_mib': result['memory']['peak_host_mib']}


def write_report(records: list, out: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  with open(out + '.json', 'w', encoding='utf-8') as f:
    json.dump(records, f, indent=1)
  rows = sorted({r['rows'] for r in records})
  updates = list(dict.fromkeys(r['update'] for r in records))
  by = {(r['rows'], r['update']): r for r in records}
  lines = ['| bigram rows | ' + ' | '.join(f'{u} steps/s' for u in updates) + ' |',
           '|---:|' + '---:|' * len(updates)]
  for n in rows:
    lines.append(f'| {n:,} | ' + ' | '.join(f"{by[n, u]['steps_per_s']:.1f}" if (n, u) in by else '' for u in updates)
                 + ' |')
  with open(out + '.md', 'w', encoding='utf-8') as f:
    f.write('\n'.join(lines) + '\n')
  fig, ax = plt.subplots(figsize=(6, 4))
  for u in updates:
    points = [(n, by[n, u]['steps_per_s']) for n in rows if (n, u) in by]
    ax.plot(*zip(*points), marker='o', label=u)
  ax.set_xscale('log')
  ax.set_xlabel('bigram table rows (plus 30k word rows)')
  ax.set_ylabel('train steps / s (batch 64)')
  ax.set_title('MLP on IMDB: dense vs row-sparse embedding updates')
  ax.set_ylim(bottom=0)
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(out + '.png', dpi=120)
  print('\n'.join(lines))


def main():
  records = []
  for rows in map(int, _ROWS.value):
    for update in _UPDATES.value:
      records.append(measure(rows, update))
      print(json.dumps(records[-1]), flush=True)
  if _OUT.value:
    write_report(records, _OUT.value)


if __name__ == '__main__':
  app.run(lambda argv: cli.run_tool(argv, main, _VERBOSE.value))
