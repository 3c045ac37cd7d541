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
import re
import runpy
import sys
import traceback
from typing import Any, Callable, Optional

from absl import flags
import jax
from jax.experimental.compilation_cache import compilation_cache
import ml_collections
import numpy as np
import optax

from bigjax import hostcpu
from bigjax import hostmem
from bigjax import metrics as metrics_lib
from bigjax import runs
from bigjax import transfer
from bigjax import workdirs
from bigjax.compress import distill as distill_lib
from bigjax.compress import pruning as pruning_lib
from bigjax.compress import quantize as quantize_lib
from bigjax.data import batching, prepare, sources, streams
from bigjax.data import cache as cache_lib
from bigjax.data.tokenizer import DIRECTIONS, EOS, KINDS, TRUNCATIONS, Tokenizer, train_tokenizer
from bigjax.errors import BigjaxError, ConfigError
from bigjax.models import registry
from bigjax.pretrain import embeddings as embeddings_lib
from bigjax.tasks.classification import Classification
from bigjax.tasks.language_model import LanguageModeling, sampling_distribution
from bigjax.train import loop, optim, parallel, sparse
from bigjax.train import step as step_lib
from experiments.configs import base as base_config


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


def define_job_flags() -> Callable[[], None]:
  """Defines the flags of a training job (multi-host and fake devices); returns the function that
  starts the job from them (initialize_distributed), to call before anything touches devices."""
  coordinator = flags.DEFINE_string('coordinator_address', '', 'HOST:PORT of process 0, for multi-process jobs.')
  num_processes = flags.DEFINE_integer('num_processes', 0, 'Processes in the job (multi-process only).')
  process_id = flags.DEFINE_integer('process_id', -1, 'This process, 0..num_processes-1.')
  auto = flags.DEFINE_bool('distributed', False, 'jax.distributed.initialize() with auto-detection (TPU pods, '
                           'SLURM, Open MPI).')
  cpu_devices = flags.DEFINE_integer('cpu_devices', 0, 'Fake CPU devices per process (0: JAX default).')
  return lambda: initialize_distributed(coordinator_address=coordinator.value, num_processes=num_processes.value,
                                        process_id=process_id.value, auto=auto.value, cpu_devices=cpu_devices.value)


def claim_workdir(config: ml_collections.ConfigDict, workdir: str, command: str) -> str:
  """The run folder, checked and created for `command` (bigjax.workdirs.claim) with the
  folders the config starts or learns from as its inputs."""
  return workdirs.claim(workdir, command, workdirs.config_inputs(config.to_dict()),
                        record=jax.process_index() == 0)


# What a data section's splits depend on, beside its source (tokenizer keys are separate).
_SPLIT_KEYS = ('encoding', 'text_column', 'label_column', 'num_classes', 'dev_fraction', 'test_fraction',
               'on_bad_lines', 'text_form')


def load_data(c: ml_collections.ConfigDict, seed: int) -> sources.TextDataset:
  """The data section's dataset. Dev and test are carved with data.split_seed (runs saved before
  that key existed carved with their seed, which is passed here)."""
  return sources.load_text_dataset(
      path=c.path, name=c.name, encoding=c.encoding, data_dir=c.data_dir, dev_fraction=c.dev_fraction,
      test_fraction=c.test_fraction, seed=c.get('split_seed', seed), text_column=c.text_column,
      label_column=c.label_column, num_classes=c.num_classes, max_line_mb=c.max_line_mb,
      on_bad_lines=c.on_bad_lines, text_form=c.get('text_form', 'plain'))


def reading_settings(trained, **overrides) -> dict:
  """How a trained run read its data (its data section's encoding, columns, line limits and
  text form, unless `overrides` say otherwise): the settings a labelled file is read with."""
  data = trained.config['data']
  settings = dict(encoding=data['encoding'], text_column=data['text_column'], label_column=data['label_column'],
                  max_line_mb=data['max_line_mb'], on_bad_lines=data['on_bad_lines'],
                  text_form=data.get('text_form', 'plain'))
  settings.update(overrides)
  return settings


def labelled_examples(trained, path: str, **overrides) -> sources.Split:
  """A labelled file's examples, read as a trained run read its data (reading_settings)."""
  return sources.load_labelled_examples(path, label_names=trained.label_names,
                                        **reading_settings(trained, **overrides))


def data_cache(config: ml_collections.ConfigDict) -> Optional[cache_lib.Cache]:
  if not config.cache.data:
    return None
  return cache_lib.Cache(config.cache.dir or cache_lib.default_root())


def prepare_classification_data(config: ml_collections.ConfigDict, workdir: Optional[str],
                                fixed_tokenizer: Optional[Tokenizer] = None) -> prepare.PreparedData:
  """The tokenizer and encoded splits of config.data, from the cache when they are in it."""
  c = config.data

  def load():
    dataset = load_data(c, config.seed)
    if c.train_limit:
      dataset = sources.with_train_limit(dataset, c.train_limit, config.seed)
    return dataset

  source = dict(cache_lib.source_identity(c.path, c.name, c.data_dir), split_seed=c.split_seed,
                **{key: c[key] for key in _SPLIT_KEYS})
  if c.train_limit:  # The subset is drawn with the run's seed.
    source.update(train_limit=c.train_limit, seed=config.seed)
  return prepare.prepare_data(
      load, source=source, tokenizer_settings={k: c[k] for k in ('tokenizer', 'vocab_size', 'min_frequency')},
      train_tokenizer=tokenizer_trainer(c), max_len=c.max_len, keep=c.keep, direction=c.direction,
      fixed_tokenizer=fixed_tokenizer, workdir=workdir, save=jax.process_index() == 0, cache=data_cache(config))


def build_model(c: ml_collections.ConfigDict, vocab_size: int, num_classes: int):
  warn_if_no_bf16_instructions(c)
  return registry.from_section(c.to_dict(), vocab_size=vocab_size, num_classes=num_classes)


def warn_if_no_bf16_instructions(c: ml_collections.ConfigDict) -> None:
  """A bf16 LSTM on a CPU without bf16 instructions trains slower than float32 (bigjax/hostcpu.py)."""
  bf16 = c[registry.own_section_name(c.name)].get('dtype') == 'bfloat16'
  if bf16 and jax.default_backend() == 'cpu' and hostcpu.native_bf16_matmuls() is False:
    logging.warning('model.lstm.dtype=bfloat16 on a CPU without bf16 instructions (no avx512_bf16, amx_bf16 '
                    'or bf16 in /proc/cpuinfo): its bf16 matmuls are slower than float32 ones, and float32 '
                    'trained 1.2-1.4x faster on such a CPU (docs/RESULTS.md); set '
                    '--config.model.lstm.dtype=float32 for speed')


def param_groups(c: ml_collections.ConfigDict) -> list:
  try:
    return optim.parse_param_groups(c.param_groups)
  except ValueError as e:
    raise ConfigError(f'optim.param_groups={c.param_groups!r}: {e}') from None


def drop_patterns(c: ml_collections.ConfigDict) -> list[str]:
  return [p.strip() for p in c.drop.split(',') if p.strip()]


@dataclasses.dataclass(frozen=True)
class Experiment:
  """Everything a config resolves to, before any training: what the loop and the benchmark use."""
  dataset: Optional[sources.TextDataset]  # The texts and labels; None where the encoded splits were cached.
  tokenizer: Tokenizer
  task: Any  # bigjax.tasks.Task
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
  constants: Any = None  # Passed to every train step, never trained: a teacher's parameters.


def _start(config: ml_collections.ConfigDict, teacher: Optional[runs.Run]):
  """(tokenizer or None, start(params) -> params or None, record, the source run's params or None)
  from init.checkpoint or init.embeddings.

  A distillation student reads the teacher's token ids, so the teacher's tokenizer is its own;
  it may start from a run with that same tokenizer (a pruning run distilled from its source).
  """
  _check_direction(config, 'distill.teacher', teacher)
  if config.init.checkpoint:
    source = runs.load_run(config.init.checkpoint)
    _check_direction(config, 'init.checkpoint', source)
    if teacher is not None and source.tokenizer.fingerprint() != teacher.tokenizer.fingerprint():
      raise ConfigError(f'init.checkpoint={config.init.checkpoint} and distill.teacher={config.distill.teacher} '
                        'have different tokenizers: a student reads the teacher\'s token ids, so it can start '
                        'only from a run with the teacher\'s tokenizer')
    drop = drop_patterns(config.init)
    name = f'the run in {source.workdir} (step {source.step})'
    start = lambda fresh: transfer.merge_params(fresh, source.params, drop=drop, source_name=name)[0]
    return source.tokenizer, start, {'checkpoint': source.workdir, 'step': source.step, 'drop': drop}, source.params
  if teacher is not None:
    return teacher.tokenizer, None, {}, None
  if config.init.embeddings:
    # The vectors are rows of the pretraining run's vocabulary: its tokenizer is this run's.
    tokenizer, vectors, found = embeddings_lib.load(config.init.embeddings)
    start = lambda fresh: transfer.with_word_vectors(fresh, vectors, found, embeddings_lib.init_embedding_table)
    return tokenizer, start, {'embeddings': os.path.abspath(config.init.embeddings)}, None
  return None, None, {}, None


def _check_direction(config: ml_collections.ConfigDict, flag: str, source: Optional[runs.Run]) -> None:
  """A run reads its tokens in the order of the run it starts from or learns from: an encoder
  trained backward reads a forward text as noise, and nothing else would say so."""
  if source is None:
    return
  theirs = source.config['data'].get('direction', 'forward')
  if theirs != config.data.direction:
    raise ConfigError(f'{flag}={source.workdir} reads its texts {theirs}, and this run reads them '
                      f'{config.data.direction}: set --config.data.direction={theirs}')


def _record_transfer(init_record: dict, fns, example, source_params) -> None:
  """With init.checkpoint: mismatches fail now, before any training, and what was copied is recorded."""
  if source_params is None:
    return
  abstract = jax.eval_shape(fns.init, jax.random.PRNGKey(0), example.token_ids, example.lengths)
  _, copy_record = transfer.merge_params(abstract, source_params, drop=init_record['drop'],
                                         source_name=init_record['checkpoint'])
  init_record.update(copy_record)


def build_experiment(config: ml_collections.ConfigDict, workdir: Optional[str]) -> Experiment:
  """Data, tokenizer, model, task, optimizer and driver from a config. workdir=None keeps nothing on disk.

  Entry points run check_config first, so bad choices fail before any data is read.
  """
  if config.model.name in LANGUAGE_MODELS:
    raise ConfigError(f'model.name={config.model.name!r} is a language model: train it with experiments.pretrain')
  teacher = runs.load_run(config.distill.teacher) if config.distill.teacher else None
  pretrained_tokenizer, start, init_record, source_params = _start(config, teacher)
  data = prepare_classification_data(config, workdir, pretrained_tokenizer)
  logging.info('data: %s', data.description)
  tokenizer, num_classes = data.tokenizer, data.num_classes
  boundaries = batching.bucket_boundaries(config.data.max_len, config.data.smallest_bucket,
                                          config.data.bucket_growth)
  train, dev, test = (data.splits[name] for name in prepare.SPLITS)
  accum_steps = config.train.accum_steps
  if config.train.batch_size < accum_steps:
    raise ConfigError(f'train.accum_steps={accum_steps} must be between 1 and train.batch_size')
  # Each process builds only its rows of every global batch (see batching.Sharding).
  sharding = batching.Sharding(jax.process_index(), jax.process_count(),
                               parallel.rows_multiple(config.parallel, accum_steps))
  train_batches = batching.TrainBatches(train, config.train.batch_size, boundaries, config.seed, sharding)
  stats = train_batches.epoch_stats()
  logging.info('train: %d examples, %d batches/epoch, %d shapes, %.1f%% padding; vocab %d; classes %d',
               len(train), train_batches.steps_per_epoch, stats['distinct_shapes'],
               100 * stats['padding_fraction'], tokenizer.vocab_size, num_classes)

  steps_per_epoch = train_batches.steps_per_epoch
  total_steps = config.train.steps or config.train.epochs * steps_per_epoch
  every = config.checkpoint.every_steps or steps_per_epoch
  fns = registry.model_fns(build_model(config.model, tokenizer.vocab_size, num_classes))
  task = Classification(num_classes)
  tx = build_optimizer(config, total_steps, steps_per_epoch)
  task, constants = distillation(config.distill, task, teacher)
  driver = parallel.task_driver(config.parallel, task, fns, tx, accum_steps)
  example = train_batches.batch(0)
  _record_transfer(init_record, fns, example, source_params)
  _check_sparse_tables(tx, fns, example)
  derived = {'vocab_size': tokenizer.vocab_size, 'num_classes': num_classes,
             'label_names': list(data.label_names), 'task': task.name,
             'selection_metric': f'dev_{task.selection_metric}', 'higher_is_better': task.higher_is_better,
             'total_steps': total_steps, 'steps_per_epoch': steps_per_epoch, 'checkpoint_every_steps': every,
             'data_fingerprint': data.fingerprint, 'train_batches': stats,
             'bucket_boundaries': list(boundaries), 'devices': jax.device_count(),
             'processes': jax.process_count(), 'global_batch_rows': sharding.rows(config.train.batch_size)[0],
             'init': init_record, 'data_from_cache': data.from_cache, 'train_examples': len(train)}
  # What a checkpoint must agree on to be resumed into this run.
  compatibility = {'model': registry.section_of(config.model.to_dict()), 'vocab_size': tokenizer.vocab_size,
                   'num_classes': num_classes, 'data': derived['data_fingerprint'],
                   'batch_size': config.train.batch_size, 'seed': config.seed}
  # Pruning changes the optimizer state, distillation what is learnt: a resume must agree.
  if config.prune.target_sparsity:
    compatibility['prune'] = config.prune.to_dict()
  if config.optim.sparse_embeddings:  # Its optimizer state has another structure.
    compatibility['sparse_embeddings'] = {k: config.optim[k] for k in ('sparse_embeddings', 'sparse_rule')}
  if config.distill.teacher:
    compatibility['distill'] = config.distill.to_dict()
    derived['distill'] = {'teacher': os.path.abspath(config.distill.teacher)}
  return Experiment(
      dataset=data.dataset, tokenizer=tokenizer, task=task, fns=fns, tx=tx, driver=driver, train_batches=train_batches,
      dev=batching.eval_batches(dev, config.train.eval_batch_size, boundaries, sharding),
      test=batching.eval_batches(test, config.train.eval_batch_size, boundaries, sharding),
      init_state=functools.partial(step_lib.create_train_state, fns, tx, jax.random.PRNGKey(config.seed), example,
                                   start),
      total_steps=total_steps, checkpoint_every_steps=every, derived=derived, compatibility=compatibility,
      constants=constants)


LANGUAGE_MODELS = ('lstm_lm',)


def language_model_corpus(config: ml_collections.ConfigDict) -> list[str]:
  """A language model's text: the train and unlabelled splits of config.data (never dev or test,
  and with data.dev_fraction carved as the classifiers of the same data carve it)."""
  dataset = load_data(config.data, config.seed)
  logging.info('data: %s', dataset.description)
  return [text for name in ('train', 'unlabeled') if name in dataset.splits
          for text in dataset.splits[name].texts]


def build_lm_experiment(config: ml_collections.ConfigDict, workdir: Optional[str]) -> Experiment:
  """A language model over config.data's train and unlabelled text (experiments.pretrain).

  The documents are carved into train / dev / test (lm.heldout_fraction each for dev and
  test), streamed in BPTT windows of lm.window tokens with the state carried between them.
  init.checkpoint starts from another language model and keeps its tokenizer: ULMFiT's
  stage 2, the pretrained model finetuned on the target task's own text.
  """
  if config.model.name not in LANGUAGE_MODELS:
    raise ConfigError(f'model.name={config.model.name!r} is a classifier; experiments.pretrain trains a language '
                      f'model: set model.name to one of {LANGUAGE_MODELS}')
  texts = language_model_corpus(config)
  pretrained_tokenizer, start, init_record, source_params = _start(config, None)
  train_fn = tokenizer_trainer(config.data) if pretrained_tokenizer is None else lambda texts: pretrained_tokenizer
  tokenizer = prepare.run_tokenizer(workdir, texts, train_fn, save=jax.process_index() == 0)
  documents = batching.EncodedSplit.from_rows(tokenizer.encode(texts, 1 << 30, direction=config.data.direction),
                                              np.full(len(texts), -1))
  del texts
  try:
    train, dev, test = streams.carve(documents, config.lm.heldout_fraction, config.seed)
  except ValueError as e:
    raise ConfigError(f'lm.heldout_fraction={config.lm.heldout_fraction}: {e}') from None
  if config.train.accum_steps != 1:
    raise ConfigError('train.accum_steps must be 1 for a language model: its rows carry their state from one '
                      'window to the next')
  eos = tokenizer.token_id(EOS)
  sharding = batching.Sharding(jax.process_index(), jax.process_count(), parallel.rows_multiple(config.parallel))
  try:
    train_batches = streams.StreamBatches(train, eos, config.train.batch_size, config.lm.window, config.seed,
                                          sharding)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  logging.info('language model: %d train documents (%d tokens), %d dev, %d test; %d windows of %d x %d per epoch; '
               'vocab %d', len(train), train_batches.tokens_per_epoch, len(dev), len(test),
               train_batches.steps_per_epoch, config.train.batch_size, config.lm.window, tokenizer.vocab_size)
  steps_per_epoch = train_batches.steps_per_epoch
  total_steps = config.train.steps or config.train.epochs * steps_per_epoch
  every = config.checkpoint.every_steps or steps_per_epoch
  fns = registry.model_fns(build_model(config.model, tokenizer.vocab_size, 0))
  log_q = None
  if config.lm.negatives:
    log_q = sampling_distribution(streams.concatenate(train, eos), tokenizer.vocab_size, config.lm.sampling_power)
  task = LanguageModeling(negatives=config.lm.negatives, log_q=log_q)
  tx = build_optimizer(config, total_steps, steps_per_epoch)
  driver = parallel.task_driver(config.parallel, task, fns, tx)
  example = train_batches.batch(0)
  _record_transfer(init_record, fns, example, source_params)
  eval_rows = config.train.eval_batch_size
  dev_batches, test_batches = (streams.eval_windows(split, eos, eval_rows, config.lm.window, config.lm.eval_context,
                                                    sharding) for split in (dev, test))
  fingerprint = _documents_fingerprint(documents)
  derived = {'vocab_size': tokenizer.vocab_size, 'num_classes': 0, 'label_names': [], 'task': task.name,
             'selection_metric': f'dev_{task.selection_metric}', 'higher_is_better': task.higher_is_better,
             'total_steps': total_steps, 'steps_per_epoch': steps_per_epoch, 'checkpoint_every_steps': every,
             'data_fingerprint': fingerprint, 'train_batches': train_batches.epoch_stats(),
             'bucket_boundaries': [config.lm.window], 'devices': jax.device_count(),
             'processes': jax.process_count(), 'global_batch_rows': config.train.batch_size,
             'documents': {'train': len(train), 'dev': len(dev), 'test': len(test)},
             'tokens': {'train': train_batches.tokens_per_epoch, 'dev': int(dev.lengths.sum()) + len(dev),
                        'test': int(test.lengths.sum()) + len(test)},
             'init': init_record}
  compatibility = {'model': registry.section_of(config.model.to_dict()), 'vocab_size': tokenizer.vocab_size,
                   'data': fingerprint, 'batch_size': config.train.batch_size, 'seed': config.seed,
                   'lm': config.lm.to_dict()}
  return Experiment(
      dataset=None, tokenizer=tokenizer, task=task, fns=fns, tx=tx, driver=driver, train_batches=train_batches,
      dev=dev_batches, test=test_batches,
      init_state=functools.partial(step_lib.create_train_state, fns, tx, jax.random.PRNGKey(config.seed), example,
                                   start, carry_rows=config.train.batch_size),
      total_steps=total_steps, checkpoint_every_steps=every, derived=derived, compatibility=compatibility)


def _documents_fingerprint(documents: batching.EncodedSplit) -> str:
  """A hash of the encoded corpus: a checkpoint of other text (or another tokenization) is refused."""
  digest = hashlib.sha256()
  digest.update(np.ascontiguousarray(documents.offsets).tobytes())
  digest.update(np.ascontiguousarray(documents.tokens).tobytes())
  return digest.hexdigest()[:16]


def build_optimizer(config: ml_collections.ConfigDict, total_steps: int, steps_per_epoch: int):
  """optim.* (and prune.*) as one optax transformation, or a RowSparseOptimizer around one."""
  c = config.optim
  schedule = optim.make_schedule(c.schedule, c.learning_rate, total_steps, c.warmup_steps)
  # With row-sparse tables the clipping norm must include their rows: the wrapper clips.
  tx = optim.make_optimizer(c.name, schedule, weight_decay=c.weight_decay,
                            clip_norm=0.0 if c.sparse_embeddings else c.clip_norm, groups=param_groups(c),
                            steps_per_epoch=steps_per_epoch)
  if config.prune.target_sparsity:
    tx = optax.chain(tx, magnitude_pruning(config.prune, total_steps))
  if not c.sparse_embeddings:
    return tx
  rows_schedule = optim.make_schedule(c.schedule, c.sparse_learning_rate or c.learning_rate, total_steps,
                                      c.warmup_steps)
  return sparse.RowSparseOptimizer(tx, sparse.make_rule(c.sparse_rule, rows_schedule), c.sparse_embeddings,
                                   clip_norm=c.clip_norm)


def pruning_end_step(c: ml_collections.ConfigDict, total_steps: int) -> int:
  """The step the target sparsity is reached at (0 without pruning)."""
  if not c.target_sparsity:
    return 0
  return c.end_step or max(c.begin_step + 1, (2 * total_steps) // 3)


def magnitude_pruning(c: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
  """The prune section as a pruning transform (see configs/base.py for the defaults)."""
  end = pruning_end_step(c, total_steps)
  every = c.every_steps or max(1, (end - c.begin_step) // 20)
  return pruning_lib.magnitude_pruning(
      pruning_lib.cubic_sparsity(c.target_sparsity, c.begin_step, end, c.initial_sparsity),
      pruning_lib.pruning_steps(c.begin_step, end, every), include=c.include, scope=c.scope)


def distillation(c: ml_collections.ConfigDict, task, teacher: Optional[runs.Run]):
  """(task, constants): the distillation task and the teacher's parameters, or the task as it is."""
  if teacher is None:
    return task, None
  if teacher.derived['num_classes'] != task.num_classes:
    raise ConfigError(f'distill.teacher={c.teacher} has {teacher.derived["num_classes"]} classes; this data has '
                      f'{task.num_classes}')
  return distill_lib.Distillation(task, teacher.fns, c.temperature, c.alpha), teacher.params


def use_compilation_cache(config: ml_collections.ConfigDict) -> Optional[str]:
  """JAX's persistent compilation cache in cache.dir/jax (cache.compilation=False: off): a second
  run of a config loads its compiled steps instead of compiling them. Returns the folder."""
  if not config.cache.compilation:
    return None
  folder = os.path.join(config.cache.dir or cache_lib.default_root(), 'jax')
  if jax.config.jax_compilation_cache_dir != folder:
    # JAX trusts what it finds there (it runs it): the default is the user's own cache folder.
    compilation_cache.set_cache_dir(folder)
    compilation_cache.reset_cache()  # Taken up at the next compile, even where this process has compiled.
    # Every step shape is worth keeping: a length bucket of the MLP compiles in well under a second.
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  return folder


def tokenizer_trainer(c: ml_collections.ConfigDict) -> Callable[[list[str]], Tokenizer]:
  return functools.partial(train_tokenizer, vocab_size=c.vocab_size, kind=c.tokenizer, min_frequency=c.min_frequency)


def run_training(config: ml_collections.ConfigDict, workdir: str, stop_after_steps=None,
                 build: Callable = build_experiment, command: str = '') -> dict:
  """Trains (resuming from workdir), then tests the best-dev checkpoint; returns results.json's content.

  build: build_experiment (a classifier) or build_lm_experiment (a language model).
  command: what writes the run folder (default: experiments.train or experiments.pretrain),
    which only that command may resume (bigjax.workdirs).
  """
  command = command or ('experiments.pretrain' if build is build_lm_experiment else 'experiments.train')
  workdir = claim_workdir(config, workdir, command)
  use_compilation_cache(config)
  exp = build(config, workdir)
  is_main = jax.process_index() == 0
  writer = metrics_lib.MetricWriter(workdir, enabled=is_main)
  try:
    return loop.train_and_evaluate(
        driver=exp.driver, task=exp.task, init_state=exp.init_state, batch_at=exp.train_batches.batch,
        dev=exp.dev, test=exp.test,
        periods=loop.Periods(exp.total_steps, exp.checkpoint_every_steps, config.train.log_every_steps,
                             config.checkpoint.keep_latest, config.checkpoint.keep_best,
                             select_from_step=pruning_end_step(config.prune, exp.total_steps)),
        workdir=workdir, meta={'compatibility': exp.compatibility, 'config': config.to_dict()}, writer=writer,
        constants=exp.constants, stop_after_steps=stop_after_steps,
        nan=loop.NanPolicy(config.train.nan_policy, config.train.max_skipped_in_a_row),
        test_at_checkpoints=config.train.test_at_checkpoints,
        train_shapes=exp.train_batches.shape_examples if config.train.compile_ahead else None,
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
  path = os.path.join(workdir, 'config.json')
  with open(path + '.tmp', 'w', encoding='utf-8') as f:
    json.dump(info, f, indent=2)
  os.replace(path + '.tmp', path)


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
      if record.exc_info:  # The Orbax frames may be in the attached traceback only.
        message += ''.join(traceback.format_exception(*record.exc_info))
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


def _in_range(value, low, high, closed: str) -> bool:
  above = low is None or (value >= low if closed in ('both', 'low') else value > low)
  below = high is None or (value <= high if closed in ('both', 'high') else value < high)
  return above and below


def _range_text(low, high, closed: str) -> str:
  if high is None:
    return f'>= {low}' if closed in ('both', 'low') else f'> {low}'
  left = '[' if closed in ('both', 'low') else '('
  right = ']' if closed in ('both', 'high') else ')'
  return f'in {left}{low}, {high}{right}'


def check_config(config: ml_collections.ConfigDict) -> None:
  """Every value that would otherwise fail deep inside with a traceback, or train nonsense,
  checked before any data is read: numeric ranges (declared in configs/base.py beside their
  defaults), choices, and the folders a run starts from."""
  for key, (low, high, closed) in base_config.ranges().items():
    try:
      value = config_value(config, key)
    except KeyError:
      continue  # A config built without base.py's section.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not _in_range(value, low, high, closed):
      raise ConfigError(f'{key}={value!r} must be {_range_text(low, high, closed)}')
  if not (config.train.steps or config.train.epochs):
    raise ConfigError('train.steps=0 and train.epochs=0: nothing to train; set one of them')
  if config.train.accum_steps > config.train.batch_size:
    raise ConfigError(f'train.accum_steps={config.train.accum_steps} must be between 1 and train.batch_size')
  # Choices checked here too, so that a typo fails before minutes of data loading.
  for key, choices in (('model.name', ('mlp', 'lstm') + LANGUAGE_MODELS), ('parallel', parallel.MODES),
                       ('data.tokenizer', KINDS), ('data.keep', TRUNCATIONS), ('data.direction', DIRECTIONS),
                       ('data.on_bad_lines', sources.ON_BAD_LINES), ('data.text_form', sources.TEXT_FORMS),
                       ('model.lstm.dtype', tuple(registry.COMPUTE_DTYPES)),
                       ('model.lstm.pooling', registry.POOLINGS), ('model.mlp.activation', registry.MLP_ACTIVATIONS),
                       ('optim.schedule', optim.SCHEDULES),
                       ('optim.sparse_rule', sparse.RULES), ('train.nan_policy', loop.NAN_POLICIES), ('prune.scope', pruning_lib.SCOPES),
                       ('quantize.mode', quantize_lib.MODES), ('quantize.activations', quantize_lib.ACTIVATIONS)):
    value = config_value(config, key)
    if value not in choices:
      raise ConfigError(f'{key}={value!r} is unknown; use one of {tuple(choices)}')
  param_groups(config.optim)
  _check_sparse_embeddings(config)
  if config.init.checkpoint and config.init.embeddings:
    raise ConfigError('init.checkpoint and init.embeddings are both set; a run starts from one of them (a '
                      'checkpoint already holds trained embeddings)')
  if config.init.checkpoint:
    runs.read_run_info(config.init.checkpoint)
  if config.distill.teacher:
    runs.read_run_info(config.distill.teacher)
    if config.init.embeddings:
      raise ConfigError('distill.teacher and init.embeddings are both set: a student reads the teacher\'s '
                        'tokens, so it cannot take another vocabulary\'s vectors')
  try:
    re.compile(config.prune.include)
  except re.error as e:
    raise ConfigError(f'prune.include: {config.prune.include!r} is not a regular expression ({e})') from None
  if config.prune.end_step and config.prune.end_step <= config.prune.begin_step:
    raise ConfigError(f'prune.end_step={config.prune.end_step} must be after prune.begin_step='
                      f'{config.prune.begin_step} (or 0: at 2/3 of the run)')
  for pattern in drop_patterns(config.init):
    try:
      re.compile(pattern)
    except re.error as e:
      raise ConfigError(f'init.drop: {pattern!r} is not a regular expression ({e})') from None
  if config.init.embeddings:
    embeddings_lib.check_exists(config.init.embeddings)
  try:  # optim names its choices itself.
    optim.make_optimizer(config.optim.name, optim.make_schedule(config.optim.schedule, 1.0, 10))
  except ValueError as e:
    raise ConfigError(f'optim: {e}') from None


def _check_sparse_tables(tx, fns, example) -> None:
  """optim.sparse_embeddings must name at least one of the model's tables: checked before any step."""
  if isinstance(tx, sparse.RowSparseOptimizer):
    try:
      tx.table_paths(jax.eval_shape(fns.init, jax.random.PRNGKey(0), example.token_ids, example.lengths))
    except ValueError as e:
      raise ConfigError(str(e)) from None


def _check_sparse_embeddings(config: ml_collections.ConfigDict) -> None:
  pattern = config.optim.sparse_embeddings
  if not pattern:
    return
  try:
    re.compile(pattern)
  except re.error as e:
    raise ConfigError(f'optim.sparse_embeddings: {pattern!r} is not a regular expression ({e})') from None
  conflicts = ((config.prune.target_sparsity, 'prune.target_sparsity > 0 (its masks live in the dense optimizer)'),
               (config.train.accum_steps != 1, 'train.accum_steps > 1 (micro-batches look up different rows)'),
               (config.model.name in LANGUAGE_MODELS, f'model.name={config.model.name} (it carries its state '
                                                       'across batches, and a tied output layer reads every row)'))
  for conflict, what in conflicts:
    if conflict:
      raise ConfigError(f'optim.sparse_embeddings={pattern!r} cannot be used with {what}; set '
                        'optim.sparse_embeddings="" for dense updates')


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


def run_trainer(argv, main_fn, verbose: bool):
  """A training entry point's main: INFO progress logs, the host set up (see setup_host), no
  stray positional arguments, user errors as one line."""
  setup_host()
  return _run_main(argv, main_fn, verbose, 'info')


def run_tool(argv, main_fn, verbose: bool):
  """A post-training tool's main: warnings only, no stray positional arguments, user errors as one line."""
  return _run_main(argv, main_fn, verbose, 'warning')


def _run_main(argv, main_fn, verbose: bool, level: str):
  logging.getLogger().setLevel(level.upper())
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  absl_logging.set_verbosity(level)
  quiet_library_logs(verbose)

  def checked():
    if len(argv) > 1:
      raise ConfigError(f'unexpected arguments {argv[1:]}; flags are written --name=value')
    return main_fn()

  return exit_on_user_error(checked, verbose)


def print_report(report: dict, json_out: str = '') -> None:
  """A tool's JSON report on stdout, and in json_out if given."""
  json.dump(report, sys.stdout, indent=1)
  print()
  if json_out:
    with open(json_out, 'w', encoding='utf-8') as f:
      json.dump(report, f, indent=1)


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
