"""Optimizers and learning-rate schedules from plain arguments."""
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


def make_optimizer(name: str, schedule, *, weight_decay: float = 0.0, clip_norm: float = 0.0,
                   b1: float = 0.9, b2: float = 0.999) -> optax.GradientTransformation:
  """Clipping by global norm (if clip_norm > 0), then the optimizer."""
  if name == 'adam':
    opt = optax.adam(schedule, b1=b1, b2=b2)
  elif name == 'adamw':
    opt = optax.adamw(schedule, b1=b1, b2=b2, weight_decay=weight_decay)
  elif name == 'sgd':
    opt = optax.sgd(schedule, momentum=0.9)
  else:
    raise ValueError(f'unknown optimizer {name!r}; known: adam, adamw, sgd')
  return optax.chain(optax.clip_by_global_norm(clip_norm), opt) if clip_norm > 0 else opt
