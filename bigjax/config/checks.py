"""Checks a config before any data is read: every value that would otherwise fail deep inside
with a traceback, or train nonsense (numeric ranges, choices, patterns, the folders a run
starts from), as one ConfigError naming the key.
"""
import math
import re
from typing import Optional

import ml_collections

from bigjax import huggingface
from bigjax import run_record
from bigjax.compress import pruning as pruning_lib
from bigjax.compress import quantize as quantize_lib
from bigjax.config import schema
from bigjax.data import sources
from bigjax.data import tokenizer as tokenizer_lib
from bigjax.data.tokenizer import DIRECTIONS, KINDS, TRUNCATIONS
from bigjax.errors import ConfigError
from bigjax.models import registry
from bigjax.pretrain import embeddings as embeddings_lib
from bigjax.privacy import ACCOUNTANTS
from bigjax.train import loop, optim, parallel, sharding, sparse


def param_groups(c: ml_collections.ConfigDict) -> list:
  try:
    return optim.parse_param_groups(c.param_groups)
  except ValueError as e:
    raise ConfigError(f'optim.param_groups={c.param_groups!r}: {e}') from None


def mesh_options(config: ml_collections.ConfigDict, devices: Optional[int] = None) -> Optional[dict]:
  """The mesh driver's options from config.mesh (None unless parallel='mesh'); a bad shape or
  rule is a ConfigError. devices: the job's device count to check the shape against (None
  before JAX is started: a multi-process job must not touch the backend before it joins)."""
  if config.parallel != 'mesh' or 'mesh' not in config:
    return None
  c = config.mesh
  shape = sharding.MeshShape(c.data, c.fsdp, c.tensor)
  try:
    shape.resolve(devices if devices is not None else math.prod(abs(getattr(shape, a)) for a in sharding.AXES))
    rules = sharding.parse_rules(c.rules)
  except ValueError as e:
    raise ConfigError(f'mesh: {e}') from None
  return dict(mesh_shape=shape, rules=rules, fsdp_min_size=c.fsdp_min_size)


def drop_patterns(c: ml_collections.ConfigDict) -> list[str]:
  return [p.strip() for p in c.drop.split(',') if p.strip()]


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
  checked before any data is read: numeric ranges (declared in bigjax/config/schema.py and the
  model modules, beside their defaults), choices, and the folders a run starts from."""
  for key, (low, high, closed) in schema.ranges().items():
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
  # Each model's choices are its module's; every section's are checked, as its ranges are: a typo in
  # another model's section is still a typo.
  model_choices = tuple((f'model.{name}.{key}', values) for name, spec in registry.sections().items()
                        if name in config.model for key, values in spec.choices.items())
  for key, choices in (('model.name', registry.names()), ('parallel', parallel.MODES),
                       ('data.tokenizer', KINDS), ('data.keep', TRUNCATIONS), ('data.direction', DIRECTIONS),
                       ('data.on_bad_lines', sources.ON_BAD_LINES), ('data.text_form', sources.TEXT_FORMS),
                       *model_choices, ('optim.schedule', optim.SCHEDULES),
                       ('optim.sparse_rule', sparse.RULES), ('train.nan_policy', loop.NAN_POLICIES),
                       ('prune.scope', pruning_lib.SCOPES), ('quantize.mode', quantize_lib.MODES),
                       ('quantize.activations', quantize_lib.ACTIVATIONS),
                       ('dp.accountant', ACCOUNTANTS)):
    value = config_value(config, key)
    if value not in choices:
      raise ConfigError(f'{key}={value!r} is unknown; use one of {tuple(choices)}')
  param_groups(config.optim)
  mesh_options(config)
  _check_pretrained(config)  # Before the max tokens: the folder's table, not model.transformer's default, bounds them.
  _check_max_tokens(config)
  _check_sparse_embeddings(config)
  _check_tokenizer_file(config)
  _check_private(config)
  if config.init.checkpoint and config.init.embeddings:
    raise ConfigError('init.checkpoint and init.embeddings are both set; a run starts from one of them (a '
                      'checkpoint already holds trained embeddings)')
  if config.init.checkpoint:
    run_record.read(config.init.checkpoint)
  if config.distill.teacher:
    run_record.read(config.distill.teacher)
    if config.init.embeddings:
      raise ConfigError('distill.teacher and init.embeddings are both set: a student reads the teacher\'s '
                        'tokens, so it cannot take another vocabulary\'s vectors')
  try:
    re.compile(config.optim.get('no_decay', ''))
  except re.error as e:
    raise ConfigError(f'optim.no_decay: {config.optim.no_decay!r} is not a regular expression ({e})') from None
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
  if config.optim.warmup_steps and config.optim.get('warmup_fraction', 0.0):
    raise ConfigError(f'optim.warmup_steps={config.optim.warmup_steps} and optim.warmup_fraction='
                      f'{config.optim.warmup_fraction} are both set: set one, the other to 0')
  try:  # optim names its choices itself.
    optim.make_optimizer(config.optim.name, optim.make_schedule(config.optim.schedule, 1.0, 10))
  except ValueError as e:
    raise ConfigError(f'optim: {e}') from None


def _check_pretrained(config: ml_collections.ConfigDict) -> None:
  """init.pretrained: a folder bigjax can read, and nothing else that decides the tokens or the start."""
  folder = config.init.get('pretrained', '')
  if not folder:
    return
  for key in ('init.checkpoint', 'init.embeddings', 'distill.teacher'):
    if config_value(config, key):
      raise ConfigError(f'init.pretrained and {key} are both set: a run starts from one model, and reads one '
                        'tokenizer\'s ids')
  if config.data.direction != 'forward':
    raise ConfigError('init.pretrained: a pretrained encoder reads texts forward; set data.direction=forward')
  for pattern in (p for p in config.init.pretrained_unused.split(',') if p.strip()):
    try:
      re.compile(pattern.strip())
    except re.error as e:
      raise ConfigError(f'init.pretrained_unused: {pattern!r} is not a regular expression ({e})') from None
  huggingface.configure(config)  # The folder's config.json, and data.max_len against its positions.


def _check_max_tokens(config: ml_collections.ConfigDict) -> None:
  """data.max_len within the model's bound: a wider bucket would read past the Transformer's position table."""
  spec = registry.spec(config.model.name)
  limit = spec.max_tokens(config.model)
  if limit is not None and config.data.max_len > limit:
    key = f'model.{spec.section}.{spec.max_tokens_key}'
    raise ConfigError(f'data.max_len={config.data.max_len} is more than {key}={limit}, the most tokens model '
                      f'{spec.name!r} reads in a row; lower data.max_len or raise {key}')


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
               (config.model.name in registry.names(registry.LANGUAGE_MODEL),
                f'model.name={config.model.name} (it carries its state '
                                                       'across batches, and a tied output layer reads every row)'),
               (config.model.name in registry.names(registry.MASKED_LM),
                f'model.name={config.model.name} (its tied output layer reads every row)'))
  for conflict, what in conflicts:
    if conflict:
      raise ConfigError(f'optim.sparse_embeddings={pattern!r} cannot be used with {what}; set '
                        'optim.sparse_embeddings="" for dense updates')


def _check_tokenizer_file(config: ml_collections.ConfigDict) -> None:
  path = config.data.get('tokenizer_file', '')
  if not path:
    return
  for key in ('init.pretrained', 'init.checkpoint', 'init.embeddings', 'distill.teacher'):
    if config_value(config, key):
      raise ConfigError(f'data.tokenizer_file and {key} are both set: {key} brings its own tokenizer')
  tokenizer_lib.tokenizer_file_path(path)  # A DataError naming the path if there is no tokenizer there.


def _check_private(config: ml_collections.ConfigDict) -> None:
  """dp.*: what would break DP-SGD's guarantee, or make it meaningless, refused before any data is read."""
  if 'dp' not in config or not config.dp.enabled:
    return
  c = config.dp
  if c.noise_multiplier and c.target_epsilon:
    raise ConfigError(f'dp.noise_multiplier={c.noise_multiplier} and dp.target_epsilon={c.target_epsilon} are both '
                      'set: set one (the noise, or the epsilon it is calibrated to)')
  if not (c.noise_multiplier or c.target_epsilon):
    raise ConfigError('dp.enabled=True with no noise: set dp.noise_multiplier or dp.target_epsilon')
  conflicts = (
      (registry.spec(config.model.name).kind != registry.CLASSIFIER,
       f'model.name={config.model.name} (DP-SGD trains classifiers: a language model\'s rows are windows of '
       'documents, not examples)'),
      (config.optim.sparse_embeddings, 'optim.sparse_embeddings (noise reaches every row of a table)'),
      (config.distill.teacher, 'distill.teacher (a teacher\'s outputs on the private examples are not private)'),
      (config.init.embeddings and not c.public_init,
       'init.embeddings (word vectors trained on the private examples leak them; if these saw none, set '
       'dp.public_init=True)'),
      (config.init.checkpoint and not c.public_init,
       'init.checkpoint (a run that trained on the private examples leaks them; if it saw none, set '
       'dp.public_init=True)'),
      (not (config.data.get('tokenizer_file') or config.init.get('pretrained') or config.init.checkpoint),
       'a tokenizer trained on the private examples (its vocabulary is learnt from them): set '
       'data.tokenizer_file to a public tokenizer.json, or start from init.pretrained'),
  )
  for conflict, what in conflicts:
    if conflict:
      raise ConfigError(f'dp.enabled=True cannot be used with {what}')
