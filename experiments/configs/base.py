"""Defaults every experiment config starts from. Configs are data: no JAX imports here.

Keys other tooling relies on: data.path, data.encoding, seed, train.steps,
train.batch_size, model.embed_dim, model.hidden_dim, model.dropout,
checkpoint.every_steps, parallel.
"""
import os

import ml_collections

# ../shared/data beside the project root, wherever the command is run from.
SHARED_DATA = os.path.normpath(os.path.join(os.path.dirname(__file__), '..', '..', '..', 'shared', 'data'))


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.parallel = 'none'  # none | pmap | mesh

  c.data = ml_collections.ConfigDict()
  c.data.path = ''  # Local file, folder or archive; empty: tensorflow-datasets by data.name.
  c.data.name = ''  # tfds name, e.g. imdb_reviews, glue/sst2.
  c.data.data_dir = ''  # tfds data_dir (a gs:// path on pods); empty: tfds' default.
  c.data.encoding = 'utf-8'
  c.data.text_column = 'text'  # For TSV/CSV/JSONL.
  c.data.label_column = 'label'
  c.data.num_classes = 0  # 0: from the data.
  c.data.dev_fraction = 0.1  # Carved from train when the data has no dev split.
  c.data.test_fraction = 0.1  # Carved when it has no test split either.
  c.data.tokenizer = 'bpe'  # bpe (subwords) | word (space-separated words, as the PyTorch peers) | wordpunct.
  c.data.vocab_size = 16000  # Vocabulary trained on the train split.
  c.data.min_frequency = 2  # Rarer pieces are not given an id.
  c.data.max_len = 64  # Tokens kept per text.
  c.data.keep = 'first'  # first | last: which max_len tokens of a longer text are kept.
  c.data.smallest_bucket = 16  # Batch widths: smallest_bucket * bucket_growth^k (rounded), up to max_len.
  c.data.bucket_growth = 2.0  # Smaller: less padding, more compiled shapes.

  c.model = ml_collections.ConfigDict()
  c.model.name = 'mlp'  # mlp | lstm
  c.model.embed_dim = 300
  c.model.hidden_dim = 256
  c.model.num_layers = 1
  c.model.bidirectional = False  # lstm only
  c.model.forget_bias = 0.0  # lstm only: initial forget-gate bias (1.0 helps long texts).
  # lstm only: bfloat16 runs the LSTM's matmuls on bf16 operands with f32 sums (parameters,
  # gradients, gates and cell state stay f32). Fast where the hardware has bf16 dot
  # instructions (AVX512-BF16/AMX CPUs, GPUs, TPUs); elsewhere XLA must emulate them, likely
  # slower than float32 (not measured: this project's CPU has them).
  c.model.dtype = 'float32'  # float32 | bfloat16
  c.model.dropout = 0.5
  c.model.word_dropout = 0.0  # mlp only: drop whole tokens from the average while training.
  c.model.bigram_buckets = 0  # mlp only: >0 adds hashed token-pair embeddings to the average.

  c.optim = ml_collections.ConfigDict()
  c.optim.name = 'adam'  # adam | adamw | sgd
  c.optim.learning_rate = 1e-3
  c.optim.schedule = 'constant'  # constant | cosine | linear
  c.optim.warmup_steps = 0
  c.optim.weight_decay = 0.0  # adamw only
  c.optim.clip_norm = 0.0  # 0: no clipping

  c.train = ml_collections.ConfigDict()
  c.train.steps = 0  # Total optimizer steps; 0: train.epochs epochs.
  c.train.epochs = 20
  c.train.batch_size = 64  # Global batch: split over devices (and processes).
  c.train.accum_steps = 1  # Micro-batches per step: same update, 1/accum_steps of the activation memory.
  c.train.eval_batch_size = 256
  c.train.log_every_steps = 50
  # A step with a NaN/Inf loss or gradient is never applied; 'stop': the run stops with an
  # error naming it; 'skip': it is dropped with a warning and training goes on.
  c.train.nan_policy = 'stop'
  # Also evaluate test at each checkpoint (a test-accuracy curve over time, for
  # experiments.time_to_accuracy). The checkpoint tested at the end is still chosen on dev.
  c.train.test_at_checkpoints = False

  # Where a run's parameters start: from scratch, or from pretraining.
  c.init = ml_collections.ConfigDict()
  # A folder written by experiments.pretrain_embeddings: its word vectors start the embedding
  # table, and its tokenizer (which the vectors are rows of) replaces training one.
  c.init.embeddings = ''

  # experiments.pretrain_embeddings: skip-gram word vectors over the train split, the
  # unlabelled split if the data has one, and the train/unlabelled text of corpus_path.
  c.pretrain = ml_collections.ConfigDict()
  c.pretrain.corpus_path = ''  # More raw text (any format data.path takes); '' for none.
  c.pretrain.corpus_encoding = 'utf-8'
  c.pretrain.window = 5
  c.pretrain.negative = 5  # Negative samples per word.
  c.pretrain.epochs = 1
  c.pretrain.min_count = 3  # Rarer tokens keep a random vector.

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every_steps = 0  # Save (and evaluate dev) every N steps; 0: once per epoch.
  c.checkpoint.keep_latest = 2
  c.checkpoint.keep_best = 1
  return c
