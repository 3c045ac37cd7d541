"""Optimizers, learning-rate schedules and parameter groups, from plain arguments."""
import dataclasses
import re
from typing import Sequence

import jax
import jax.numpy as jnp
import optax

SCHEDULES = ('constant', 'cosine', 'linear', 'slanted_triangular')


def slanted_triangular(learning_rate: float, total_steps: int, cut_steps: int = 0, ratio: float = 32.0):
  """Howard & Ruder (2018), eq. 3: a short linear rise to learning_rate over cut_steps
  (default: a tenth of the run), then a long linear fall, from and to learning_rate / ratio."""
  cut = cut_steps or max(int(total_steps * 0.1), 1)
  fall = max(total_steps - cut, 1)

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    p = jnp.where(step < cut, step / cut, 1.0 - (step - cut) / fall)
    return learning_rate * (1.0 + jnp.clip(p, 0.0, 1.0) * (ratio - 1.0)) / ratio
  return schedule


def make_schedule(name: str, learning_rate: float, total_steps: int, warmup_steps: int = 0):
  """warmup_steps: a linear rise from 0 first; for slanted_triangular, the length of its rise."""
  if name == 'slanted_triangular':
    return slanted_triangular(learning_rate, total_steps, warmup_steps)
  if name == 'constant':
    if not warmup_steps:
      return optax.constant_schedule(learning_rate)
    return optax.join_schedules(
        [optax.linear_schedule(0.0, learning_rate, warmup_steps), optax.constant_schedule(learning_rate)],
        [warmup_steps])
  if name == 'cosine':
    return optax.warmup_cosine_decay_schedule(0.0, learning_rate, max(warmup_steps, 1),
                                              max(total_steps, warmup_steps + 1))
  if name == 'linear':
    return optax.join_schedules(
        [optax.linear_schedule(0.0, learning_rate, warmup_steps),
         optax.linear_schedule(learning_rate, 0.0, max(total_steps - warmup_steps, 1))],
        [warmup_steps])
  raise ValueError(f'unknown schedule {name!r}; known: {", ".join(SCHEDULES)}')


@dataclasses.dataclass(frozen=True)
class ParamGroup:
  """Parameters whose path ('layers_0_0/kernel_i') matches `pattern` (re.search)."""
  pattern: str
  lr_multiplier: float = 1.0  # Its learning rate is the schedule's times this.
  frozen: bool = False  # No updates at all (and no optimizer state).
  # Gradual unfreezing (Howard & Ruder 2018): no updates before this epoch (its learning
  # rate is 0 until then), the multiplier from then on.
  from_epoch: float = 0.0


def parse_param_groups(spec: str) -> list[ParamGroup]:
  """'REGEX=MULTIPLIER[@EPOCH],REGEX=freeze,...' -> groups; ValueError naming a bad entry.

  '@EPOCH' keeps the group frozen until that epoch (gradual unfreezing).
  """
  groups = []
  for entry in filter(None, (e.strip() for e in spec.split(','))):
    pattern, sep, value = entry.rpartition('=')
    if not sep or not pattern:
      raise ValueError(f'{entry!r} is not REGEX=MULTIPLIER[@EPOCH] or REGEX=freeze')
    value, at, epoch = value.partition('@')
    from_epoch = 0.0
    if at:
      try:
        from_epoch = float(epoch)
      except ValueError:
        raise ValueError(f'{entry!r}: {epoch!r} after @ is not an epoch number') from None
      if from_epoch < 0:
        raise ValueError(f'{entry!r}: the epoch a group unfreezes at must be >= 0')
    try:
      re.compile(pattern)
    except re.error as e:
      raise ValueError(f'{pattern!r} is not a regular expression ({e})') from None
    if value == 'freeze':
      if at:
        raise ValueError(f'{entry!r}: a frozen group never unfreezes; write REGEX=MULTIPLIER@EPOCH')
      groups.append(ParamGroup(pattern, 0.0, frozen=True))
      continue
    try:
      multiplier = float(value)
    except ValueError:
      raise ValueError(f'{entry!r}: {value!r} is neither a number nor freeze') from None
    if multiplier < 0:
      raise ValueError(f'{entry!r}: a learning-rate multiplier must be >= 0')
    groups.append(ParamGroup(pattern, multiplier, from_epoch=from_epoch))
  return groups


def param_path(path) -> str:
  return '/'.join(str(getattr(k, 'key', k)) for k in path)


def group_labels(params, groups: Sequence[ParamGroup]):
  """The params tree with each leaf replaced by its group's label ('default' if none matches)."""
  def label(path, _):
    name = param_path(path)
    return next((f'group{i}' for i, g in enumerate(groups) if re.search(g.pattern, name)), 'default')
  return jax.tree_util.tree_map_with_path(label, params)


def frozen_mask(groups: Sequence[ParamGroup]):
  """params -> a tree of bools, True on the leaves of a frozen group ('REGEX=freeze'); None when
  no group is frozen. A group that unfreezes at an epoch ('@EPOCH') trains, later."""
  if not any(g.frozen for g in groups):
    return None

  def mask(params):
    return jax.tree.map(lambda label: label != 'default' and groups[int(label[len('group'):])].frozen,
                        group_labels(params, groups))
  return mask


def decay_mask(no_decay: str):
  """params -> a tree of bools: True where AdamW's weight decay applies, False on the leaves whose
  path matches the pattern `no_decay` (BERT's: 'bias|norm', LayerNorms and biases); None: all."""
  if not no_decay:
    return None
  pattern = re.compile(no_decay)
  return lambda params: jax.tree_util.tree_map_with_path(lambda path, _: not pattern.search(param_path(path)), params)


def make_optimizer(name: str, schedule, *, weight_decay: float = 0.0, clip_norm: float = 0.0,
                   b1: float = 0.9, b2: float = 0.999, no_decay: str = '',
                   groups: Sequence[ParamGroup] = (), steps_per_epoch: int = 1) -> optax.GradientTransformation:
  """Clipping by global norm (if clip_norm > 0), then the optimizer, per parameter group.

  Groups go through optax.multi_transform: each gets the optimizer with its own scaled
  schedule (zero before its from_epoch), or set_to_zero when frozen. Without groups the
  optimizer is applied as is.
  """
  def optimizer(lr):
    if name == 'adam':
      return optax.adam(lr, b1=b1, b2=b2)
    if name == 'adamw':
      return optax.adamw(lr, b1=b1, b2=b2, weight_decay=weight_decay, mask=decay_mask(no_decay))
    if name == 'sgd':
      return optax.sgd(lr, momentum=0.9)
    raise ValueError(f'unknown optimizer {name!r}; known: adam, adamw, sgd')

  if not groups:
    opt = optimizer(schedule)
  else:
    base = schedule if callable(schedule) else optax.constant_schedule(schedule)

    def scaled(group: ParamGroup):
      start = int(round(group.from_epoch * steps_per_epoch))
      if not start:
        return lambda step: group.lr_multiplier * base(step)
      return lambda step: jnp.where(step >= start, group.lr_multiplier * base(step), 0.0)

    transforms = {'default': optimizer(schedule)}
    for i, group in enumerate(groups):
      transforms[f'group{i}'] = optax.set_to_zero() if group.frozen else optimizer(scaled(group))
    opt = optax.multi_transform(transforms, lambda params: group_labels(params, groups))
  return optax.chain(optax.clip_by_global_norm(clip_norm), opt) if clip_norm > 0 else opt
