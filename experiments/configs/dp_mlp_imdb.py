"""DP-SGD on IMDB: a fastText-like MLP (averaged 16-dimensional word vectors, then the output layer) trained with
per-example clipping and Gaussian noise (bigjax/privacy, docs/guides/privacy.md).

  python -m experiments.train --config=experiments/configs/dp_mlp_imdb.py --workdir=runs/dp_mlp_imdb_eps8 \
      --config.dp.target_epsilon=8
  # The same recipe without DP, the baseline the private runs are compared with:
  python -m experiments.train --config=experiments/configs/dp_mlp_imdb.py --workdir=runs/dp_mlp_imdb_nodp \
      --config.dp.enabled=False

The tokenizer is public (the shared MiniLM's WordPiece vocabulary); each step Poisson-samples
1,024 of the 22,500 training reviews on average (2,500 are carved for dev). Figures:
docs/results/privacy.md.
"""
from experiments.configs import base
from experiments.configs import dp_mlp_sst2
from experiments.configs import mlp_imdb


def get_config(arg: str = ''):
  c = dp_mlp_sst2.private_mlp(mlp_imdb.get_config())  # SST-2's private recipe, chosen on its dev set.
  c.data.max_len = 512
  c.data.bucket_growth = 2.0
  c.train.epochs = 30
  c.checkpoint.every_steps = 66
  return base.variant(c, arg)
