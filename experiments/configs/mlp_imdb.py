"""MLP (deep averaging network) on IMDB reviews (the aclImdb archive; dev carved from train).

python -m experiments.train --config=experiments/configs/mlp_imdb.py --workdir=runs/mlp_imdb
"""
import os

from experiments.configs import base


def get_config():
  c = base.get_config()
  c.data.path = os.path.join(base.SHARED_DATA, 'imdb', 'aclImdb_v1.tar.gz')
  c.data.max_len = 512
  c.data.vocab_size = 32000
  c.model.name = 'mlp'
  c.train.epochs = 10
  return c
