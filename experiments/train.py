"""Trains a model, resuming from --workdir: a text classifier, tested at its best-dev checkpoint,
a language model (ULMFiT's stages 1 and 2) or a masked language model (BERT's pretraining), as
the config's model.name is.

  python -m experiments.train --config=experiments/configs/mlp_sst2.py --workdir=runs/mlp_sst2 \
      [--config.train.epochs=5 --config.data.path=/my/data ...]
  python -m experiments.train --config=experiments/configs/lm_imdb.py --workdir=runs/lm_imdb
  python -m experiments.train --config=experiments/configs/mlm_imdb.py --workdir=runs/mlm_imdb

Rerunning the same command resumes from the newest checkpoint in --workdir. SIGTERM or
SIGINT saves a checkpoint at the next step boundary and exits 0. Exit status 2: a user
error, printed as one line (--verbose for the traceback). See docs/guides/training.md.
A language model reads the train and unlabelled text of config.data (never dev or test) in
truncated-BPTT windows, a masked language model the same text in rows of data.max_len tokens;
its tokenizer is the one every finetuning run from it reuses.
Multi-host jobs: one process per host (docs/guides/training.md, "Scaling out").
"""
from absl import app
from absl import flags
from ml_collections import config_flags

from bigjax import training
from bigjax.config import checks
from experiments import cli

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Folder for checkpoints, logs and results.')
_VERBOSE = flags.DEFINE_bool('verbose', False, 'Show tracebacks for user errors.')
_START_JOB = cli.define_job_flags()


def main(argv):
  def run():
    checks.check_config(_CONFIG.value)
    _START_JOB()
    cli.use_compilation_cache(_CONFIG.value)
    return training.run_training(_CONFIG.value, _WORKDIR.value)

  cli.run_trainer(argv, run, _VERBOSE.value)


if __name__ == '__main__':
  flags.mark_flags_as_required(['config', 'workdir'])
  app.run(main, flags_parser=cli.parse_flags)
