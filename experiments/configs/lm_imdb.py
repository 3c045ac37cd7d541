"""An LSTM language model on IMDB's train and unlabelled reviews: ULMFiT's stage 1.

  python -m experiments.pretrain_embeddings --config=experiments/configs/lstm_imdb.py --workdir=runs/w2v_imdb
  python -m experiments.pretrain --config=experiments/configs/lm_imdb.py --workdir=runs/lm_imdb \
      --config.init.embeddings=runs/w2v_imdb

The language model starts its (tied) embedding table from the word vectors and takes their
tokenizer; without init.embeddings it starts from scratch. Its encoder has lstm_imdb.py's
sizes and tokenizer, so an IMDB classifier starts from it leaf for leaf (ulmfit_imdb.py).
The budget is train.steps windows of 64 x 70 tokens: lower it on a slower CPU; on a CPU without
bf16 instructions (the run warns) add --config.model.lstm.dtype=float32.

Expected: test perplexity 107.6 from the word vectors, 137.3 without (docs/results/pretraining.md).
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
