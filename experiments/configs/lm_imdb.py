"""An LSTM language model on IMDB's train and unlabelled reviews: ULMFiT's stage 1.

  python -m experiments.pretrain_embeddings --config=experiments/configs/lstm_imdb.py --workdir=runs/w2v_imdb
  python -m experiments.pretrain --config=experiments/configs/lm_imdb.py --workdir=runs/lm_imdb \
      --config.init.embeddings=runs/w2v_imdb

The first command learns skip-gram vectors on the same reviews (80 s); the language model
starts its (tied) embedding table from them and takes their tokenizer. In the same 12,000
windows that takes test perplexity from 137.3 to 107.6 (docs/pretraining.md); without
init.embeddings the model starts from scratch.

The encoder has lstm_imdb.py's sizes (300-dim embeddings, one 256-unit LSTM layer) and
its tokenizer (words and punctuation, 30k entries), so an IMDB classifier starts from it
leaf for leaf:

  python -m experiments.train --config=experiments/configs/lstm_imdb.py --workdir=runs/lstm_imdb_lm \
      --config.init.checkpoint=runs/lm_imdb

The 72,500 reviews are the classifier's train split (dev carved from it as the classifier
carves it, with the same seed) and the 50,000 unlabelled ones; never dev or test reviews.
The training budget is the 2-core CPU's: train.steps windows of 64 x 70 tokens (2.7 epochs),
a sampled softmax over 1,024 negatives (the full 30k softmax would be 90 % of every step),
full-softmax perplexity on 0.2 % of the reviews carved out for dev and as many for test
(docs/pretraining.md). 12,000 windows took 40 to 47 minutes on the 2-core VM on most days and
would take ~80 on its slowest: lower --config.train.steps to keep within 60 minutes there.
The LSTM's matmuls take bf16 operands; on a CPU without bf16 instructions (the run warns)
--config.model.lstm.dtype=float32 trains 1.24x faster (docs/RESULTS.md).
"""
import os

from experiments.configs import base


def get_config(arg: str = ''):
  c = base.get_config()
  c.data.path = os.path.join(base.SHARED_DATA, 'imdb', 'aclImdb_v1.tar.gz')
  c.data.tokenizer = 'wordpunct'
  c.data.vocab_size = 30000
  c.model.name = 'lstm_lm'
  c.model.embed_dim = 300
  c.model.dropout = 0.25
  c.model.lstm.hidden_dim = 256
  c.model.lstm.forget_bias = 1.0
  c.model.lstm.tie_embeddings = True
  c.model.lstm.token_dropout = 0.1
  c.model.lstm.dtype = 'bfloat16'
  c.lm.window = 70
  c.lm.negatives = 1024
  c.lm.heldout_fraction = 0.002
  c.optim.learning_rate = 2e-3
  c.optim.schedule = 'cosine'
  c.optim.warmup_steps = 200
  c.optim.clip_norm = 0.25  # AWD-LSTM's.
  c.train.batch_size = 64
  c.train.steps = 12000
  c.train.eval_batch_size = 64
  c.train.log_every_steps = 100
  c.checkpoint.every_steps = 1500
  return base.variant(c, arg)
