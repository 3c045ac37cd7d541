"""LSTM on IMDB reviews (the aclImdb archive; dev carved from train), its word vectors
pretrained on the archive's train and 50,000 unlabelled reviews (pretrain -> finetune).

  python -m experiments.pretrain_embeddings --config=experiments/configs/lstm_imdb.py --workdir=runs/w2v_imdb
  python -m experiments.train --config=experiments/configs/lstm_imdb.py --workdir=runs/lstm_imdb \
      --config.init.embeddings=runs/w2v_imdb

Without init.embeddings the same config trains from scratch.

Expected: 88.32 % test with the word vectors, seed 0 (docs/results/RESULTS.md, "IMDB LSTM").
"""
import os

from experiments.configs import base


def get_config(arg: str = ''):
  c = base.get_config()
  c.data.path = os.path.join(base.SHARED_DATA, 'imdb', 'aclImdb_v1.tar.gz')
  c.data.tokenizer = 'wordpunct'
  c.data.vocab_size = 30000
  # The classifier reads the state after the last token, and a review's verdict is mostly
  # at its end: keep each review's last 256 tokens (the median review has ~230).
  c.data.max_len = 256
  c.data.keep = 'last'
  c.data.bucket_growth = 1.25  # Less padding for an LSTM, whose work is proportional to width.
  c.model.name = 'lstm'
  c.model.lstm.forget_bias = 1.0  # Starts the forget gate open: signal survives hundreds of steps.
  c.optim.learning_rate = 2e-3
  c.optim.clip_norm = 1.0  # Long recurrences: occasional large gradients.
  # With pretrained vectors dev accuracy peaks by epoch 7-8; 10 epochs take 36 minutes on the
  # idle 2-core development machine, 38 with the pretraining (docs/results/RESULTS.md).
  c.train.epochs = 10
  return base.variant(c, arg)
