"""A small BERT-style Transformer classifier on IMDB reviews, finetuned from the masked language
model of mlm_imdb.py or trained from scratch.

  python -m experiments.pretrain --config=experiments/configs/mlm_imdb.py --workdir=runs/mlm_imdb
  python -m experiments.train --config=experiments/configs/transformer_imdb.py --workdir=runs/transformer_imdb \
      --config.init.checkpoint=runs/mlm_imdb
  # From scratch, and from the pretrained encoder with 1,000 labels:
  python -m experiments.train --config=experiments/configs/transformer_imdb.py --workdir=runs/transformer_imdb_scratch
  python -m experiments.train --config=experiments/configs/transformer_imdb.py --workdir=runs/transformer_imdb_1k \
      --config.init.checkpoint=runs/mlm_imdb --config.data.train_limit=1000 --config.train.epochs=20 \
      --config.optim.warmup_steps=60

From init.checkpoint the encoder (embeddings, position table, every layer) and the tokenizer are
the masked LM's; the pooler and the head are new (init.drop), and the MLM head is left behind.
The first position's state is pooled ('cls': bigjax adds no [CLS] token, and the first token's
state attends to the whole text). Each layer learns at 0.8 times the rate of the layer above it
(layer-wise rate decay, Sun et al. 2019; ELECTRA's for small models): the top layer, the pooler
and the head at the base rate, the embeddings at 0.8^4 of it, so finetuning moves the lower,
more general layers least. The recipe is otherwise BERT's finetuning one: AdamW, a linear warmup
over a tenth of the run then a linear decay to 0, weight decay 0.01, gradients clipped at norm 1,
dropout 0.1, 3 epochs. Without init.checkpoint the same config trains from scratch, its
tokenizer trained on the training reviews with mlm_imdb.py's settings (the rate decay stays;
--config.optim.param_groups= trains every layer at one rate).

Reviews are cut to their last 128 tokens, the masked LM's row length (its position table has
128 rows): a review's verdict is mostly at its end (lstm_imdb.py keeps the last tokens too).
"""
from experiments.configs import base
from experiments.configs import mlm_imdb


def get_config(arg: str = ''):
  c = base.get_config()
  pretraining = mlm_imdb.get_config()
  c.data.path = pretraining.data.path
  c.data.tokenizer, c.data.vocab_size = pretraining.data.tokenizer, pretraining.data.vocab_size
  c.data.max_len = pretraining.data.max_len
  c.data.keep = 'last'
  c.data.smallest_bucket = pretraining.data.smallest_bucket
  c.model.name = 'transformer'
  c.model.embed_dim = pretraining.model.embed_dim
  c.model.dropout = 0.1
  # The masked LM's encoder, exactly: init.checkpoint copies a leaf only where shapes agree.
  c.model.transformer = pretraining.model.transformer
  c.model.transformer.pooling = 'cls'
  c.init.drop = '^head/,^pooler_dense/'  # New for the task; the masked LM has neither.
  c.optim.name = 'adamw'
  c.optim.learning_rate = 2e-4
  c.optim.schedule = 'linear'
  c.optim.weight_decay = 0.01
  c.optim.no_decay = 'bias|norm'  # BERT's: LayerNorms and biases do not decay.
  c.optim.clip_norm = 1.0
  # Layer-wise rate decay (0.8 a layer, top layer at the base rate); first match wins.
  c.optim.param_groups = ('^layers_2/=0.8,^layers_1/=0.64,^layers_0/=0.512,'
                          '^(embedding|position_embedding|type_embedding)=0.4096')
  c.train.batch_size = 32
  c.train.epochs = 3  # 704 steps an epoch (22,500 training reviews at batch 32): 2,112 steps.
  c.optim.warmup_steps = 210  # About a tenth of the run.
  c.train.eval_batch_size = 128
  c = base.variant(c, arg)
  if arg == 'tiny':  # mlm_imdb.py:tiny's encoder, so the tiny classifier starts from the tiny masked LM.
    tiny = mlm_imdb.get_config('tiny')
    c.model.transformer = tiny.model.transformer
    c.model.transformer.pooling = 'cls'
    c.data.max_len, c.data.smallest_bucket = tiny.data.max_len, tiny.data.smallest_bucket
    c.optim.param_groups = '^layers_0/=0.8,^(embedding|position_embedding|type_embedding)=0.64'
    c.optim.warmup_steps = 2
    c.train.eval_batch_size = 64
  return c
