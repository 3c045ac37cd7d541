"""DP-SGD on SST-2 from the pretrained MiniLM (all-MiniLM-L6-v2, ../shared/models): its top layers
finetuned with per-example clipping and Gaussian noise (bigjax/privacy, docs/guides/privacy.md).

  python -m experiments.train --config=experiments/configs/dp_minilm_sst2.py --workdir=runs/dp_minilm_sst2_eps8 \
      --config.dp.target_epsilon=8
  # The same recipe without DP:
  python -m experiments.train --config=experiments/configs/dp_minilm_sst2.py --workdir=runs/dp_minilm_sst2_nodp \
      --config.dp.enabled=False

The pretrained model saw none of SST-2 (its tokenizer neither), so starting from it costs no
privacy. What trains: the last TOP_LAYERS encoder layers, the pooler and the new output layer;
the embeddings and the layers below are frozen (optim.param_groups' REGEX=freeze), so they take
no per-example gradient, no share of the clip and no noise, and the backward pass stops at the
first trained layer. Per-example gradients of the trained 3.7 M parameters are formed in
micro-batches of 64 rows (train.accum_steps), a few GiB; all 22.7 M at once would need ~90 MB an
example. The recipe follows Li et al. 2021 (large Poisson batches, a small clip, a higher
learning rate than non-private finetuning, no dropout). Figures: docs/results/privacy.md.
"""
from experiments.configs import base
from experiments.configs import minilm_sst2

TOP_LAYERS = 2  # Of the 6: layers_4 and layers_5 train.


def get_config(arg: str = ''):
  c = minilm_sst2.get_config()
  c.data.max_len = 64  # Every Poisson batch is as wide as its longest row: 64 cuts under 0.1 % of the sentences.
  c.model.dropout = 0.0  # Dropout's variance adds to the noise's.
  c.model.transformer.attention_dropout = 0.0
  frozen_layers = '|'.join(str(i) for i in range(6 - TOP_LAYERS))
  c.optim.param_groups = f'^(embedding|embedding_norm)/|^(position|type)_embedding$|^layers_({frozen_layers})/=freeze'
  c.optim.learning_rate = 5e-4
  c.optim.weight_decay = 0.0
  c.optim.clip_norm = 0.0  # The per-example clip bounds every gradient already.
  c.optim.warmup_steps = 0
  c.train.batch_size = 1024  # The expected Poisson batch.
  c.train.accum_steps = 16  # Per-example gradients 64 rows at a time.
  c.train.epochs = 5
  c.train.eval_batch_size = 256
  c.checkpoint.every_steps = 7  # About an epoch.
  c.dp.enabled = True
  c.dp.clip_norm = 0.1
  c.dp.target_epsilon = 8.0
  c = base.variant(c, arg)
  if arg == 'tiny':
    c.train.batch_size, c.train.accum_steps = 16, 2
  return c
