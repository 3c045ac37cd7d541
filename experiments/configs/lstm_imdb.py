"""LSTM on IMDB reviews (the aclImdb archive; dev carved from train).

python -m experiments.train --config=experiments/configs/lstm_imdb.py --workdir=runs/lstm_imdb
"""
import os

from experiments.configs import base


def get_config():
  c = base.get_config()
  c.data.path = os.path.join(base.SHARED_DATA, 'imdb', 'aclImdb_v1.tar.gz')
  c.data.max_len = 256
  c.data.vocab_size = 32000
  c.model.name = 'lstm'
  c.train.epochs = 5
  return c
