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
from experiments.configs import mlp_imdb
from experiments.configs.minilm_sst2 import MINILM


def get_config(arg: str = ''):
  c = mlp_imdb.get_config()
  c.data.tokenizer_file = MINILM  # Public: never trained on the private reviews.
  c.data.max_len = 512
  c.data.bucket_growth = 2.0
  c.optim.sparse_embeddings = ''  # Noise reaches every row: the updates are dense.
  c.model.embed_dim = 16  # Small, as dp_mlp_sst2.py's: fewer parameters share the noise.
  c.model.mlp.num_layers = 0
  # No hashed bigrams: under DP every parameter takes noise (dp_mlp_sst2.py's recipe, chosen on
  # SST-2's dev set; docs/results/privacy.md).
  c.model.mlp.bigram_buckets = 0
  c.model.mlp.word_dropout = 0.0
  c.model.dropout = 0.0
  c.optim.name = 'adam'
  c.optim.learning_rate = 3e-2
  c.train.batch_size = 1024  # The expected Poisson batch: large batches divide the noise among more examples.
  c.train.epochs = 30
  c.checkpoint.every_steps = 66
  c.dp.enabled = True
  c.dp.clip_norm = 1.0
  c.dp.target_epsilon = 8.0
  return base.variant(c, arg)
