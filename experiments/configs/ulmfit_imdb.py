"""ULMFiT on IMDB (Howard & Ruder 2018): the classifier from an LSTM language model's encoder.

  # 1. Word vectors, then the language model on IMDB's train and unlabelled reviews (lm_imdb.py):
  python -m experiments.pretrain_embeddings --config=experiments/configs/lstm_imdb.py --workdir=runs/w2v_imdb
  python -m experiments.pretrain --config=experiments/configs/lm_imdb.py --workdir=runs/lm_imdb \
      --config.init.embeddings=runs/w2v_imdb
  # 2. The classifier (ULMFiT's stage 2 is stage 1 here: the LM already read IMDB's training reviews):
  python -m experiments.train --config=experiments/configs/ulmfit_imdb.py --workdir=runs/ulmfit_imdb \
      --config.init.checkpoint=runs/lm_imdb
  # 3. Both directions: a backward LM, its classifier, and the two classifiers' ensemble:
  python -m experiments.pretrain --config=experiments/configs/lm_imdb.py --workdir=runs/lm_imdb_bwd \
      --config.init.embeddings=runs/w2v_imdb --config.data.direction=backward --config.train.steps=3000
  python -m experiments.train --config=experiments/configs/ulmfit_imdb.py --workdir=runs/ulmfit_imdb_bwd \
      --config.init.checkpoint=runs/lm_imdb_bwd --config.data.direction=backward
  python -m experiments.evaluate --workdir=runs/ulmfit_imdb,runs/ulmfit_imdb_bwd \
      --data=../shared/data/imdb/aclImdb_v1.tar.gz

The encoder and the tokenizer come from the language model; the head is new (init.drop=^head/)
and reads concat pooling (last state, max and mean). Gradual unfreezing with discriminative
rates (the head, then the LSTM at 1/2.6 of the rate, then the embeddings at 1/2.6^2, then
everything), under a slanted triangular schedule over 5 epochs; reviews are read whole
(data.max_len=4096; --config.data.max_len=512 is cheaper).

Expected: 92.28 +- 0.09 % test over 3 seeds from the word-vector-started lm_imdb
(docs/results/pretraining.md, "Whole reviews").
"""
from experiments.configs import base
from experiments.configs import lstm_imdb


def get_config(arg: str = ''):
  c = lstm_imdb.get_config()
  c.init.drop = '^head/'
  c.data.max_len = 4096  # Whole reviews: the longest IMDB review has 2,796 tokens.
  c.model.embed_dim = 300
  c.model.dropout = 0.4
  c.model.lstm.hidden_dim = 256
  c.model.lstm.pooling = 'concat'
  c.model.lstm.dtype = 'bfloat16'
  c.optim.learning_rate = 4e-3
  c.optim.schedule = 'slanted_triangular'
  c.optim.clip_norm = 1.0
  c.optim.param_groups = '^layers_=0.385@1,^embedding=0.148@2'
  c.train.epochs = 5
  c.checkpoint.every_steps = 0
  return base.variant(c, arg)
