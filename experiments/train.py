"""Trains a text classifier, resuming from --workdir, and tests the best-dev checkpoint.

  python -m experiments.train --config=experiments/configs/mlp_sst2.py --workdir=runs/mlp_sst2 \
      [--config.train.epochs=5 --config.data.path=/my/data ...]

Rerunning the same command resumes from the newest checkpoint in --workdir.
"""
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from experiments import common

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Folder for checkpoints, logs and results.')
_VERBOSE = flags.DEFINE_bool('verbose', False, 'Show tracebacks for user errors.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.INFO)
  common.quiet_library_logs()
  common.exit_on_user_error(lambda: common.run_training(_CONFIG.value, _WORKDIR.value), _VERBOSE.value)


if __name__ == '__main__':
  flags.mark_flags_as_required(['config', 'workdir'])
  app.run(main)
