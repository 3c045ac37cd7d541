"""Trains a text classifier, resuming from --workdir, and tests the best-dev checkpoint.

  python -m experiments.train --config=experiments/configs/mlp_sst2.py --workdir=runs/mlp_sst2 \
      [--config.train.epochs=5 --config.data.path=/my/data ...]

Rerunning the same command resumes from the newest checkpoint in --workdir. SIGTERM or
SIGINT saves a checkpoint at the next step boundary and exits 0. Exit status 2: a user
error, printed as one line (--verbose for the traceback). See docs/guides/training.md.
Multi-host jobs: one process per host (docs/guides/training.md, "Scaling out").
"""
from absl import app
from absl import flags
from ml_collections import config_flags

from experiments import common

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Folder for checkpoints, logs and results.')
_VERBOSE = flags.DEFINE_bool('verbose', False, 'Show tracebacks for user errors.')
_START_JOB = common.define_job_flags()


def main(argv):
  def run():
    common.check_config(_CONFIG.value)
    _START_JOB()
    return common.run_training(_CONFIG.value, _WORKDIR.value)

  common.run_trainer(argv, run, _VERBOSE.value)


if __name__ == '__main__':
  flags.mark_flags_as_required(['config', 'workdir'])
  app.run(main, flags_parser=common.parse_flags)
