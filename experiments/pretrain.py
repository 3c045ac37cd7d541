"""`python -m experiments.pretrain` is `python -m experiments.train` (one training command for
classifiers, language models and masked language models; the config's model.name decides), kept
for the commands written with it:

  python -m experiments.pretrain --config=experiments/configs/lm_imdb.py --workdir=runs/lm_imdb
  python -m experiments.pretrain --config=experiments/configs/mlm_imdb.py --workdir=runs/mlm_imdb
"""
from absl import app
from absl import flags

from experiments import cli
from experiments import train

if __name__ == '__main__':
  flags.mark_flags_as_required(['config', 'workdir'])
  app.run(train.main, flags_parser=cli.parse_flags)
