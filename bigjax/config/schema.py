"""The config every run starts from: each key with its default and, for numbers, its valid range.

`get_config()` returns the defaults as an ml_collections.ConfigDict; `ranges()` the valid range
of every numeric key, declared beside its default; bigjax.config.checks checks a config against
them before any data is read. A model's own settings live in its section (model.mlp.*,
model.lstm.*), declared by the model module itself (bigjax/models/spec.py), beside the shared
model.embed_dim and model.dropout.

Config files (experiments/configs/*.py) start from get_config() and take an optional argument
after a colon: `--config=experiments/configs/mlp_sst2.py:tiny` is the same recipe at toy sizes
(a few steps, small widths), for tests and for trying out a pipeline (`variant`).
"""
import ml_collections

from bigjax.models import registry

# 'KEY': (low, high, closed): a numeric key's valid range; None is unbounded; closed says whether
# the bounds themselves are valid ('both', 'low' ([low, high)), 'high' or 'neither').
Ranges = dict


def _section(ranges: Ranges, prefix: str, /, **fields) -> ml_collections.ConfigDict:
  """A config section from KEY=DEFAULT or KEY=(DEFAULT, RANGE), RANGE = (low, high[, closed]);
  the ranges go into `ranges` under 'PREFIX.KEY'."""
  section = ml_collections.ConfigDict()
  for key, value in fields.items():
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], tuple):
      value, valid = value
      low, high, *closed = valid
      ranges[f'{prefix}.{key}'] = (low, high, closed[0] if closed else 'both')
    section[key] = value
  return section


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """The defaults (in `arg`'s variant: '' or 'tiny')."""
  return variant(_declare({}), arg)


def ranges() -> Ranges:
  """Every numeric key's valid range, as the defaults declare them."""
  found = {}
  _declare(found)
  return found


def _declare(ranges: Ranges) -> ml_collections.ConfigDict:  # pylint: disable=redefined-outer-name
  """The default config, its numeric keys' ranges written into `ranges`."""
  section = lambda prefix, **fields: _section(ranges, prefix, **fields)
  c = ml_collections.ConfigDict()
  c.seed = 0
  ranges['seed'] = (0, None, 'both')
  c.parallel = 'none'  # none | pmap | mesh
  # parallel='mesh': a data x fsdp x tensor device mesh (bigjax/train/sharding.py). Batch rows
  # split over data and fsdp; parameters and optimizer state split over fsdp (each device keeps
  # 1/fsdp) and tensor (heads, MLP, vocabulary). -1: the devices the other axes leave.
  c.mesh = section(
      'mesh',
      data=-1,
      fsdp=1,
      tensor=1,
      # LOGICAL=MESH_AXIS,...: where the parameters' logical axes (the Transformer's) are split.
      rules='embed=fsdp,vocab=tensor,heads=tensor,mlp=tensor',
      # Parameters without logical names (the MLP's, the LSTM's) split over fsdp along their
      # largest axis it divides, if they hold at least this many numbers.
      fsdp_min_size=(1 << 16, (1, None)),
  )

  c.data = section(
      'data',
      path='',  # Local file, folder or archive; empty: tensorflow-datasets by data.name.
      name='',  # tfds name, e.g. imdb_reviews, glue/sst2.
      data_dir='',  # tfds data_dir (a gs:// path on pods); empty: tfds' default.
      encoding='utf-8',
      text_column='text',  # For TSV/CSV/JSONL.
      label_column='label',
      # 0: from the data (each class 0..K-1 must occur in train); >0 declares them.
      num_classes=(0, (0, None)),
      dev_fraction=(0.1, (0.0, 1.0, 'low')),  # Carved from train when the data has no dev split.
      # The seed of that carving, apart from `seed`: runs with other seeds share the split (and the
      # cached tokenized data), as a comparison of seeds needs.
      split_seed=(0, (0, None)),
      test_fraction=(0.1, (0.0, 1.0, 'low')),  # Carved when it has no test split either.
      # Longest line of a local file, in MiB: only a guard against reading a file that is not
      # one example per line into memory; long texts are cut to max_len tokens anyway.
      max_line_mb=(64, (1, None)),
      # error | skip (as pandas' on_bad_lines): an example whose text is empty (a label alone)
      # stops the run, or is dropped and counted in the data description logged at start-up.
      on_bad_lines='error',
      # plain | ptb: Penn Treebank tokens (SST-2's files: `do n't`, `-lrb-`), joined back into
      # plain text as it is read, so that training sees text as served text and other corpora
      # write it (a pretrained tokenizer splits `don't` as `don ' t`, the treebank's `do n ' t`).
      text_form='plain',
      # > 0: train on a seeded, class-balanced subset of this many training examples (a label
      # budget; dev and test are untouched).
      train_limit=(0, (0, None)),
      tokenizer='bpe',  # bpe (subwords) | word (space-separated words, as the PyTorch peers) | wordpunct.
      # A tokenizer.json (or a folder holding one) used as it is instead of training one on the train
      # split: a public tokenizer, which DP-SGD runs need (a pretrained model's, say).
      tokenizer_file='',
      vocab_size=(16000, (8, None)),  # Vocabulary trained on the train split.
      min_frequency=(2, (1, None)),  # Rarer pieces are not given an id.
      max_len=(64, (1, None)),  # Tokens kept per text.
      # first | last | ends (the first quarter and last three quarters): which max_len tokens of
      # a longer text are kept (a pretrained tokenizer's special tokens included in max_len).
      keep='first',
      # forward | backward: the order a model reads each text's tokens in (after truncation).
      # backward is ULMFiT's backward language model and classifier; experiments.evaluate
      # averages a forward and a backward run's probabilities (an ensemble of both directions).
      direction='forward',
      # Batch widths: smallest_bucket * bucket_growth^k (rounded), up to max_len.
      smallest_bucket=(16, (1, None)),
      bucket_growth=(2.0, (1.0, None, 'high')),  # Smaller (> 1): less padding, more compiled shapes.
  )

  c.model = section(
      'model',
      name='mlp',  # A registered model (bigjax.models.registry): mlp | lstm | transformer | lstm_lm | transformer_mlm.
      embed_dim=(300, (1, None)),
      dropout=(0.5, (0.0, 1.0, 'low')),
  )
  # Each model's own settings, as its module declares them (bigjax/models/spec.py).
  for name, spec in registry.sections().items():
    c.model[name] = section(f'model.{name}', **spec.fields)

  c.optim = section(
      'optim',
      name='adam',  # adam | adamw | sgd
      learning_rate=(1e-3, (0.0, None, 'high')),
      # constant | cosine | linear | slanted_triangular (ULMFiT's: rises for warmup_steps, or a tenth
      # of the run, to learning_rate, then falls to learning_rate / 32).
      schedule='constant',
      warmup_steps=(0, (0, None)),
      # The warmup as a fraction of the run's steps instead (BERT's warmup ratio): it follows the
      # run's length, data.train_limit's included. Set one of the two.
      warmup_fraction=(0.0, (0.0, 1.0, 'low')),
      weight_decay=(0.0, (0.0, None)),  # adamw only
      # adamw: a pattern of parameter paths left out of the weight decay ('bias|norm': BERT's
      # LayerNorms and biases); '': every parameter decays.
      no_decay='',
      clip_norm=(0.0, (0.0, None)),  # 0: no clipping
      # Parameter groups, by path pattern: 'REGEX=MULTIPLIER,...' scales a group's learning rate
      # ('embedding=0.1'), 'REGEX=freeze' freezes it; the first pattern that matches a leaf's
      # path ('layers_0_0/kernel_i') wins; the rest train at the base rate. 'REGEX=MULT@E' keeps the
      # group frozen until epoch E (ULMFiT's gradual unfreezing), then trains it at MULT x the rate.
      param_groups='',
      # Row-sparse embedding updates (bigjax/train/sparse.py): a pattern of the embedding tables'
      # paths ('embedding' for all of them) whose gradients are the rows a batch looked up, updated
      # by sparse_rule (lazy_adam | adagrad | sgd) at sparse_learning_rate (0: learning_rate) on
      # the same schedule; every other row and its optimizer state is left untouched. '': dense.
      sparse_embeddings='',
      sparse_rule='lazy_adam',
      sparse_learning_rate=(0.0, (0.0, None)),
  )

  c.train = section(
      'train',
      steps=(0, (0, None)),  # Total optimizer steps; 0: train.epochs epochs.
      epochs=(20, (0, None)),
      batch_size=(64, (1, None)),  # Global batch: split over devices (and processes).
      # Micro-batches per step: same update, 1/accum_steps of the activation memory.
      accum_steps=(1, (1, None)),
      eval_batch_size=(256, (1, None)),
      log_every_steps=(50, (1, None)),
      # A step with a NaN/Inf loss or gradient is never applied; 'stop': the run stops with an
      # error naming it; 'skip': it is dropped with a warning and training goes on, until
      # max_skipped_in_a_row steps in a row were dropped.
      nan_policy='stop',
      max_skipped_in_a_row=(10, (1, None)),
      # Also evaluate test at each checkpoint (a test-accuracy curve over time, for
      # benchmarks.time_to_accuracy). The checkpoint tested at the end is still chosen on dev.
      test_at_checkpoints=False,
      # Compile the other batch shapes' steps on a background thread while the first train
      # (one driver: parallel='none'); the steps find them compiled (docs/results/sparse_embeddings.md).
      compile_ahead=True,
  )

  # Differential privacy (DP-SGD, bigjax/privacy; docs/guides/privacy.md): each step Poisson-samples
  # the training examples (train.batch_size of them on average), clips each one's gradient to
  # clip_norm, adds Gaussian noise of noise_multiplier * clip_norm to their sum, and the accountant
  # counts the (epsilon, delta) spent. Classifiers only; the tokenizer must be public
  # (data.tokenizer_file, or init.pretrained's).
  c.dp = section(
      'dp',
      enabled=False,
      clip_norm=(1.0, (0.0, None, 'neither')),
      # Set one: the noise multiplier, or the epsilon to spend by the last step (the noise is then
      # the smallest the accountant finds for it, computed before training).
      noise_multiplier=(0.0, (0.0, None)),
      target_epsilon=(0.0, (0.0, None)),
      delta=(0.0, (0.0, 1.0, 'low')),  # 0: 1 / n^1.1 for n training examples; must be below 1 / n.
      accountant='pld',  # pld (tightest; counts the batch's truncation) | rdp (Opacus's default)
      # The padded batch's rows: a step that draws more examples keeps a random subset of this many
      # (the accountant counts it). 0: enough that this happens with probability 1e-3 over the run
      # (pld) or a tenth of delta (rdp).
      max_rows=(0, (0, None)),
      # Where the parameters start (init.checkpoint, init.embeddings) must not have seen the private
      # examples: set this to say so, and the report records that you did.
      public_init=False,
  )

  # The privacy audit (bigjax/privacy/audit.py, experiments.audit): canaries, random token sequences
  # with random labels, each added `canary_repeats` times to the training set, whose exposure the
  # audit measures after training (for private and non-private runs alike). 0: none inserted.
  c.audit = section(
      'audit',
      canaries=(0, (0, None)),
      canary_repeats=(1, (1, None)),
      canary_length=(16, (1, None)),
      seed=(0, (0, None)),
  )

  # Start-up work done once, kept in cache.dir ('': $BIGJAX_CACHE_DIR, else ~/.cache/bigjax):
  # the trained tokenizer and the tokenized splits, keyed by everything they depend on (the data
  # files' paths, sizes and times, how they are read and split, the tokenizer, data.max_len and
  # data.keep), and JAX's persistent cache of compiled steps.
  c.cache = section(
      'cache',
      dir='',
      data=True,
      compilation=True,
  )

  # Where a run's parameters start. Order: this workdir's own checkpoint (resume), else
  # init.checkpoint, else init.pretrained, else init.embeddings, else from scratch.
  c.init = section(
      'init',
      # Another run's folder: its best parameters start this run (leaves with the same path,
      # shape and dtype are copied), and its tokenizer is this run's.
      checkpoint='',
      # With init.checkpoint: 'REGEX,...' of parameter paths that keep their fresh values
      # ('^head/' for a new output layer when the number of classes differs).
      drop='',
      # A folder written by experiments.pretrain_embeddings: its word vectors start the
      # embedding table, and its tokenizer (which the vectors are rows of) replaces training one.
      embeddings='',
      # A Hugging Face model folder (BERT, RoBERTa or DistilBERT: config.json, model.safetensors,
      # tokenizer.json; bigjax.huggingface): its config.json fixes model.embed_dim and the
      # architecture keys of model.transformer, its weights start the run (a classification
      # head it lacks starts fresh; init.drop keeps others fresh), its tokenizer.json is the run's.
      pretrained='',
      # With init.pretrained: 'REGEX,...' of the folder's tensor names left out (searched in each
      # name without the base model's prefix); '': pretraining heads and position_ids buffers
      # (bigjax.huggingface.weights.DEFAULT_UNUSED), and RoBERTa's pooler. Any other tensor the
      # model has no place for is an error.
      pretrained_unused='',
  )

  # experiments.pretrain: a language model (model.name=lstm_lm) on the text of the train and
  # unlabelled splits (never dev or test), cut into truncated-BPTT windows (bigjax/data/streams.py).
  c.lm = section(
      'lm',
      window=(70, (2, None)),  # BPTT length: tokens per window; the state is carried across windows.
      heldout_fraction=(0.01, (0.0, 0.5, 'neither')),  # Documents carved for dev and, as many again, test.
      eval_context=(64, (0, None)),  # Tokens an evaluation window reads before the ones it scores.
      # > 0: train with a sampled softmax over this many negatives per step (unigram ** sampling_power);
      # 0: the full softmax. Evaluation always uses the full softmax.
      negatives=(0, (0, None)),
      sampling_power=(0.75, (0.0, 1.0)),
  )

  # Masked-LM pretraining (model.name=transformer_mlm, BERT's): the text a language model reads,
  # its documents carved into dev and test by lm.heldout_fraction and cut into rows of at most
  # data.max_len tokens (bigjax/data/masking.py).
  c.mlm = section(
      'mlm',
      # The share of each row's tokens predicted (at least one a row); of those, 80 % read as the
      # mask token, 10 % as a random token, 10 % as themselves.
      mask_rate=(0.15, (0.0, 1.0, 'neither')),
      # Prediction slots per row (BERT's max_predictions_per_seq); a row with more chosen tokens
      # keeps this many. 0: as many as a row of data.max_len tokens can have.
      max_predictions=(0, (0, None)),
  )

  # experiments.pretrain_embeddings: skip-gram word vectors over the train split, the
  # unlabelled split if the data has one, and the train/unlabelled text of corpus_path.
  c.pretrain = section(
      'pretrain',
      corpus_path='',  # More raw text (any format data.path takes); '' for none.
      corpus_encoding='utf-8',
      window=(5, (1, None)),
      negative=(5, (1, None)),  # Negative samples per word.
      epochs=(1, (1, None)),
      min_count=(3, (1, None)),  # Rarer tokens keep a random vector.
  )

  # Compression (bigjax/compress, experiments.compress). Pruning and distillation happen
  # while training, so any training run can use them; quantization makes a new run from one.
  # Magnitude pruning to prune.target_sparsity (0: off) along Zhu & Gupta's cubic ramp.
  c.prune = section(
      'prune',
      target_sparsity=(0.0, (0.0, 1.0, 'low')),
      initial_sparsity=(0.0, (0.0, 1.0, 'low')),
      begin_step=(0, (0, None)),
      end_step=(0, (0, None)),  # 0: at 2/3 of the run's steps, leaving the last third to recover.
      every_steps=(0, (0, None)),  # Masks recomputed every N steps on the ramp; 0: 20 times over it.
      # layer: each pruned leaf to the target sparsity; global: one threshold over all of them, which
      # removes whole small-scale layers first (the MLP's N(0, 1) embeddings dwarf its dense kernels).
      scope='layer',
      # Pattern of the pruned leaves' paths (matrices only): every kernel and token table (nn.Embed's
      # .../embedding), not the Transformer's position and token-type tables, added to every token as a bias is.
      include='kernel|embedding/embedding',
  )
  # Distillation: the run in distill.teacher (its tokenizer is this run's) gives soft targets.
  c.distill = section(
      'distill',
      teacher='',
      temperature=(2.0, (0.0, None, 'neither')),
      alpha=(0.5, (0.0, 1.0)),  # Weight of the soft (teacher) term; 1 - alpha: the labels'.
  )
  # experiments.compress --method=quantize: int8 weights (see bigjax/compress/quantize.py).
  c.quantize = section(
      'quantize',
      mode='int8',  # int8 (int8 matmuls) | weights (int8 storage, float32 compute)
      activations='dynamic',  # dynamic (a scale per row at run time) | static (calibrated; MLP only)
      calibration_examples=(1024, (1, None)),  # Training examples for static activation scales.
  )

  c.checkpoint = section(
      'checkpoint',
      every_steps=(0, (0, None)),  # Save (and evaluate dev) every N steps; 0: once per epoch.
      keep_latest=(2, (1, None)),  # Full states, to resume from.
      keep_best=(1, (1, None)),  # Parameters only, of the best dev steps.
  )
  return c


def variant(c: ml_collections.ConfigDict, arg: str) -> ml_collections.ConfigDict:
  """The config's variant named by `arg`: '' as it is, 'tiny' at toy sizes (same recipe)."""
  if arg == 'tiny':
    c.data.vocab_size, c.data.max_len = min(c.data.vocab_size, 400), min(c.data.max_len, 32)
    # Two length buckets at most (16 and 32 tokens): a compiled shape costs seconds, an LSTM's
    # several (lstm_sst2's 7 buckets made its tiny run 40 s, nearly all compiling).
    c.data.smallest_bucket, c.data.bucket_growth = min(16, c.data.max_len), max(c.data.bucket_growth, 2.0)
    c.model.embed_dim, c.model.mlp.hidden_dim, c.model.lstm.hidden_dim = 16, 16, 16
    c.model.mlp.bigram_buckets = min(c.model.mlp.bigram_buckets, 64)
    c.train.steps, c.train.batch_size, c.train.log_every_steps = 12, 16, 4
    c.checkpoint.every_steps = 6
    c.pretrain.corpus_path = ''
    c.lm.window, c.lm.eval_context = min(c.lm.window, 16), min(c.lm.eval_context, 8)
    c.lm.negatives, c.lm.heldout_fraction = min(c.lm.negatives, 32), max(c.lm.heldout_fraction, 0.05)
  elif arg:
    raise ValueError(f'unknown config variant {arg!r}; known: tiny')
  return c


def merged(saved: dict) -> ml_collections.ConfigDict:
  """A config an earlier run saved (its config.json), with today's defaults for keys it predates."""
  c = get_config()

  def update(node: ml_collections.ConfigDict, values: dict):
    for key, value in values.items():
      if key in node and isinstance(node[key], ml_collections.ConfigDict) and isinstance(value, dict):
        update(node[key], value)
      else:
        node[key] = value

  update(c, saved)
  return c
