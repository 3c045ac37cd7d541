"""LSTM on SST-2 sentences.

python -m experiments.train --config=experiments/configs/lstm_sst2.py --workdir=runs/lstm_sst2
"""
import os

from experiments.configs import base


def get_config():
  c = base.get_config()
  c.data.path = os.path.join(base.SHARED_DATA, 'sst2')
  c.model.name = 'lstm'
  return c
