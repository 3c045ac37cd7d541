"""A small BERT-style Transformer encoder on SST-2 sentences, trained from scratch.

  python -m experiments.train --config=experiments/configs/transformer_sst2.py --workdir=runs/transformer_sst2

Expected: 79.74 ± 1.19 % test over 3 seeds, about 3 1/2 minutes a run on 2 CPU cores
(docs/results/RESULTS.md, "A Transformer from scratch on SST-2"): below the MLP, as a
Transformer trained from scratch on 6,920 sentences is. The ':tiny' variant (2 layers of
width 16) is what the tests train.

The recipe is BERT's fine-tuning one (Devlin et al. 2019) at a small size: AdamW, a linear
warmup then a linear decay to 0, weight decay 0.01, gradients clipped at norm 1, dropout 0.1.
"""
import os

from experiments.configs import base


def get_config(arg: str = ''):
  c = base.get_config()
  c.data.path = os.path.join(base.SHARED_DATA, 'sst2')
  # SST-2 comes tokenized and lowercased: whole words, as the MLP's config (docs/results/RESULTS.md).
  c.data.tokenizer = 'word'
  c.data.min_frequency = 1
  c.data.max_len = 64
  c.model.name = 'transformer'
  c.model.embed_dim = 256  # The hidden size.
  c.model.dropout = 0.1
  t = c.model.transformer
  t.num_layers, t.num_heads, t.intermediate_dim = 4, 4, 1024
  t.max_positions = 64  # = data.max_len: no rows of the position table that no batch reads.
  # From scratch nothing teaches the first position to summarize the text (BERT's [CLS] learns
  # it in pretraining): the mean over real tokens.
  t.pooling = 'mean'
  c.optim.name = 'adamw'
  c.optim.learning_rate = 5e-4
  c.optim.schedule = 'linear'
  c.optim.weight_decay = 0.01
  c.optim.clip_norm = 1.0
  c.train.epochs = 5  # 109 steps an epoch at batch 64 (6,920 sentences): 545 steps.
  c.optim.warmup_steps = 55  # About a tenth of the run.
  c = base.variant(c, arg)
  if arg == 'tiny':  # variant sets model.embed_dim = 16: sizes that fit it (16 / 2 heads).
    t.num_layers, t.num_heads, t.intermediate_dim = 2, 2, 32
    c.optim.warmup_steps = 2
  return c
