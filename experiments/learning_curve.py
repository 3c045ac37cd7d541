"""Test accuracy against the number of training labels, for several starts, with seeds.

  python -m experiments.learning_curve --workdir=runs/curve_imdb --budgets=100,500,1000,5000,0 \
      --start="scratch=experiments/configs/lstm_imdb.py" \
      --start="word2vec=experiments/configs/lstm_imdb.py --config.init.embeddings=runs/w2v_imdb" \
      --start="lm=experiments/configs/ulmfit_imdb.py --config.init.checkpoint=runs/lm_imdb" \
      --seeds=3 --full_seeds=1

Each point is an `experiments.train` run of the start's config with data.train_limit=N (a
seeded, class-balanced subset; 0 keeps every label) in WORKDIR/START/nN_sSEED; dev and test
stay whole. Runs already finished are read, an interrupted one resumes: rerun the same
command after a crash. Writes WORKDIR/learning_curve.md (mean ± sd per budget and start),
.json (every run and the summary) and .png (error bars of one sd). --extra adds overrides to
every run (a shorter schedule for a quick look, say); a start's own overrides win over them.
"""
from absl import app
from absl import flags

from bigjax import workdirs
from bigjax.errors import ConfigError
from experiments import cli
from experiments import curves

_WORKDIR = flags.DEFINE_string('workdir', None, 'Folder of the runs and the curve.')
_STARTS = flags.DEFINE_multi_string('start', [], '"NAME=CONFIG_FILE[:variant] --config.KEY=VALUE ...", repeated.')
_BUDGETS = flags.DEFINE_list('budgets', ['100', '500', '1000', '5000', '0'], 'Label counts; 0: all labels.')
_SEEDS = flags.DEFINE_integer('seeds', 3, 'Seeds per start at each limited budget.')
_FULL_SEEDS = flags.DEFINE_integer('full_seeds', 1, 'Seeds per start with all labels.')
_EXTRA = flags.DEFINE_string('extra', '', 'Overrides for every run: "--config.KEY=VALUE ...".')
_TITLE = flags.DEFINE_string('title', '', 'The plot title.')
_VERBOSE = flags.DEFINE_bool('verbose', False, 'Show tracebacks for user errors.')


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
    workdirs.check_apart(_WORKDIR.value, curves.input_folders(starts, extra))
    workdirs.claim(_WORKDIR.value, 'experiments.learning_curve')
    records = curves.run_all(starts, points, _WORKDIR.value, extra)
    print(curves.markdown(curves.write(_WORKDIR.value, records, _TITLE.value)), end='')

  cli.run_tool(argv, run, _VERBOSE.value)


if __name__ == '__main__':
  flags.mark_flags_as_required(['workdir'])
  app.run(main, flags_parser=cli.parse_flags)
