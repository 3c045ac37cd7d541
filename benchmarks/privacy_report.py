"""Tabulates private and non-private runs of one recipe: test accuracy against epsilon (mean and
standard deviation over seeds), the audit beside it, and a plot of accuracy against epsilon.

  python -m benchmarks.privacy_report --runs=runs/dp --datasets=sst2,imdb --plot=docs/results/privacy_accuracy.png
  # A prefix may name its label in the plot: --datasets="sst2=SST-2 MLP,imdb=IMDB MLP"

Reads RUNS/<dataset>_<setting>_s<seed>/results.json and RUNS/<dataset>_<setting>_s<seed>.audit.json
(experiments.audit's --json_out), where setting is `nodp` or `eps<E>`; prints markdown.
"""
import json
import math
import os
import re

from absl import app
from absl import flags
import numpy as np

_RUNS = flags.DEFINE_string('runs', 'runs/dp', 'The folder holding the runs.')
_DATASETS = flags.DEFINE_list('datasets', ['sst2', 'imdb'],
                               'The prefixes of the run folders, each PREFIX or PREFIX=LABEL (the plot\'s legend).')
_PLOT = flags.DEFINE_string('plot', '', 'Also draw test accuracy against epsilon here (PNG).')

_NAME = re.compile(r'^(?P<dataset>[a-z0-9]+)_(?P<setting>nodp|eps[0-9.]+)_s(?P<seed>[0-9]+)$')


def collect(folder: str, datasets) -> dict:
  """{dataset: {setting: [per-seed records]}} of the finished runs."""
  found = {d: {} for d in datasets}
  for name in sorted(os.listdir(folder)):
    match = _NAME.match(name)
    results_path = os.path.join(folder, name, 'results.json')
    if not match or match['dataset'] not in found or not os.path.exists(results_path):
      continue
    with open(results_path, encoding='utf-8') as f:
      results = json.load(f)
    record = {'seed': int(match['seed']), 'test': results['test']['accuracy'], 'dev': results['dev']['accuracy'],
              'epsilon': (results.get('privacy') or {}).get('epsilon', math.inf),
              'noise': (results.get('privacy') or {}).get('noise_multiplier')}
    audit_path = os.path.join(folder, f'{name}.audit.json')
    if os.path.exists(audit_path):
      with open(audit_path, encoding='utf-8') as f:
        audit = json.load(f)
      record.update(auc=audit['membership']['auc'], exposure=(audit.get('canaries') or {}).get('exposure_mean'),
                    exposure_max=(audit.get('canaries') or {}).get('exposure_max'),
                    ceiling=(audit.get('canaries') or {}).get('exposure_ceiling'))
    found[match['dataset']].setdefault(match['setting'], []).append(record)
  return found


def _order(setting: str) -> float:
  return math.inf if setting == 'nodp' else float(setting[3:])


def _mean_sd(values, scale=1.0, digits=2) -> str:
  values = [v * scale for v in values if v is not None]
  if not values:
    return 'not measured'
  if len(values) == 1 or np.ptp(values) == 0:  # One run, or the same value in every run (a calibrated noise).
    return f'{values[0]:.{digits}f}'
  return f'{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}'


def table(settings: dict) -> str:
  lines = ['| epsilon (delta = 1/n^1.1) | noise multiplier | seeds | dev | test | membership AUC | canary exposure '
           '(mean; max) |', '| --- | --- | --- | --- | --- | --- | --- |']
  base = settings.get('nodp')
  for setting in sorted(settings, key=_order):
    runs = settings[setting]
    label = 'non-private' if setting == 'nodp' else f'{_order(setting):g}'
    noise = _mean_sd([r['noise'] for r in runs], digits=3) if setting != 'nodp' else '0'
    test = _mean_sd([r['test'] for r in runs], 100)
    if base and setting != 'nodp':
      gap = 100 * (np.mean([r['test'] for r in runs]) - np.mean([r['test'] for r in base]))
      test += f' ({gap:+.2f})'
    exposure = _mean_sd([r.get('exposure') for r in runs])
    if any(r.get('exposure_max') is not None for r in runs):
      exposure += f'; {max(r["exposure_max"] for r in runs if r.get("exposure_max") is not None):.2f}'
    lines.append(f'| {label} | {noise} | {len(runs)} | {_mean_sd([r["dev"] for r in runs], 100)} % | {test} % | '
                 f'{_mean_sd([r.get("auc") for r in runs], digits=3)} | {exposure} |')
  return '\n'.join(lines)


def plot(found: dict, path: str, labels: dict) -> None:
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  figure = Figure(figsize=(6, 4), dpi=110)
  FigureCanvasAgg(figure)
  axes = figure.subplots()
  for color, (dataset, settings) in zip(('#4c72b0', '#c44e52', '#55a868'), found.items()):
    private = sorted((s for s in settings if s != 'nodp'), key=_order)
    if not private:
      continue
    eps = [_order(s) for s in private]
    means = [100 * np.mean([r['test'] for r in settings[s]]) for s in private]
    sds = [100 * np.std([r['test'] for r in settings[s]], ddof=1) if len(settings[s]) > 1 else 0 for s in private]
    axes.errorbar(eps, means, yerr=sds, marker='o', color=color, capsize=3, label=f'{labels[dataset]}, DP-SGD')
    if 'nodp' in settings:
      axes.axhline(100 * np.mean([r['test'] for r in settings['nodp']]), color=color, linestyle='--',
                   label=f'{labels[dataset]}, non-private')
  axes.set_xscale('log')
  axes.set_xticks([1, 3, 8], ['1', '3', '8'])
  axes.set_xticks([], minor=True)
  axes.set_xlabel('epsilon (delta = 1/n^1.1)')
  axes.set_ylabel('test accuracy (%)')
  axes.set_title('DP-SGD: test accuracy against epsilon (mean ± sd over seeds)', fontsize=9)
  axes.legend(fontsize=8)
  figure.tight_layout()
  figure.savefig(path)


def main(argv):
  del argv
  labels = dict((entry.split('=', 1) + [entry])[:2] for entry in _DATASETS.value)
  found = collect(_RUNS.value, list(labels))
  for dataset, settings in found.items():
    print(f'\n### {labels[dataset]}\n\n{table(settings)}')
  if _PLOT.value:
    plot(found, _PLOT.value, labels)
    print(f'\nplot: {_PLOT.value}')


if __name__ == '__main__':
  app.run(main)
