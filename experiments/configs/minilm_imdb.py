"""The pretrained MiniLM (all-MiniLM-L6-v2; ../shared/models) finetuned on IMDB reviews.

  python -m experiments.train --config=experiments/configs/minilm_imdb.py --workdir=runs/minilm_imdb

minilm_sst2.py's recipe (BERT's finetuning one) with what long reviews change: each review is
cut to 256 tokens, [CLS] and [SEP] included, keeping its first quarter and its last three
quarters (data.keep='ends': Sun et al. 2019's head + tail, whose 128 + 382 of 512 was their best
IMDB truncation; a review's verdict is mostly at its end); one epoch. That is the budget 2 CPU
cores allow: 704 steps over 22,500 training reviews (IMDB has no dev split, so a tenth of train
is carved off for it), then the 25,000 test reviews, about two hours here
(--config.data.max_len=128 roughly halves it and cost 1.5 points in one run each). On a GPU,
--config.data.max_len=512 --config.train.epochs=2 is the usual recipe. Dev is evaluated three
times, and the best of those checkpoints is tested. Results: docs/results/huggingface.md.
"""
import os

from experiments.configs import base
from experiments.configs import minilm_sst2


def get_config(arg: str = ''):
  c = minilm_sst2.get_config()
  c.data.path = os.path.join(base.SHARED_DATA, 'imdb', 'aclImdb_v1.tar.gz')
  c.data.text_form = 'plain'
  c.data.max_len = 256
  c.data.keep = 'ends'
  c.train.batch_size = 32
  c.train.epochs = 1
  c.optim.warmup_fraction = 0.1  # 70 steps of the 704; a tenth of any run, data.train_limit's too.
  c.checkpoint.every_steps = 235  # Dev three times (2,500 reviews each).
  c.train.eval_batch_size = 128
  c = base.variant(c, arg)
  if arg == 'tiny':
    c.optim.warmup_steps, c.optim.warmup_fraction = 2, 0.0
  return c
