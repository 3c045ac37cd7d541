"""ULMFiT's stage 2 for SST-2: the IMDB language model (lm_imdb.py) finetuned on SST-2's
training sentences, keeping its tokenizer.

  python -m experiments.pretrain --config=experiments/configs/lm_sst2.py --workdir=runs/lm_sst2 \
      --config.init.checkpoint=runs/lm_imdb
  python -m experiments.train --config=experiments/configs/ulmfit_sst2.py --workdir=runs/ulmfit_sst2 \
      --config.init.checkpoint=runs/lm_sst2

Expected: SST-2 test perplexity 101.4 from the word-vector-started lm_imdb (docs/results/pretraining.md).
"""
import os

from experiments.configs import base
from experiments.configs import lm_imdb


def get_config(arg: str = ''):
  c = lm_imdb.get_config()
  c.data.path = os.path.join(base.SHARED_DATA, 'sst2')
  c.lm.heldout_fraction = 0.02
  c.lm.window = 40
  c.optim.learning_rate = 1e-3
  c.optim.schedule = 'slanted_triangular'
  c.train.steps = 0
  c.train.epochs = 8
  c.train.log_every_steps = 20
  c.checkpoint.every_steps = 0
  return base.variant(c, arg)
