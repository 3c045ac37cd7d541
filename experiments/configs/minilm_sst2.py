"""A pretrained MiniLM (all-MiniLM-L6-v2, a 6-layer BERT; ../shared/models) finetuned on SST-2.

  python -m experiments.train --config=experiments/configs/minilm_sst2.py --workdir=runs/minilm_sst2
  python -m experiments.export --workdir=runs/minilm_sst2 --out=exports/minilm_sst2_hf --format=huggingface

init.pretrained names a Hugging Face folder: its config.json fixes the encoder's sizes, its
weights start the run, its tokenizer.json is the run's (WordPiece, [CLS] text [SEP]); the
classification head (BERT's pooler on [CLS], then a dense layer) is new where the folder has
none. Any BERT, RoBERTa or DistilBERT folder works in its place (--config.init.pretrained=DIR).

The recipe is BERT's finetuning one (Devlin et al. 2019): AdamW at 5e-5 with weight decay 0.01
(not on biases and LayerNorms), a linear warmup over a tenth of the run then a linear decay to 0,
gradients clipped at norm 1, dropout 0.1, batch 32, 3 epochs, the best dev checkpoint tested.
SST-2's treebank tokens are joined back into plain text (data.text_form='ptb'), as the
pretrained tokenizer expects. Results: docs/results/huggingface.md.
"""
import os

from experiments.configs import base

MINILM = os.path.normpath(os.path.join(base.SHARED_DATA, '..', 'models', 'all-MiniLM-L6-v2'))


def get_config(arg: str = ''):
  c = base.get_config()
  c.data.path = os.path.join(base.SHARED_DATA, 'sst2')
  c.data.text_form = 'ptb'
  c.data.max_len = 128  # Longer than any SST-2 sentence; batches are as wide as their longest row's bucket.
  c.model.name = 'transformer'
  c.model.dropout = 0.1
  c.model.transformer.pooling = 'cls'  # [CLS], through BERT's pooler: what transformers' classifier reads.
  c.init.pretrained = MINILM
  c.optim.name = 'adamw'
  c.optim.learning_rate = 5e-5
  c.optim.schedule = 'linear'
  c.optim.weight_decay = 0.01
  c.optim.no_decay = 'bias|norm'
  c.optim.clip_norm = 1.0
  c.train.batch_size = 32
  c.train.epochs = 3  # 217 steps an epoch (6,920 sentences at batch 32): 651 steps.
  c.optim.warmup_fraction = 0.1  # 65 steps of the 651.
  c.checkpoint.every_steps = 109  # Dev twice an epoch: the best of 6 checkpoints is tested.
  c.train.eval_batch_size = 128
  c = base.variant(c, arg)
  if arg == 'tiny':  # The real encoder, for a few steps on short rows.
    c.optim.warmup_steps, c.optim.warmup_fraction = 2, 0.0
    c.train.eval_batch_size = 64
  return c
