"""Test accuracy against sparsity, from pruned runs' reports: a Markdown table and a PNG.

  python -m benchmarks.pruning_curve --runs=runs/pruned50,runs/pruned80,runs/pruned90 \
      --out=docs/results/pruning_sst2 --title="SST-2 MLP"

Each run is an experiments.compress --method=prune output folder; its compression.json
holds the source run's figures (plotted at 0 %) and its own. Writes OUT.md and OUT.png.
"""
import os

from absl import app
from absl import flags
import matplotlib

matplotlib.use('Agg')  # Files only: no display here.
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

from bigjax import files
from bigjax.errors import ConfigError
from experiments import cli

_RUNS = flags.DEFINE_list('runs', [], 'Pruned run folders (experiments.compress --method=prune).')
_OUT = flags.DEFINE_string('out', None, 'Output path without extension: OUT.md and OUT.png are written.')
_TITLE = flags.DEFINE_string('title', '', 'The plot title.')
_VERBOSE = flags.DEFINE_bool('verbose', False, 'Show tracebacks for user errors.')


def read_points(folders: list[str]) -> list[dict]:
  """[{'sparsity', 'test_accuracy', 'dev_accuracy', 'bytes_on_disk', 'sparse_bytes', 'workdir'}], the source first."""
  points, source = [], None
  for folder in folders:
    path = os.path.join(folder, 'compression.json')
    if not os.path.exists(path):
      raise ConfigError(f'{folder} has no compression.json: not an experiments.compress output')
    report = files.read_json(path)
    if report.get('method') != 'prune':
      raise ConfigError(f'{path}: method {report.get("method")!r}, not prune')
    before, after = report['before'], report['after']
    if source is None:
      source = before
      points.append({'sparsity': 0.0, 'workdir': before['workdir'], 'test_accuracy': before['test_accuracy'],
                     'dev_accuracy': before['dev_accuracy'], 'bytes_on_disk': before['bytes_on_disk'],
                     'sparse_bytes': before['bytes_on_disk']})
    elif before['workdir'] != source['workdir']:
      raise ConfigError(f'{folder} was pruned from {before["workdir"]}, the others from {source["workdir"]}')
    points.append({'sparsity': report['sparsity']['sparsity'], 'workdir': after['workdir'],
                   'test_accuracy': after['test_accuracy'], 'dev_accuracy': after['dev_accuracy'],
                   'bytes_on_disk': after['bytes_on_disk'], 'sparse_bytes': report['sparsity']['sparse_bytes']})
  return sorted(points, key=lambda p: p['sparsity'])


def markdown(points: list[dict]) -> str:
  base = points[0]['test_accuracy']
  lines = ['| sparsity | test accuracy | change | dev accuracy | bytes on disk | sparse encoding bytes | run |',
           '|---:|---:|---:|---:|---:|---:|---|']
  for p in points:
    lines.append(f"| {100 * p['sparsity']:.0f} % | {100 * p['test_accuracy']:.2f} % | "
                 f"{100 * (p['test_accuracy'] - base):+.2f} | {100 * p['dev_accuracy']:.2f} % | "
                 f"{p['bytes_on_disk']:,} | {p['sparse_bytes']:,} | {os.path.basename(p['workdir'])} |")
  return '\n'.join(lines) + '\n'


def plot(points: list[dict], path: str, title: str) -> None:
  figure, axis = plt.subplots(figsize=(5, 3.5), dpi=120)
  x = [100 * p['sparsity'] for p in points]
  axis.plot(x, [100 * p['test_accuracy'] for p in points], 'o-', label='test')
  axis.plot(x, [100 * p['dev_accuracy'] for p in points], 's--', label='dev', alpha=0.7)
  axis.axhline(100 * points[0]['test_accuracy'] - 1, color='grey', lw=0.8, ls=':', label='test - 1 point')
  axis.set_xlabel('sparsity of the pruned weights (%)')
  axis.set_ylabel('accuracy (%)')
  axis.set_title(title or 'accuracy against sparsity')
  axis.grid(alpha=0.3)
  axis.legend()
  figure.tight_layout()
  figure.savefig(path)
  plt.close(figure)


def main(argv):
  def run():
    if not _RUNS.value:
      raise ConfigError('--runs=FOLDER,... is required')
    points = read_points(_RUNS.value)
    with open(_OUT.value + '.md', 'w', encoding='utf-8') as f:
      f.write(markdown(points))
    plot(points, _OUT.value + '.png', _TITLE.value)
    print(markdown(points), end='')

  cli.run_tool(argv, run, _VERBOSE.value)


if __name__ == '__main__':
  flags.mark_flags_as_required(['out'])
  app.run(main, flags_parser=cli.parse_flags)
