"""ULMFiT on SST-2: the classifier from the language model finetuned on SST-2's text.

  python -m experiments.pretrain --config=experiments/configs/lm_imdb.py --workdir=runs/lm_imdb
  python -m experiments.pretrain --config=experiments/configs/lm_sst2.py --workdir=runs/lm_sst2 \
      --config.init.checkpoint=runs/lm_imdb
  python -m experiments.train --config=experiments/configs/ulmfit_sst2.py --workdir=runs/ulmfit_sst2 \
      --config.init.checkpoint=runs/lm_sst2

The recipe of ulmfit_imdb.py (concat pooling, gradual unfreezing one group per epoch,
discriminative rates, slanted triangular schedule) on lstm_sst2.py's data settings.
"""
from experiments.configs import base
from experiments.configs import lstm_sst2


def get_config(arg: str = ''):
  c = lstm_sst2.get_config()
  c.init.drop = '^head/'
  c.model.embed_dim = 300
  c.model.dropout = 0.4
  c.model.lstm.hidden_dim = 256
  c.model.lstm.forget_bias = 1.0
  c.model.lstm.pooling = 'concat'
  c.pretrain.corpus_path = ''
  c.optim.learning_rate = 4e-3
  c.optim.schedule = 'slanted_triangular'
  c.optim.clip_norm = 1.0
  c.optim.param_groups = '^layers_=0.385@1,^embedding=0.148@2'
  c.train.epochs = 8
  return base.variant(c, arg)
