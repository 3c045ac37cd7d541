"""Wiring shared by the entry points: config -> data, tokenizer, model, optimizer, driver.

Config stops here: everything below receives plain arguments.
"""
import dataclasses
import difflib
import errno
import functools
import hashlib
import json
import logging
import os
import runpy
import sys
import tempfile
from typing import Any, Callable, Optional

from absl import flags
import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from bigjax import hostmem
from bigjax import metrics as metrics_lib
from bigjax.data import batching, sources
from bigjax.data.tokenizer import KINDS, TRUNCATIONS, SubwordTokenizer, train_tokenizer
from bigjax.errors import BigjaxError, ConfigError
from bigjax.models import registry
from bigjax.pretrain import embeddings as embeddings_lib
from bigjax.train import loop, optim, parallel
from bigjax.train import step as step_lib


def initialize_distributed(*, coordinator_address: str = '', num_processes: int = 0, process_id: int = -1,
                           auto: bool = False, cpu_devices: int = 0) -> None:
  """Starts a multi-process JAX job (one process per host) before anything touches devices.

  Explicit: coordinator_address, num_processes and process_id, as on a GPU cluster.
  auto: jax.distributed.initialize() finds them itself on TPU pods, SLURM and Open MPI.
  cpu_devices: fake CPU devices per process (tests, or a laptop trying out a pod layout).
  """
  if cpu_devices:
    jax.config.update('jax_num_cpu_devices', cpu_devices)
  if coordinator_address or num_processes > 1:
    if not (coordinator_address and num_processes > 1 and 0 <= process_id < num_processes):
      raise ConfigError('a multi-process job needs --coordinator_address=HOST:PORT, --num_processes=N (> 1) '
                        f'and --process_id in [0, N); got {coordinator_address!r}, {num_processes}, {process_id}')
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id)
  elif auto:
    jax.distributed.initialize()
  if jax.process_count() > 1:
    logging.info('process %d of %d; %d local of %d devices', jax.process_index(), jax.process_count(),
                 jax.local_device_count(), jax.device_count())


def prepare_workdir(workdir: str) -> str:
  if not workdir:
    raise ConfigError('--workdir is required: the folder for checkpoints, logs and results')
  workdir = os.path.abspath(workdir)
  try:
    os.makedirs(workdir, exist_ok=True)
    # A probe of its own per process: with one shared name, another host's process could
    # delete it in between (seen in the 2-process test).
    with tempfile.NamedTemporaryFile(dir=workdir, prefix='.write_test_') as probe:
      probe.write(b'ok')
      probe.flush()
  except OSError as e:
    raise ConfigError(f'--workdir={workdir} cannot be written ({e.strerror}); choose a writable folder') from e
  return workdir


def load_data(c: ml_collections.ConfigDict, seed: int) -> sources.TextDataset:
  return sources.load_text_dataset(
      path=c.path, name=c.name, encoding=c.encoding, data_dir=c.data_dir, dev_fraction=c.dev_fraction,
      test_fraction=c.test_fraction, seed=seed, text_column=c.text_column, label_column=c.label_column,
      num_classes=c.num_classes)


def tokenizer_for(workdir: str, train_texts, train_fn, save: bool = True) -> SubwordTokenizer:
  """The run's tokenizer: reloaded from the workdir, so a resumed run encodes identically.

  Training is deterministic, so every process of a multi-host job trains the same one
  and only the first saves it.
  """
  if os.path.exists(os.path.join(workdir, 'tokenizer.json')):
    return SubwordTokenizer.load(workdir)
  tokenizer = train_fn(train_texts)
  if save:
    tokenizer.save(workdir)
  return tokenizer


def data_fingerprint(dataset: sources.TextDataset) -> str:
  digest = hashlib.sha256()
  for name in ('train', 'dev', 'test'):
    split = dataset.splits[name]
    digest.update(f'{name}:{len(split.texts)}:'.encode())
    digest.update(np.asarray(split.labels, np.int32).tobytes())
  return digest.hexdigest()[:16]


COMPUTE_DTYPES = {'float32': None, 'bfloat16': jnp.bfloat16}  # None: the params' dtype.


def build_model(c: ml_collections.ConfigDict, vocab_size: int, num_classes: int):
  common = dict(vocab_size=vocab_size, num_classes=num_classes, embed_dim=c.embed_dim, dropout=c.dropout)
  if c.name == 'mlp':
    return registry.build_model('mlp', hidden_dims=(c.hidden_dim,) * c.num_layers, word_dropout=c.word_dropout,
                                bigram_buckets=c.bigram_buckets, **common)
  if c.name == 'lstm':
    return registry.build_model('lstm', hidden_dim=c.hidden_dim, num_layers=c.num_layers,
                                bidirectional=c.bidirectional, forget_bias=c.forget_bias,
                                dtype=COMPUTE_DTYPES[c.dtype], **common)
  raise ConfigError(f'model.name={c.name!r} is unknown; use one of {sorted(registry.MODELS)}')


@dataclasses.dataclass(frozen=True)
class Experiment:
  """Everything a config resolves to, before any training: what the loop and the benchmark use."""
  dataset: sources.TextDataset  # The texts and labels, before tokenization.
  tokenizer: SubwordTokenizer
  fns: Any  # ModelFns
  tx: Any  # optax.GradientTransformation
  driver: parallel.Driver
  train_batches: batching.TrainBatches
  dev: list
  test: list
  init_state: Callable[[], step_lib.TrainState]
  total_steps: int
  checkpoint_every_steps: int
  derived: dict
  compatibility: dict


def build_experiment(config: ml_collections.ConfigDict, workdir: Optional[str]) -> Experiment:
  """Data, tokenizer, model, optimizer and driver from a config. workdir=None keeps nothing on disk.

  Entry points run check_config first, so bad choices fail before any data is read.
  """
  dataset = load_data(config.data, config.seed)
  logging.info('data: %s', dataset.description)
  train_fn = tokenizer_trainer(config.data)
  pretrained = None
  if config.init.embeddings:
    # The vectors are rows of the pretraining run's vocabulary: its tokenizer is this run's.
    pretrained_tokenizer, *pretrained = embeddings_lib.load(config.init.embeddings)
    train_fn = lambda texts: pretrained_tokenizer
  if workdir is None:
    tokenizer = train_fn(dataset.splits['train'].texts)
  else:
    tokenizer = tokenizer_for(workdir, dataset.splits['train'].texts, train_fn, save=jax.process_index() == 0)
  boundaries = batching.bucket_boundaries(config.data.max_len, config.data.smallest_bucket,
                                          config.data.bucket_growth)

  def encode(name):
    split = dataset.splits[name]
    rows = tokenizer.encode(split.texts, config.data.max_len, config.data.keep)
    return batching.EncodedSplit.from_rows(rows, split.labels)

  train, dev, test = encode('train'), encode('dev'), encode('test')
  accum_steps = config.train.accum_steps
  if accum_steps < 1 or config.train.batch_size < accum_steps:
    raise ConfigError(f'train.accum_steps={accum_steps} must be between 1 and train.batch_size')
  # Each process builds only its rows of every global batch (see batching.Sharding).
  sharding = batching.Sharding(jax.process_index(), jax.process_count(),
                               parallel.rows_multiple(config.parallel, accum_steps))
  train_batches = batching.TrainBatches(train, config.train.batch_size, boundaries, config.seed, sharding)
  stats = train_batches.epoch_stats()
  logging.info('train: %d examples, %d batches/epoch, %d shapes, %.1f%% padding; vocab %d; classes %d',
               len(train), train_batches.steps_per_epoch, stats['distinct_shapes'],
               100 * stats['padding_fraction'], tokenizer.vocab_size, dataset.num_classes)

  steps_per_epoch = train_batches.steps_per_epoch
  total_steps = config.train.steps or config.train.epochs * steps_per_epoch
  every = config.checkpoint.every_steps or steps_per_epoch
  model = build_model(config.model, tokenizer.vocab_size, dataset.num_classes)
  fns = registry.model_fns(model)
  schedule = optim.make_schedule(config.optim.schedule, config.optim.learning_rate, total_steps,
                                 config.optim.warmup_steps)
  tx = optim.make_optimizer(config.optim.name, schedule, weight_decay=config.optim.weight_decay,
                            clip_norm=config.optim.clip_norm)
  driver = parallel.make_driver(
      config.parallel, loss_fn=functools.partial(step_lib.classification_loss, fns), tx=tx,
      eval_fn=functools.partial(step_lib.eval_step, model_fns=fns, num_classes=dataset.num_classes),
      accum_steps=accum_steps)
  example = train_batches.batch(0)
  derived = {'vocab_size': tokenizer.vocab_size, 'num_classes': dataset.num_classes, 'total_steps': total_steps,
             'steps_per_epoch': steps_per_epoch, 'checkpoint_every_steps': every,
             'data_fingerprint': data_fingerprint(dataset), 'train_batches': stats,
             'bucket_boundaries': list(boundaries), 'devices': jax.device_count(),
             'processes': jax.process_count(), 'global_batch_rows': sharding.rows(config.train.batch_size)[0]}
  # What a checkpoint must agree on to be resumed into this run.
  compatibility = {'model': config.model.to_dict(), 'vocab_size': tokenizer.vocab_size,
                   'num_classes': dataset.num_classes, 'data': derived['data_fingerprint'],
                   'batch_size': config.train.batch_size, 'seed': config.seed}
  return Experiment(
      dataset=dataset, tokenizer=tokenizer, fns=fns, tx=tx, driver=driver, train_batches=train_batches,
      dev=batching.eval_batches(dev, config.train.eval_batch_size, boundaries, sharding),
      test=batching.eval_batches(test, config.train.eval_batch_size, boundaries, sharding),
      init_state=functools.partial(initial_state, fns, tx, jax.random.PRNGKey(config.seed), example, pretrained),
      total_steps=total_steps, checkpoint_every_steps=every, derived=derived, compatibility=compatibility)


def tokenizer_trainer(c: ml_collections.ConfigDict) -> Callable[[list[str]], SubwordTokenizer]:
  return functools.partial(train_tokenizer, vocab_size=c.vocab_size, kind=c.tokenizer, min_frequency=c.min_frequency)


def initial_state(fns, tx, key, example, pretrained=None) -> step_lib.TrainState:
  """A fresh train state; with pretrained = (vectors, found), its embedding rows start from them."""
  state = step_lib.create_train_state(fns, tx, key, example)
  if pretrained is None:
    return state
  params = flax.core.unfreeze(state.params)
  module, name = registry.EMBEDDING_TABLE
  params[module][name] = jax.numpy.asarray(embeddings_lib.init_embedding_table(params[module][name], *pretrained))
  return state.replace(params=params, opt_state=tx.init(params))


def run_training(config: ml_collections.ConfigDict, workdir: str, stop_after_steps=None) -> dict:
  """Trains (resuming from workdir), then tests the best-dev checkpoint; returns results.json's content."""
  workdir = prepare_workdir(workdir)
  exp = build_experiment(config, workdir)
  is_main = jax.process_index() == 0
  writer = metrics_lib.MetricWriter(workdir, enabled=is_main)
  try:
    return loop.train_and_evaluate(
        driver=exp.driver, init_state=exp.init_state, batch_at=exp.train_batches.batch, dev=exp.dev, test=exp.test,
        schedule=loop.Schedule(exp.total_steps, exp.checkpoint_every_steps, config.train.log_every_steps,
                               config.checkpoint.keep_latest, config.checkpoint.keep_best),
        workdir=workdir, meta={'compatibility': exp.compatibility, 'config': config.to_dict()}, writer=writer,
        stop_after_steps=stop_after_steps, nan_policy=config.train.nan_policy,
        test_at_checkpoints=config.train.test_at_checkpoints,
        # config.json only once the workdir's checkpoints are known to be this run's.
        on_start=lambda: is_main and write_run_info(workdir, config, exp.derived))
  finally:
    writer.close()


def write_run_info(workdir: str, config, derived: dict) -> None:
  versions = {}
  for package in ('jax', 'flax', 'optax', 'orbax.checkpoint', 'tokenizers', 'numpy'):
    try:
      versions[package] = __import__(package, fromlist=['__version__']).__version__
    except (ImportError, AttributeError):
      pass
  info = {'config': json.loads(config.to_json()), 'derived': derived, 'argv': sys.argv, 'versions': versions}
  with open(os.path.join(workdir, 'config.json'), 'w', encoding='utf-8') as f:
    json.dump(info, f, indent=2)


class _DropLibraryChatter(logging.Filter):
  """Orbax logs each save and restore step at INFO through absl; keep its warnings only.

  Its errors (with tracebacks) only with --verbose: a failed save reaches the user as
  one CheckpointError that names the step and the cause.
  """

  def __init__(self, verbose: bool = False):
    super().__init__()
    self.verbose = verbose

  def filter(self, record):
    if record.name == 'asyncio' and not self.verbose:
      # A failed save's other writes, left unawaited on Orbax's event loop, are logged when
      # collected ("Task exception was never retrieved"), after the one real error.
      message = record.getMessage()
      return not ('was never retrieved' in message and ('orbax' in message or 'OCDBT' in message))
    if '/orbax/' not in record.pathname:
      return True
    return record.levelno >= logging.WARNING and (self.verbose or record.levelno < logging.ERROR)


_KEEP_FREED_MEMORY = flags.DEFINE_bool(
    'keep_freed_memory', True, 'Keep freed host memory in the process (glibc mallopt) so that XLA:CPU steps do not '
    'page-fault their temporaries in again each step. See bigjax/hostmem.py.')


def setup_host() -> bool:
  """Process-wide settings, before JAX allocates anything big. Returns whether freed memory is kept."""
  if not _KEEP_FREED_MEMORY.value:
    return False
  kept = hostmem.keep_freed_memory()
  if not kept:
    logging.info('keep_freed_memory: not a glibc system; left the allocator as it is')
  return kept


def quiet_library_logs(verbose: bool = False):
  for handler in logging.getLogger().handlers + logging.getLogger('absl').handlers:
    handler.addFilter(_DropLibraryChatter(verbose))
  if not verbose:
    previous = sys.unraisablehook

    def drop_closed_loop_noise(unraisable):
      # When one write of a save fails (a full disk), TensorStore completes the others on
      # Orbax's already closed event loop: a traceback each, after the real error.
      if not (unraisable.exc_type is RuntimeError and 'Event loop is closed' in str(unraisable.exc_value)):
        previous(unraisable)

    sys.unraisablehook = drop_closed_loop_noise


def config_value(config: ml_collections.ConfigDict, key: str):
  """config['section.name'] (or config['name'])."""
  for part in key.split('.'):
    config = config[part]
  return config


def check_config(config: ml_collections.ConfigDict) -> None:
  """Values that would otherwise fail deep inside with a traceback (or train nonsense)."""
  at_least = {'train.steps': 0, 'train.epochs': 0, 'train.batch_size': 1, 'train.eval_batch_size': 1,
              'train.log_every_steps': 1, 'model.embed_dim': 1, 'optim.warmup_steps': 0,
              'checkpoint.every_steps': 0, 'checkpoint.keep_latest': 1, 'checkpoint.keep_best': 0,
              'model.bigram_buckets': 0}
  for key, low in at_least.items():
    if config_value(config, key) < low:
      raise ConfigError(f'{key}={config_value(config, key)} must be >= {low}')
  if not (config.train.steps or config.train.epochs):
    raise ConfigError('train.steps=0 and train.epochs=0: nothing to train; set one of them')
  for key in ('model.dropout', 'model.word_dropout'):
    if not 0.0 <= config_value(config, key) < 1.0:
      raise ConfigError(f'{key}={config_value(config, key)} must be in [0, 1)')
  if config.train.nan_policy not in loop.NAN_POLICIES:
    raise ConfigError(f'train.nan_policy={config.train.nan_policy!r} is unknown; use one of {loop.NAN_POLICIES}')
  # Choices checked here too, so that a typo fails before minutes of data loading.
  for key, choices in (('model.name', sorted(registry.MODELS)), ('parallel', parallel.MODES),
                       ('data.tokenizer', KINDS), ('data.keep', TRUNCATIONS),
                       ('model.dtype', tuple(COMPUTE_DTYPES))):
    value = config_value(config, key)
    if value not in choices:
      raise ConfigError(f'{key}={value!r} is unknown; use one of {tuple(choices)}')
  if config.model.dtype != 'float32' and config.model.name != 'lstm':
    raise ConfigError(f'model.dtype={config.model.dtype!r} is for the lstm only; '
                      f'model.name={config.model.name!r} computes in float32')
  for key in ('window', 'negative', 'epochs', 'min_count'):
    if config.pretrain[key] < 1:
      raise ConfigError(f'pretrain.{key}={config.pretrain[key]} must be >= 1')
  if config.init.embeddings:
    embeddings_lib.check_exists(config.init.embeddings)
  try:  # optim names its choices itself.
    optim.make_optimizer(config.optim.name, optim.make_schedule(config.optim.schedule, 1.0, 10))
  except ValueError as e:
    raise ConfigError(f'optim: {e}') from None


def _bad_override(argv: list[str]) -> Optional[str]:
  """The first --config.KEY=... whose KEY the config file lacks, as a message; None if all exist."""
  path = next((a.split('=', 1)[1] for a in argv if a.startswith('--config=')), None)
  try:
    config = runpy.run_path(path.split(':')[0])['get_config']()
  except Exception:  # pylint: disable=broad-except
    return None  # The config file itself is the problem; absl's message names it.
  for arg in argv:
    if not arg.startswith('--config.'):
      continue
    key = arg[len('--config.'):].split('=', 1)[0]
    node, parts = config, key.split('.')
    for depth, part in enumerate(parts):
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        where = '.'.join(parts[:depth]) or 'the config'
        keys = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
        close = difflib.get_close_matches(part, keys, n=1)
        hint = f'did you mean {".".join(parts[:depth] + close)}? ' if close else ''
        return (f'--config.{key}: {where} has no key {part!r}; {hint}keys there: {", ".join(keys)} (see '
                f'{path})')
      node = node[part]
  return None


def parse_flags(argv: list[str]):
  """absl's flag parser, but a bad flag, config file or override is one line and exit status 2."""
  try:
    rest = flags.FLAGS(argv)
    if 'config' in flags.FLAGS and flags.FLAGS['config'].value is not None:
      flags.FLAGS['config'].value.get('seed')  # config_flags raises a config file's load error on first use.
    return rest
  except Exception as e:  # config_flags raises flags.Error, OSError, SyntaxError, KeyError, AttributeError.
    if any(a in ('--verbose', '--verbose=true', '--verbose=1') for a in argv):
      raise
    if isinstance(e, flags.Error):
      message = f'{e} (--helpfull lists the flags; config keys and their types are in the --config file)'
    elif isinstance(e, (KeyError, AttributeError)) and _bad_override(argv):
      message = _bad_override(argv)
    elif isinstance(e, SyntaxError):
      message = f'{e.filename}:{e.lineno}: {e.msg} (a syntax error in the --config file)'
    else:  # e.g. a missing --config file: config_flags' message says which and where it looked.
      cause = e.__cause__ or e
      lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
      message = f'cannot load --config: {lines[-1] if lines else type(cause).__name__}'
    print(f'error: {message}', file=sys.stderr)
    sys.exit(2)


def exit_on_user_error(main_fn, verbose: bool):
  """Runs main_fn; a user's error becomes one clear line and exit status 2 (traceback with --verbose).

  User errors: a BigjaxError, a full disk, and an interrupt before a checkpoint could be
  saved (exit status 130, as shells report Ctrl-C).
  """
  try:
    return main_fn()
  except BigjaxError as e:
    if verbose:
      raise
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  except OSError as e:
    if verbose or e.errno not in (errno.ENOSPC, errno.EDQUOT):
      raise
    print(f'error: {e.filename or "writing"}: {e.strerror}; free some space (or move --workdir) and rerun the '
          'same command to resume from the last checkpoint', file=sys.stderr)
    sys.exit(2)
  except KeyboardInterrupt as e:
    if verbose:
      raise
    print(f'error: interrupted ({e or "SIGINT"}) before a checkpoint was saved; rerun the same command to resume '
          'from the last checkpoint', file=sys.stderr)
    sys.exit(130)
