"""Test accuracy against the number of training labels, for several starts, with seeds.

  python -m experiments.learning_curve --workdir=runs/curve_imdb --budgets=100,500,1000,5000,0 \
      --start="scratch=experiments/configs/lstm_imdb.py" \
      --start="word2vec=experiments/configs/lstm_imdb.py --config.init.embeddings=runs/w2v_imdb" \
      --start="lm=experiments/configs/ulmfit_imdb.py --config.init.checkpoint=runs/lm_imdb" \
      --seeds=3 --full_seeds=1

Each point is an `experiments.train` run of the start's config with data.train_limit=N (a
seeded, class-balanced subset; 0 keeps every label) in WORKDIR/START/nN_sSEED, launched as a
subprocess (its log beside it, WORKDIR/START/nN_sSEED.log); dev and test stay whole. Runs
already finished are read, an interrupted one resumes from its checkpoints: rerun the same
command after a crash (it loses at most the run in progress's steps since its last
checkpoint). Writes WORKDIR/learning_curve.md (mean ± sd per budget and start), .json (every
run and the summary) and .png (error bars of one sd). --extra adds overrides to every run (a
shorter schedule for a quick look, say); a start's own overrides win over them. The curve
itself (points, records, table, plot): bigjax/learning_curves.py.
"""
import os
import subprocess
import sys
import time
from typing import Sequence

from absl import app
from absl import flags

from bigjax import learning_curves as curves
from bigjax import workdirs
from bigjax.errors import ConfigError
from experiments import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # Where the runs are launched.

_WORKDIR = flags.DEFINE_string('workdir', None, 'Folder of the runs and the curve.')
_STARTS = flags.DEFINE_multi_string('start', [], '"NAME=CONFIG_FILE[:variant] --config.KEY=VALUE ...", repeated.')
_BUDGETS = flags.DEFINE_list('budgets', ['100', '500', '1000', '5000', '0'], 'Label counts; 0: all labels.')
_SEEDS = flags.DEFINE_integer('seeds', 3, 'Seeds per start at each limited budget.')
_FULL_SEEDS = flags.DEFINE_integer('full_seeds', 1, 'Seeds per start with all labels.')
_EXTRA = flags.DEFINE_string('extra', '', 'Overrides for every run: "--config.KEY=VALUE ...".')
_TITLE = flags.DEFINE_string('title', '', 'The plot title.')
_VERBOSE = flags.DEFINE_bool('verbose', False, 'Show tracebacks for user errors.')


def command(start: curves.Start, point: curves.Point, out: str, extra: Sequence[str] = ()) -> list[str]:
  """The point's experiments.train command: the overrides for every run, then the start's own
  (the more specific wins), then the point's label budget and seed."""
  return [sys.executable, '-m', 'experiments.train', f'--config={start.config}', f'--workdir={point.folder(out)}',
          *extra, *start.overrides, f'--config.data.train_limit={point.budget}', f'--config.seed={point.seed}']


def _stderr(message: str) -> None:
  print(message, file=sys.stderr, flush=True)


def run_all(starts: Sequence[curves.Start], points: Sequence[curves.Point], out: str, extra: Sequence[str] = (),
            log=_stderr) -> list[dict]:
  """Runs (or reads) every point, in order; one record per point. Progress (and, once a run
  has finished here, an ETA from their mean time) goes to `log`."""
  by_name = {s.name: s for s in starts}
  records, trained_seconds, trained = [], 0.0, 0
  for i, point in enumerate(points, 1):
    folder = point.folder(out)
    results_path = os.path.join(folder, 'results.json')
    if os.path.exists(results_path):
      log(f'[{i}/{len(points)}] {folder}: done before, read')
    else:
      to_train = sum(not os.path.exists(os.path.join(p.folder(out), 'results.json')) for p in points[i - 1:])
      eta = f', ETA {_duration(trained_seconds / trained * to_train)}' if trained else ''
      log(f'[{i}/{len(points)}] {folder}: training ({to_train} {"run" if to_train == 1 else "runs"} to go{eta})')
      began = time.perf_counter()
      os.makedirs(os.path.dirname(folder), exist_ok=True)
      # The log sits beside the run's folder: the run claims its folder (bigjax.workdirs) and
      # refuses one that holds files it did not write.
      log_path = point.log(out)
      with open(log_path, 'a', encoding='utf-8') as log_file:
        finished = subprocess.run(command(by_name[point.start], point, out, extra), cwd=ROOT, stdout=log_file,
                                  stderr=subprocess.STDOUT, check=False)
      if finished.returncode != 0 or not os.path.exists(results_path):
        raise ConfigError(f'the run in {folder} failed (exit {finished.returncode}); its log: {log_path}. Rerun '
                          'the same command to go on from there.')
      trained_seconds, trained = trained_seconds + time.perf_counter() - began, trained + 1
    records.append(curves.read_record(point, folder))
  return records


def _duration(seconds: float) -> str:
  seconds = int(seconds)
  return f'{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'


def main(argv):
  def run():
    if not _STARTS.value:
      raise ConfigError('give at least one --start="NAME=CONFIG_FILE [--config.KEY=VALUE ...]"')
    try:
      budgets = [int(b) for b in _BUDGETS.value]
    except ValueError:
      raise ConfigError(f'--budgets={",".join(_BUDGETS.value)}: whole numbers, 0 for all labels') from None
    if _SEEDS.value < 1 or _FULL_SEEDS.value < 1:
      raise ConfigError('--seeds and --full_seeds must be at least 1')
    starts = [curves.Start.parse(text) for text in _STARTS.value]
    extra = curves.overrides(_EXTRA.value, '--extra')
    points = curves.plan(starts, budgets, _SEEDS.value, _FULL_SEEDS.value)
    workdirs.check_apart(_WORKDIR.value, curves.input_folders(starts, extra, ROOT))
    workdirs.claim(_WORKDIR.value, 'experiments.learning_curve')
    records = run_all(starts, points, _WORKDIR.value, extra)
    print(curves.markdown(curves.write(_WORKDIR.value, records, _TITLE.value)), end='')

  cli.run_tool(argv, run, _VERBOSE.value)


if __name__ == '__main__':
  flags.mark_flags_as_required(['workdir'])
  app.run(main, flags_parser=cli.parse_flags)
