"""MLP (deep averaging network) on SST-2 sentences.

python -m experiments.train --config=experiments/configs/mlp_sst2.py --workdir=runs/mlp_sst2
"""
import os

from experiments.configs import base


def get_config():
  c = base.get_config()
  c.data.path = os.path.join(base.SHARED_DATA, 'sst2')
  c.model.name = 'mlp'
  return c
