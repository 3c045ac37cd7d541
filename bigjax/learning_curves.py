"""Learning curves: test accuracy against the number of labels, for several starts.

The library half of experiments.learning_curve, which launches the runs: what a curve is
(its starts and points, each point's folder), reading a finished point's record, and the
curve's table and plot. Each point is an ordinary `experiments.train` run in its own folder,
OUT/START/nBUDGET_sSEED, of the start's own config and overrides with
`--config.data.train_limit=BUDGET --config.seed=SEED` on top (its log beside it,
OUT/START/nBUDGET_sSEED.log).
"""
import dataclasses
import json
import math
import os
import shlex
from typing import Sequence

import numpy as np

from bigjax import files
from bigjax import run_record
from bigjax.errors import ConfigError, DataError

ALL = 0  # The budget that keeps every training label (data.train_limit=0).


@dataclasses.dataclass(frozen=True)
class Start:
  """How one curve's runs begin: a config file and its overrides ('--config.KEY=VALUE ...')."""
  name: str
  config: str
  overrides: tuple[str, ...] = ()

  @classmethod
  def parse(cls, text: str) -> 'Start':
    """'NAME=CONFIG_FILE[:variant] [--config.KEY=VALUE ...]' -> Start."""
    words = shlex.split(text)
    head = words[0] if words else ''
    name, sep, config = head.partition('=')
    if not sep or not name or not config:
      raise ConfigError(f'--start={text!r}: expected NAME=CONFIG_FILE followed by --config.KEY=VALUE overrides')
    if not name.replace('_', '').replace('-', '').isalnum():
      raise ConfigError(f'--start={text!r}: the name {name!r} names a folder: letters, digits, - and _ only')
    if not os.path.exists(config.partition(':')[0]):
      raise ConfigError(f'--start={text!r}: no config file {config.partition(":")[0]!r}')
    return cls(name, config, overrides(shlex.join(words[1:]), f'--start={text!r}'))


def overrides(text: str, where: str) -> tuple[str, ...]:
  """'--config.KEY=VALUE ...' -> its words, each checked to be such an override."""
  words = tuple(shlex.split(text))
  bad = [w for w in words if not w.startswith('--config.')]
  if bad:
    raise ConfigError(f'{where}: {bad[0]!r} is not a --config.KEY=VALUE override')
  return words


@dataclasses.dataclass(frozen=True)
class Point:
  start: str
  budget: int  # Training labels; ALL for every one.
  seed: int

  def folder(self, out: str) -> str:
    return os.path.join(out, self.start, f'n{self.budget or "all"}_s{self.seed}')

  def log(self, out: str) -> str:
    return self.folder(out) + '.log'


def input_folders(starts: Sequence[Start], extra: Sequence[str], cwd: str) -> dict:
  """{override: folder} of the folders the runs start or learn from (init.checkpoint,
  init.embeddings, distill.teacher), relative ones from `cwd` (where the runs are launched),
  which the curve's folder must stay apart from."""
  keys = ('--config.init.checkpoint=', '--config.init.embeddings=', '--config.distill.teacher=')
  found = {}
  for word in [*extra, *(o for s in starts for o in s.overrides)]:
    for key in keys:
      if word.startswith(key) and word[len(key):]:
        found[f'{key[:-1]} (in a --start)'] = os.path.join(cwd, word[len(key):])
  return found


def plan(starts: Sequence[Start], budgets: Sequence[int], seeds: int, full_seeds: int) -> list[Point]:
  """Every run of the curve: `seeds` seeds at each label budget, `full_seeds` with all labels."""
  if len({s.name for s in starts}) != len(starts):
    raise ConfigError('two --start flags have the same name')
  if any(b < 0 for b in budgets) or len(set(budgets)) != len(budgets):
    raise ConfigError(f'--budgets={",".join(map(str, budgets))}: distinct label counts >= 0 (0: all labels)')
  return [Point(s.name, b, seed) for s in starts for b in budgets for seed in range(seeds if b != ALL else full_seeds)]


def read_record(point: Point, folder: str) -> dict:
  """A finished point's record, from its run's results.json and config.json."""
  results = files.read_json(os.path.join(folder, 'results.json'), ('test', 'dev'))
  derived = run_record.read(folder).derived
  if derived.train_examples is None:
    raise DataError(f'{os.path.join(folder, "config.json")}: derived.train_examples is not recorded; '
                    f'{files.COPY_AGAIN}')
  return {'start': point.start, 'budget': point.budget, 'seed': point.seed, 'workdir': folder,
          'train_examples': derived.train_examples, 'test_accuracy': results['test']['accuracy'],
          'dev_accuracy': results['dev']['accuracy']}


def summarize(records: Sequence[dict]) -> list[dict]:
  """Per (start, budget): the mean and sample standard deviation of test accuracy over seeds."""
  groups: dict = {}
  for r in records:
    groups.setdefault((r['start'], r['budget']), []).append(r)
  rows = []
  for (start, budget), group in groups.items():
    accuracies = np.array([r['test_accuracy'] for r in group])
    rows.append({'start': start, 'budget': budget, 'labels': group[0]['train_examples'], 'runs': len(group),
                 'test_mean': float(accuracies.mean()),
                 'test_sd': float(accuracies.std(ddof=1)) if len(group) > 1 else 0.0,
                 'dev_mean': float(np.mean([r['dev_accuracy'] for r in group]))})
  return rows


def markdown(rows: Sequence[dict]) -> str:
  """Budgets down, starts across: 'mean ± sd (runs)' of test accuracy."""
  starts = list(dict.fromkeys(r['start'] for r in rows))
  budgets = sorted({r['budget'] for r in rows}, key=lambda b: math.inf if b == ALL else b)
  cell = {(r['start'], r['budget']): r for r in rows}
  lines = ['| labels | ' + ' | '.join(starts) + ' |', '|---:|' + '---:|' * len(starts)]
  for budget in budgets:
    labels = next(r['labels'] for r in rows if r['budget'] == budget)
    cells = []
    for start in starts:
      r = cell.get((start, budget))
      if r is None:
        cells.append('')
      elif r['runs'] == 1:  # One run has no spread to show.
        cells.append(f"{100 * r['test_mean']:.2f} % (1)")
      else:
        cells.append(f"{100 * r['test_mean']:.2f} ± {100 * r['test_sd']:.2f} % ({r['runs']})")
    lines.append(f'| {labels:,}{" (all)" if budget == ALL else ""} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


def plot(rows: Sequence[dict], path: str, title: str) -> None:
  """Test accuracy against labels (log axis), one line per start, error bars of one sd."""
  # The object-oriented API, not pyplot: no global figure state, no display backend needed.
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  figure = Figure(figsize=(5.5, 3.8), dpi=120)
  FigureCanvasAgg(figure)
  axis = figure.subplots()
  for start in dict.fromkeys(r['start'] for r in rows):
    mine = sorted((r for r in rows if r['start'] == start), key=lambda r: r['labels'])
    axis.errorbar([r['labels'] for r in mine], [100 * r['test_mean'] for r in mine],
                  yerr=[100 * r['test_sd'] for r in mine], marker='o', capsize=3, label=start)
  axis.set_xscale('log')
  axis.set_xlabel('training labels')
  axis.set_ylabel('test accuracy (%)')
  axis.set_title(title or 'test accuracy against labels')
  axis.grid(alpha=0.3, which='both')
  axis.legend()
  figure.tight_layout()
  figure.savefig(path)


def write(out: str, records: Sequence[dict], title: str = '') -> list[dict]:
  """OUT/learning_curve.{json,md,png}; returns the summary rows."""
  rows = summarize(records)
  with open(os.path.join(out, 'learning_curve.json'), 'w', encoding='utf-8') as f:
    json.dump({'runs': list(records), 'summary': rows}, f, indent=1)
  with open(os.path.join(out, 'learning_curve.md'), 'w', encoding='utf-8') as f:
    f.write(markdown(rows))
  plot(rows, os.path.join(out, 'learning_curve.png'), title)
  return rows
