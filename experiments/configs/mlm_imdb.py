"""A small BERT-style encoder pretrained as a masked language model on IMDB's train and unlabelled
reviews (Devlin et al. 2019), to finetune a classifier from (transformer_imdb.py).

  python -m experiments.pretrain --config=experiments/configs/mlm_imdb.py --workdir=runs/mlm_imdb
  python -m experiments.train --config=experiments/configs/transformer_imdb.py --workdir=runs/transformer_imdb \
      --config.init.checkpoint=runs/mlm_imdb

The reviews (the classifiers' train split, dev carved out of it as theirs is, and the 50,000
unlabelled ones) are tokenized into BPE subwords, each review cut into rows of at most 128
tokens; 15 % of a row's tokens are predicted (80 % of them read as <mask>, 10 % as a random
token, 10 % as themselves). The encoder is transformer_imdb.py's: 4 layers of width 256, 4
heads, post-LN as BERT. The recipe is BERT's at a small size: AdamW, a linear warmup over a
tenth of the run then a linear decay to 0, weight decay 0.01, gradients clipped at norm 1,
dropout 0.1. The budget is train.steps: 960 steps (a third of an epoch).

Measured: 30 min 23 s launch to results on the idle 2-core AMD EPYC development machine, dev
masked-token perplexity 1,023 (accuracy 12.3 %), still on the frequent-token plateau; a
classifier finetuned from it did worse than one from scratch (docs/results/transformer.md,
"Masked-LM pretraining on IMDB"). It needs far more tokens than this budget gives.
The ':tiny' variant (2 layers of width 16, rows of 32 tokens) is what the tests train.
"""
import os

from experiments.configs import base


def get_config(arg: str = ''):
  c = base.get_config()
  c.data.path = os.path.join(base.SHARED_DATA, 'imdb', 'aclImdb_v1.tar.gz')
  c.data.tokenizer = 'bpe'
  c.data.vocab_size = 16000
  c.data.max_len = 128  # Tokens per row: a review is cut into rows of this many.
  # Only a review's last row is shorter than 128 tokens: three widths (32, 64, 128) pad little.
  c.data.smallest_bucket = 32
  c.model.name = 'transformer_mlm'
  c.model.embed_dim = 256  # The hidden size.
  c.model.dropout = 0.1
  t = c.model.transformer
  t.num_layers, t.num_heads, t.intermediate_dim = 4, 4, 1024
  t.max_positions = 128  # = data.max_len: no rows of the position table that no batch reads.
  c.lm.heldout_fraction = 0.002  # 145 of the 72,500 reviews each for dev and test (~380 rows each).
  c.optim.name = 'adamw'
  c.optim.learning_rate = 5e-4
  c.optim.schedule = 'linear'
  c.optim.weight_decay = 0.01
  c.optim.no_decay = 'bias|norm'  # BERT's: LayerNorms and biases do not decay.
  c.optim.clip_norm = 1.0
  c.train.batch_size = 64
  c.train.steps = 960  # 3,024 batches an epoch (193,500 rows).
  c.optim.warmup_steps = 96  # A tenth of the run.
  c.train.eval_batch_size = 128
  c.train.log_every_steps = 40
  c.checkpoint.every_steps = 240
  c = base.variant(c, arg)
  if arg == 'tiny':  # variant sets model.embed_dim = 16: sizes that fit it (16 / 2 heads).
    t.num_layers, t.num_heads, t.intermediate_dim = 2, 2, 32
    t.max_positions = c.data.max_len
    c.data.smallest_bucket = c.data.max_len  # One batch shape: one compile.
    c.train.eval_batch_size = 64
    c.optim.warmup_steps = 2
  return c
