"""Optimizers, learning-rate schedules and parameter groups, from plain arguments."""
import dataclasses
import re
from typing import Sequence

import jax
import optax


def make_schedule(name: str, learning_rate: float, total_steps: int, warmup_steps: int = 0):
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
  raise ValueError(f'unknown schedule {name!r}; known: constant, cosine, linear')


@dataclasses.dataclass(frozen=True)
class ParamGroup:
  """Parameters whose path ('layers_0_0/kernel_i') matches `pattern` (re.search)."""
  pattern: str
  lr_multiplier: float = 1.0  # Its learning rate is the schedule's times this.
  frozen: bool = False  # No updates at all (and no optimizer state).


def parse_param_groups(spec: str) -> list[ParamGroup]:
  """'REGEX=MULTIPLIER,REGEX=freeze,...' -> groups; ValueError naming a bad entry."""
  groups = []
  for entry in filter(None, (e.strip() for e in spec.split(','))):
    pattern, sep, value = entry.rpartition('=')
    if not sep or not pattern:
      raise ValueError(f'{entry!r} is not REGEX=MULTIPLIER or REGEX=freeze')
    try:
      re.compile(pattern)
    except re.error as e:
      raise ValueError(f'{pattern!r} is not a regular expression ({e})') from None
    if value == 'freeze':
      groups.append(ParamGroup(pattern, 0.0, frozen=True))
      continue
    try:
      multiplier = float(value)
    except ValueError:
      raise ValueError(f'{entry!r}: {value!r} is neither a number nor freeze') from None
    if multiplier < 0:
      raise ValueError(f'{entry!r}: a learning-rate multiplier must be >= 0')
    groups.append(ParamGroup(pattern, multiplier))
  return groups


def param_path(path) -> str:
  return '/'.join(str(getattr(k, 'key', k)) for k in path)


def group_labels(params, groups: Sequence[ParamGroup]):
  """The params tree with each leaf replaced by its group's label ('default' if none matches)."""
  def label(path, _):
    name = param_path(path)
    return next((f'group{i}' for i, g in enumerate(groups) if re.search(g.pattern, name)), 'default')
  return jax.tree_util.tree_map_with_path(label, params)


def make_optimizer(name: str, schedule, *, weight_decay: float = 0.0, clip_norm: float = 0.0,
                   b1: float = 0.9, b2: float = 0.999,
                   groups: Sequence[ParamGroup] = ()) -> optax.GradientTransformation:
  """Clipping by global norm (if clip_norm > 0), then the optimizer, per parameter group.

  Groups go through optax.multi_transform: each gets the optimizer with its own scaled
  schedule, or set_to_zero when frozen. Without groups the optimizer is applied as is.
  """
  def optimizer(lr):
    if name == 'adam':
      return optax.adam(lr, b1=b1, b2=b2)
    if name == 'adamw':
      return optax.adamw(lr, b1=b1, b2=b2, weight_decay=weight_decay)
    if name == 'sgd':
      return optax.sgd(lr, momentum=0.9)
    raise ValueError(f'unknown optimizer {name!r}; known: adam, adamw, sgd')

  if not groups:
    opt = optimizer(schedule)
  else:
    scaled = lambda m: (lambda step: m * schedule(step)) if callable(schedule) else m * schedule
    transforms = {'default': optimizer(schedule)}
    for i, group in enumerate(groups):
      transforms[f'group{i}'] = optax.set_to_zero() if group.frozen else optimizer(scaled(group.lr_multiplier))
    opt = optax.multi_transform(transforms, lambda params: group_labels(params, groups))
  return optax.chain(optax.clip_by_global_norm(clip_norm), opt) if clip_norm > 0 else opt
