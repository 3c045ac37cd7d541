"""The classifier from the IMDB language model finetuned on SST-2's text (ULMFiT's stages 1-2).

  # The IMDB language model (ulmfit_imdb.py's docstring gives its word-vector start), then stage 2:
  python -m experiments.pretrain --config=experiments/configs/lm_imdb.py --workdir=runs/lm_imdb \
      --config.init.embeddings=runs/w2v_imdb
  python -m experiments.pretrain --config=experiments/configs/lm_sst2.py --workdir=runs/lm_sst2 \
      --config.init.checkpoint=runs/lm_imdb
  python -m experiments.train --config=experiments/configs/ulmfit_sst2.py --workdir=runs/ulmfit_sst2 \
      --config.init.checkpoint=runs/lm_sst2
  # Both directions (ulmfit_imdb.py's docstring makes runs/lm_imdb_bwd), then the pair's ensemble:
  python -m experiments.pretrain --config=experiments/configs/lm_sst2.py --workdir=runs/lm_sst2_bwd \
      --config.init.checkpoint=runs/lm_imdb_bwd --config.data.direction=backward
  python -m experiments.train --config=experiments/configs/ulmfit_sst2.py --workdir=runs/ulmfit_sst2_bwd \
      --config.init.checkpoint=runs/lm_sst2_bwd --config.data.direction=backward
  python -m experiments.evaluate --workdir=runs/ulmfit_sst2,runs/ulmfit_sst2_bwd --data=../shared/data/sst2/test.txt

lstm_sst2.py's recipe (Adam at a constant 1e-3, dropout 0.5, 20 epochs, the best dev epoch
kept) on the finetuned encoder, with ULMFiT's concat pooling. ULMFiT's classifier schedule
(ulmfit_imdb.py's) did worse on SST-2's dev; it is a few overrides away:
  --config.optim.schedule=slanted_triangular --config.optim.learning_rate=4e-3 --config.optim.clip_norm=1
  --config.optim.param_groups='^layers_=0.385@1,^embedding=0.148@2' --config.train.epochs=8
  --config.model.dropout=0.4

Expected: 86.93 +- 0.60 % test over 3 seeds from the word-vector-started lm_imdb (docs/results/pretraining.md).
"""
from experiments.configs import base
from experiments.configs import lstm_sst2


def get_config(arg: str = ''):
  c = lstm_sst2.get_config()
  c.init.drop = '^head/'
  c.model.embed_dim = 300
  c.model.lstm.hidden_dim = 256
  c.model.lstm.pooling = 'concat'
  c.pretrain.corpus_path = ''
  return base.variant(c, arg)
