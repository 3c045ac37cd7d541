"""LSTM on SST-2 sentences, its word vectors pretrained on IMDB reviews (pretrain -> finetune).

  python -m experiments.pretrain_embeddings --config=experiments/configs/lstm_sst2.py --workdir=runs/w2v_sst2
  python -m experiments.train --config=experiments/configs/lstm_sst2.py --workdir=runs/lstm_sst2 \
      --config.init.embeddings=runs/w2v_sst2

Without init.embeddings the same config trains from scratch.

Expected: 84.04 +- 1.14 % test over 3 seeds with the word vectors (docs/results/RESULTS.md, "SST-2 LSTM").
"""
import os

from experiments.configs import base


def get_config(arg: str = ''):
  c = base.get_config()
  c.data.path = os.path.join(base.SHARED_DATA, 'sst2')
  # Words and punctuation as separate tokens: SST-2's tokenization ("it 's", "n't") and raw
  # IMDB text then meet on the same pieces, and every training word keeps its own id.
  c.data.tokenizer = 'wordpunct'
  c.data.vocab_size = 30000
  c.data.min_frequency = 1
  c.model.name = 'lstm'
  # Finer buckets, from 8 tokens (a third of SST-2's sentences are shorter than 16): padding
  # 34% (16, x2.0) -> 22% (16, x1.25) -> 13% here, for 10 compiled shapes; an LSTM step's work
  # is proportional to its width, so real tokens/s rise with it (docs/results/RESULTS.md). The MLP's
  # step hardly depends on the width, so it keeps the defaults.
  c.data.smallest_bucket = 8
  c.data.bucket_growth = 1.15
  # bf16 matmul operands, f32 sums: the same test accuracy over 3 seeds (84.04 % against
  # 84.13 % in f32) and 1.2-1.6x the train tokens/s on a CPU with bf16 instructions
  # (docs/results/RESULTS.md). Without them float32 is 1.37x faster (the run warns): set it there.
  c.model.lstm.dtype = 'bfloat16'
  # Word vectors for SST-2's vocabulary, learned from IMDB's train and unlabelled reviews
  # (72,500, never its test) and SST-2's own train split.
  c.pretrain.corpus_path = os.path.join(base.SHARED_DATA, 'imdb', 'aclImdb_v1.tar.gz')
  return base.variant(c, arg)
