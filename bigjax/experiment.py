"""An experiment: everything a config resolves to before any training (data, tokenizer, model,
task, optimizer, driver, batches), for a classifier, a language model or a masked language model.

Config stops here: the models, data, tasks and the loop below receive plain arguments.
"""
import dataclasses
import functools
import hashlib
import logging
import os
from typing import Callable, Optional, Union

import jax
import ml_collections
import numpy as np
import optax

from bigjax import files
from bigjax import hostcpu
from bigjax import huggingface
from bigjax import privacy
from bigjax import runs
from bigjax import tasks
from bigjax import transfer
from bigjax.compress import distill as distill_lib
from bigjax.compress import pruning as pruning_lib
from bigjax.config.checks import drop_patterns, mesh_options, param_groups
from bigjax.data import batching, masking, prepare, sources, streams
from bigjax.data.from_config import load_data, prepare_classification_data, tokenizer_trainer
from bigjax.data.tokenizer import EOS, MASK, SPECIAL_TOKENS, Tokenizer, from_file
from bigjax.errors import ConfigError
from bigjax.models import registry
from bigjax.pretrain import embeddings as embeddings_lib
from bigjax.privacy import audit, clipping, sampling
from bigjax.run_record import Derived
from bigjax.tasks.classification import Classification
from bigjax.tasks.language_model import LanguageModeling, sampling_distribution
from bigjax.tasks.masked_lm import MaskedLanguageModeling
from bigjax.train import optim, parallel, sparse
from bigjax.train import step as step_lib
from bigjax.types import Batch, ModelFns, Params


def build_model(c: ml_collections.ConfigDict, vocab_size: int, num_classes: int):
  warn_if_no_bf16_instructions(c)
  return registry.from_section(c.to_dict(), vocab_size=vocab_size, num_classes=num_classes)


def warn_if_no_bf16_instructions(c: ml_collections.ConfigDict) -> None:
  """A bf16 LSTM on a CPU without bf16 instructions trains slower than float32 (bigjax/hostcpu.py)."""
  key = f'model.{registry.spec(c.name).section}.dtype'
  bf16 = registry.own_section(c.to_dict()).get('dtype') == 'bfloat16'
  if bf16 and jax.default_backend() == 'cpu' and hostcpu.native_bf16_matmuls() is False:
    logging.warning('%s=bfloat16 on a CPU without bf16 instructions (no avx512_bf16, amx_bf16 or bf16 in '
                    '/proc/cpuinfo): its bf16 matmuls are slower than float32 ones, and float32 trained 1.2-1.4x '
                    'faster on such a CPU (docs/results/RESULTS.md); set --config.%s=float32 for speed', key, key)


@dataclasses.dataclass(frozen=True)
class Experiment:
  """Everything a config resolves to, before any training: what the loop and the benchmark use."""
  dataset: Optional[sources.TextDataset]  # The texts and labels; None where the encoded splits were cached.
  tokenizer: Tokenizer
  task: tasks.Task
  fns: ModelFns
  tx: Union[optax.GradientTransformation, sparse.RowSparseOptimizer]
  driver: parallel.Driver
  # A classifier's length-bucketed batches, a language model's BPTT windows, or a masked LM's masked rows.
  train_batches: Union[batching.TrainBatches, streams.StreamBatches, masking.MaskedBatches]
  dev: list[Batch]  # This process's rows.
  test: list[Batch]
  init_state: Callable[[], step_lib.TrainState]
  total_steps: int
  checkpoint_every_steps: int
  derived: Derived  # What config.json records of the run (bigjax.run_record).
  compatibility: dict  # What a checkpoint must agree on to be resumed into this run.
  constants: Optional[Params] = None  # Passed to every train step, never trained: a teacher's parameters.
  dp: Optional[privacy.Plan] = None  # A DP-SGD run's mechanism and accountant.


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
  if config.init.get('pretrained'):
    return _pretrained_start(config)
  if config.init.embeddings:
    # The vectors are rows of the pretraining run's vocabulary: its tokenizer is this run's.
    tokenizer, vectors, found = embeddings_lib.load(config.init.embeddings)
    start = lambda fresh: transfer.with_word_vectors(fresh, vectors, found, embeddings_lib.init_embedding_table)
    return tokenizer, start, {'embeddings': os.path.abspath(config.init.embeddings)}, None
  if config.data.get('tokenizer_file'):  # A public tokenizer, used as it is.
    return from_file(config.data.tokenizer_file), None, {}, None
  return None, None, {}, None


def _pretrained_start(config: ml_collections.ConfigDict):
  """_start's for init.pretrained: the folder's tokenizer and weights (bigjax.huggingface)."""
  folder = config.init.pretrained
  arch = huggingface.read_architecture(folder)
  tokenizer = huggingface.read_tokenizer(folder, arch)
  imported, record = huggingface.read_params(
      folder, arch, huggingface.unused_patterns(arch, config.init.get('pretrained_unused', '')))
  # The classification head the folder lacks starts fresh, as transformers starts it.
  drop = drop_patterns(config.init) + [f'^{module}/' for module in record['fresh']]
  name = f'the pretrained model in {folder}'
  start = lambda fresh: transfer.merge_params(fresh, imported, drop=drop, source_name=name,
                                              flag='init.pretrained')[0]
  if record['fresh']:
    logging.info('init.pretrained: %s has no %s: initialized', folder, ', '.join(record['fresh']))
  init_record = {'pretrained': files.absolute(folder), 'drop': drop, 'unused_tensors': record['unused'],
                 # What an export back to a Hugging Face folder writes (bigjax.huggingface.export).
                 'huggingface': huggingface.folder_record(folder, arch)}
  return tokenizer, start, init_record, imported


def _check_direction(config: ml_collections.ConfigDict, flag: str, source: Optional[runs.Run]) -> None:
  """A run reads its tokens in the order of the run it starts from or learns from: an encoder
  trained backward reads a forward text as noise, and nothing else would say so."""
  if source is None:
    return
  theirs = source.data['direction']
  if theirs != config.data.direction:
    raise ConfigError(f'{flag}={source.workdir} reads its texts {theirs}, and this run reads them '
                      f'{config.data.direction}: set --config.data.direction={theirs}')


def _record_transfer(init_record: dict, fns, example, source_params) -> None:
  """With init.checkpoint: mismatches fail now, before any training, and what was copied is recorded."""
  if source_params is None:
    return
  abstract = jax.eval_shape(fns.init, jax.random.PRNGKey(0), example.token_ids, example.lengths)
  flag = 'init.checkpoint' if 'checkpoint' in init_record else 'init.pretrained'
  _, copy_record = transfer.merge_params(abstract, source_params, drop=init_record['drop'],
                                         source_name=init_record.get('checkpoint') or init_record['pretrained'],
                                         flag=flag)
  init_record.update(copy_record)


def build_experiment(config: ml_collections.ConfigDict, workdir: Optional[str]) -> Experiment:
  """Data, tokenizer, model, task, optimizer and driver from a config. workdir=None keeps nothing on disk.

  Entry points run check_config first, so bad choices fail before any data is read.
  """
  if registry.spec(config.model.name).kind != registry.CLASSIFIER:
    raise ConfigError(f'model.name={config.model.name!r} is not a classifier; build() builds it')
  config = huggingface.configure(config)
  teacher = runs.load_run(config.distill.teacher) if config.distill.teacher else None
  pretrained_tokenizer, start, init_record, source_params = _start(config, teacher)
  data = prepare_classification_data(config, workdir, pretrained_tokenizer)
  logging.info('data: %s', data.description)
  tokenizer, num_classes = data.tokenizer, data.num_classes
  boundaries = batching.bucket_boundaries(config.data.max_len, config.data.smallest_bucket,
                                          config.data.bucket_growth)
  train, dev, test = (data.splits[name] for name in prepare.SPLITS)
  canaries = audit.inserted(config, tokenizer, num_classes)
  if canaries is not None:  # Before sampling: canaries are training examples like any other.
    train = audit.with_canaries(train, canaries, config.audit.canary_repeats)
    logging.info('audit: %d canaries inserted %d times each', len(canaries), config.audit.canary_repeats)
  accum_steps = config.train.accum_steps
  if config.train.batch_size < accum_steps:
    raise ConfigError(f'train.accum_steps={accum_steps} must be between 1 and train.batch_size')
  # Each process builds only its rows of every global batch (see batching.Sharding).
  sharding = batching.Sharding(jax.process_index(), jax.process_count(),
                               parallel.rows_multiple(config.parallel, accum_steps))
  plan = _privacy_plan(config, len(train), sharding)
  if plan is None:
    train_batches = batching.TrainBatches(train, config.train.batch_size, boundaries, config.seed, sharding)
  else:  # Poisson-sampled, as the accountant assumes.
    train_batches = sampling.PoissonBatches(train, plan.mechanism.sampling_rate, plan.mechanism.max_rows, boundaries,
                                            config.seed, sharding)
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
  frozen = frozen_mask(config)
  private = None if plan is None else clipping.PrivateGradients(
      task, fns, plan.clip_norm, plan.mechanism.noise_multiplier, plan.mechanism.expected_batch, frozen=frozen)
  driver = parallel.task_driver(config.parallel, task, fns, tx, accum_steps,
                               mesh=mesh_options(config, jax.device_count()), private=private, frozen=frozen)
  example = train_batches.batch(0)
  _record_transfer(init_record, fns, example, source_params)
  _check_sparse_tables(tx, fns, example)
  derived = Derived(
      vocab_size=tokenizer.vocab_size, num_classes=num_classes, label_names=list(data.label_names), task=task.name,
      selection_metric=f'dev_{task.selection_metric}', higher_is_better=task.higher_is_better,
      total_steps=total_steps, steps_per_epoch=steps_per_epoch, checkpoint_every_steps=every,
      data_fingerprint=data.fingerprint, train_batches=stats, bucket_boundaries=list(boundaries),
      devices=jax.device_count(), processes=jax.process_count(),
      global_batch_rows=sharding.rows(config.train.batch_size)[0], init=init_record,
      data_from_cache=data.from_cache, train_examples=len(train),
      distill={'teacher': files.absolute(config.distill.teacher)} if config.distill.teacher else None,
      privacy=None if plan is None else privacy.run_record(config, plan, len(train)))
  # What a checkpoint must agree on to be resumed into this run.
  compatibility = {'model': registry.section_of(config.model.to_dict()), 'vocab_size': tokenizer.vocab_size,
                   'num_classes': num_classes, 'data': derived.data_fingerprint,
                   'batch_size': config.train.batch_size, 'seed': config.seed}
  # Pruning changes the optimizer state, distillation what is learnt: a resume must agree.
  if config.prune.target_sparsity:
    compatibility['prune'] = config.prune.to_dict()
  if config.optim.sparse_embeddings:  # Its optimizer state has another structure.
    compatibility['sparse_embeddings'] = {k: config.optim[k] for k in ('sparse_embeddings', 'sparse_rule')}
  if config.distill.teacher:
    compatibility['distill'] = config.distill.to_dict()
  if plan is not None:  # Another noise, sampling or clip is another mechanism: its epsilon would be wrong.
    compatibility['dp'] = config.dp.to_dict()
  if canaries is not None:
    compatibility['audit'] = config.audit.to_dict()
  return Experiment(
      dataset=data.dataset, tokenizer=tokenizer, task=task, fns=fns, tx=tx, driver=driver, train_batches=train_batches,
      dev=batching.eval_batches(dev, config.train.eval_batch_size, boundaries, sharding),
      test=batching.eval_batches(test, config.train.eval_batch_size, boundaries, sharding),
      init_state=functools.partial(step_lib.create_train_state, fns, tx, jax.random.PRNGKey(config.seed), example,
                                   start),
      total_steps=total_steps, checkpoint_every_steps=every, derived=derived, compatibility=compatibility,
      constants=constants, dp=plan)


def _privacy_plan(config: ml_collections.ConfigDict, examples: int,
                  sharding: batching.Sharding) -> Optional[privacy.Plan]:
  """dp.* resolved for a training set of `examples` (None without DP): the noise calibrated, the
  padded rows chosen, epsilon computed, before any step."""
  if 'dp' not in config or not config.dp.enabled:
    return None
  steps_per_epoch = max(1, round(examples / config.train.batch_size))
  total_steps = config.train.steps or config.train.epochs * steps_per_epoch
  return privacy.make_plan(config.dp, examples, config.train.batch_size, total_steps,
                           sharding.rows(1)[0])


def language_model_corpus(config: ml_collections.ConfigDict) -> list[str]:
  """A language model's text: the train and unlabelled splits of config.data (never dev or test,
  and with data.dev_fraction carved as the classifiers of the same data carve it)."""
  dataset = load_data(config.data, config.seed)
  logging.info('data: %s', dataset.description)
  return [text for name in ('train', 'unlabeled') if name in dataset.splits
          for text in dataset.splits[name].texts]


def _pretraining_documents(config: ml_collections.ConfigDict, workdir: Optional[str]):
  """(tokenizer, (train, dev, test) documents, the corpus's fingerprint, _start's (start, init
  record, source params)) of a language model's or masked LM's run.

  The text is language_model_corpus's, each document tokenized whole by the run's tokenizer
  (trained on that text, or init.checkpoint's), and carved into train / dev / test documents
  (lm.heldout_fraction each for dev and test).
  """
  texts = language_model_corpus(config)
  pretrained_tokenizer, start, init_record, source_params = _start(config, None)
  train_fn = tokenizer_trainer(config.data) if pretrained_tokenizer is None else lambda texts: pretrained_tokenizer
  tokenizer = prepare.run_tokenizer(workdir, texts, train_fn, save=jax.process_index() == 0)
  documents = batching.EncodedSplit.from_rows(tokenizer.encode(texts, 1 << 30, direction=config.data.direction),
                                              np.full(len(texts), -1))
  del texts
  try:
    splits = streams.carve(documents, config.lm.heldout_fraction, config.seed)
  except ValueError as e:
    raise ConfigError(f'lm.heldout_fraction={config.lm.heldout_fraction}: {e}') from None
  return tokenizer, splits, _documents_fingerprint(documents), (start, init_record, source_params)


def build_lm_experiment(config: ml_collections.ConfigDict, workdir: Optional[str]) -> Experiment:
  """A language model over config.data's train and unlabelled text (experiments.pretrain).

  The documents are carved into train / dev / test (lm.heldout_fraction each for dev and
  test), streamed in BPTT windows of lm.window tokens with the state carried between them.
  init.checkpoint starts from another language model and keeps its tokenizer: ULMFiT's
  stage 2, the pretrained model finetuned on the target task's own text.
  """
  if registry.spec(config.model.name).kind != registry.LANGUAGE_MODEL:
    raise ConfigError(f'model.name={config.model.name!r} is not a language model; build() builds it')
  tokenizer, (train, dev, test), fingerprint, (start, init_record, source_params) = _pretraining_documents(
      config, workdir)
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
  driver = parallel.task_driver(config.parallel, task, fns, tx, mesh=mesh_options(config, jax.device_count()),
                                frozen=frozen_mask(config))
  example = train_batches.batch(0)
  _record_transfer(init_record, fns, example, source_params)
  eval_rows = config.train.eval_batch_size
  dev_batches, test_batches = (streams.eval_windows(split, eos, eval_rows, config.lm.window, config.lm.eval_context,
                                                    sharding) for split in (dev, test))
  derived = Derived(
      vocab_size=tokenizer.vocab_size, num_classes=0, label_names=[], task=task.name,
      selection_metric=f'dev_{task.selection_metric}', higher_is_better=task.higher_is_better,
      total_steps=total_steps, steps_per_epoch=steps_per_epoch, checkpoint_every_steps=every,
      data_fingerprint=fingerprint, train_batches=train_batches.epoch_stats(), bucket_boundaries=[config.lm.window],
      devices=jax.device_count(), processes=jax.process_count(), global_batch_rows=config.train.batch_size,
      documents={'train': len(train), 'dev': len(dev), 'test': len(test)},
      tokens={'train': train_batches.tokens_per_epoch, 'dev': int(dev.lengths.sum()) + len(dev),
              'test': int(test.lengths.sum()) + len(test)},
      init=init_record)
  compatibility = {'model': registry.section_of(config.model.to_dict()), 'vocab_size': tokenizer.vocab_size,
                   'data': fingerprint, 'batch_size': config.train.batch_size, 'seed': config.seed,
                   'lm': config.lm.to_dict()}
  return Experiment(
      dataset=None, tokenizer=tokenizer, task=task, fns=fns, tx=tx, driver=driver, train_batches=train_batches,
      dev=dev_batches, test=test_batches,
      init_state=functools.partial(step_lib.create_train_state, fns, tx, jax.random.PRNGKey(config.seed), example,
                                   start, carry_rows=config.train.batch_size),
      total_steps=total_steps, checkpoint_every_steps=every, derived=derived, compatibility=compatibility)


def build_mlm_experiment(config: ml_collections.ConfigDict, workdir: Optional[str]) -> Experiment:
  """A masked language model (BERT's pretraining) over the text a language model reads.

  The documents, carved as a language model's are, are cut into rows of at most data.max_len
  tokens and batched as a classifier's texts are; bigjax.data.masking masks each training
  batch by (seed, step, row), and dev and test once. A classifier of the same model section
  starts from the run with init.checkpoint, which takes every parameter but the MLM head, and
  the run's tokenizer.
  """
  if registry.spec(config.model.name).kind != registry.MASKED_LM:
    raise ConfigError(f'model.name={config.model.name!r} is not a masked language model; build() builds it')
  tokenizer, documents, fingerprint, (start, init_record, source_params) = _pretraining_documents(config, workdir)
  mask_id = tokenizer.token_id(MASK)
  if mask_id is None:
    raise ConfigError(f'the tokenizer (init.checkpoint\'s, or this run\'s) has no {MASK} token for a masked '
                      'language model; train a new one (a run without init.checkpoint)')
  # The trainers give the special tokens the first ids: random replacements are drawn above them.
  first_ordinary = 1 + max(i for i in map(tokenizer.token_id, SPECIAL_TOKENS) if i is not None)
  rows = {name: masking.cut_documents(split, config.data.max_len) for name, split in zip(prepare.SPLITS, documents)}
  slots = config.mlm.max_predictions or masking.max_predictions(config.mlm.mask_rate, config.data.max_len)
  masker = masking.Masking(mask_id, first_ordinary, tokenizer.vocab_size, slots, config.mlm.mask_rate)
  accum_steps = config.train.accum_steps
  boundaries = batching.bucket_boundaries(config.data.max_len, config.data.smallest_bucket,
                                          config.data.bucket_growth)
  sharding = batching.Sharding(jax.process_index(), jax.process_count(),
                               parallel.rows_multiple(config.parallel, accum_steps))
  train_batches = masking.MaskedBatches(
      batching.TrainBatches(rows['train'], config.train.batch_size, boundaries, config.seed, sharding), masker,
      config.seed)
  stats = train_batches.epoch_stats()
  logging.info('masked language model: %d train documents in %d rows of up to %d tokens (%d batches/epoch, %.1f%% '
               'padding), %d dev rows, %d test rows; %d predictions a row at most; vocab %d', len(documents[0]),
               len(rows['train']), config.data.max_len, train_batches.steps_per_epoch,
               100 * stats['padding_fraction'], len(rows['dev']), len(rows['test']), slots, tokenizer.vocab_size)
  steps_per_epoch = train_batches.steps_per_epoch
  total_steps = config.train.steps or config.train.epochs * steps_per_epoch
  every = config.checkpoint.every_steps or steps_per_epoch
  fns = registry.model_fns(build_model(config.model, tokenizer.vocab_size, 0), config.model.name)
  task = MaskedLanguageModeling()
  tx = build_optimizer(config, total_steps, steps_per_epoch)
  driver = parallel.task_driver(config.parallel, task, fns, tx, accum_steps,
                               mesh=mesh_options(config, jax.device_count()),
                               frozen=frozen_mask(config))
  example = train_batches.batch(0)
  _record_transfer(init_record, fns, example, source_params)
  dev_batches, test_batches = (
      masking.masked_eval_batches(rows[name], config.train.eval_batch_size, boundaries, sharding, masker, config.seed,
                                  purpose) for name, purpose in (('dev', masking.DEV), ('test', masking.TEST)))
  derived = Derived(
      vocab_size=tokenizer.vocab_size, num_classes=0, label_names=[], task=task.name,
      selection_metric=f'dev_{task.selection_metric}', higher_is_better=task.higher_is_better,
      total_steps=total_steps, steps_per_epoch=steps_per_epoch, checkpoint_every_steps=every,
      data_fingerprint=fingerprint, train_batches=stats, bucket_boundaries=list(boundaries),
      devices=jax.device_count(), processes=jax.process_count(),
      global_batch_rows=sharding.rows(config.train.batch_size)[0], init=init_record,
      documents={name: len(split) for name, split in zip(prepare.SPLITS, documents)},
      tokens={name: int(split.lengths.sum()) for name, split in zip(prepare.SPLITS, documents)},
      masked_lm={'rows': {name: len(split) for name, split in rows.items()}, 'max_predictions': slots,
                 'mask_id': mask_id})
  # data.max_len cuts the rows and mlm.* masks them: a checkpoint of other rows or masks is another run's.
  compatibility = {'model': registry.section_of(config.model.to_dict()), 'vocab_size': tokenizer.vocab_size,
                   'data': fingerprint, 'max_len': config.data.max_len, 'batch_size': config.train.batch_size,
                   'seed': config.seed, 'mlm': config.mlm.to_dict()}
  return Experiment(
      dataset=None, tokenizer=tokenizer, task=task, fns=fns, tx=tx, driver=driver, train_batches=train_batches,
      dev=dev_batches, test=test_batches,
      init_state=functools.partial(step_lib.create_train_state, fns, tx, jax.random.PRNGKey(config.seed), example,
                                   start),
      total_steps=total_steps, checkpoint_every_steps=every, derived=derived, compatibility=compatibility)


def _documents_fingerprint(documents: batching.EncodedSplit) -> str:
  """A hash of the encoded corpus: a checkpoint of other text (or another tokenization) is refused."""
  digest = hashlib.sha256()
  digest.update(np.ascontiguousarray(documents.offsets).tobytes())
  digest.update(np.ascontiguousarray(documents.tokens).tobytes())
  return digest.hexdigest()[:16]


def build_optimizer(config: ml_collections.ConfigDict, total_steps: int,
                    steps_per_epoch: int) -> Union[optax.GradientTransformation, sparse.RowSparseOptimizer]:
  """optim.* (and prune.*) as one optax transformation, or a RowSparseOptimizer around one."""
  c = config.optim
  warmup_steps = warmup(c, total_steps)
  schedule = optim.make_schedule(c.schedule, c.learning_rate, total_steps, warmup_steps)
  # With row-sparse tables the clipping norm must include their rows: the wrapper clips.
  tx = optim.make_optimizer(c.name, schedule, weight_decay=c.weight_decay, no_decay=c.get('no_decay', ''),
                            clip_norm=0.0 if c.sparse_embeddings else c.clip_norm, groups=param_groups(c),
                            steps_per_epoch=steps_per_epoch)
  if config.prune.target_sparsity:
    tx = optax.chain(tx, magnitude_pruning(config.prune, total_steps))
  if not c.sparse_embeddings:
    return tx
  rows_schedule = optim.make_schedule(c.schedule, c.sparse_learning_rate or c.learning_rate, total_steps,
                                      warmup_steps)
  return sparse.RowSparseOptimizer(tx, sparse.make_rule(c.sparse_rule, rows_schedule), c.sparse_embeddings,
                                   clip_norm=c.clip_norm)


def frozen_mask(config: ml_collections.ConfigDict):
  """optim.param_groups' frozen leaves as params -> a tree of bools (None: every leaf trains)."""
  return optim.frozen_mask(param_groups(config.optim))


def warmup(c: ml_collections.ConfigDict, total_steps: int) -> int:
  """optim.warmup_steps, or optim.warmup_fraction of the run's steps."""
  return c.warmup_steps or round(c.get('warmup_fraction', 0.0) * total_steps)


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
  if teacher.derived.num_classes != task.num_classes:
    raise ConfigError(f'distill.teacher={c.teacher} has {teacher.derived.num_classes} classes; this data has '
                      f'{task.num_classes}')
  return distill_lib.Distillation(task, teacher.fns, c.temperature, c.alpha), teacher.params


def _check_sparse_tables(tx, fns, example) -> None:
  """optim.sparse_embeddings must name at least one of the model's tables: checked before any step."""
  if isinstance(tx, sparse.RowSparseOptimizer):
    try:
      tx.table_paths(jax.eval_shape(fns.init, jax.random.PRNGKey(0), example.token_ids, example.lengths))
    except ValueError as e:
      raise ConfigError(str(e)) from None


def build(config: ml_collections.ConfigDict, workdir: Optional[str]) -> Experiment:
  """The experiment of the config's model: a classifier's, a language model's or a masked LM's."""
  kind = registry.spec(config.model.name).kind
  if kind == registry.LANGUAGE_MODEL:
    return build_lm_experiment(config, workdir)
  if kind == registry.MASKED_LM:
    return build_mlm_experiment(config, workdir)
  return build_experiment(config, workdir)
