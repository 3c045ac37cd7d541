"""Magnitude pruning as an optax transform: masks live in the optimizer state.

`magnitude_pruning(...)` goes last in the optimizer chain. It holds one mask per pruned
leaf; at each pruning step it sets the mask to keep the largest |weights| (after this
step's update) so that the sparsity follows Zhu & Gupta's (2017) cubic ramp; at every step
it replaces the update of a masked weight by -weight, so that weight becomes, and stays,
exactly 0.0 (w + (-w) is exactly zero in IEEE arithmetic), while the update of every kept
weight passes through untouched. Because the masks are optimizer state, the loop's
checkpoints hold them and a resumed run prunes exactly as an uninterrupted one.

There is no maintained JAX pruning library this could use instead: Google's jaxpruner
implements the same idea (masks in an optax state) but had no release since 2023 and pins
older jax/optax; the transform is ~100 lines here.
"""
import re
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

SCOPES = ('global', 'layer')


def cubic_sparsity(target: float, begin_step: int, end_step: int, initial: float = 0.0) -> Callable:
  """Zhu & Gupta's schedule: s(t) = s_f + (s_i - s_f) (1 - (t - t0) / (t1 - t0))^3 on [t0, t1].

  s_i before t0, s_f after t1: most weights go early, while the rest can still recover.
  """
  span = max(end_step - begin_step, 1)

  def sparsity(step):
    progress = jnp.clip((jnp.asarray(step, jnp.float32) - begin_step) / span, 0.0, 1.0)
    return target + (initial - target) * (1.0 - progress) ** 3

  return sparsity


def pruning_steps(begin_step: int, end_step: int, every_steps: int) -> Callable:
  """Whether the masks are recomputed at a step: every `every_steps` from begin to end."""

  def is_pruning_step(step):
    return (step >= begin_step) & (step <= end_step) & ((step - begin_step) % every_steps == 0)

  return is_pruning_step


def leaf_path(path) -> str:
  return '/'.join(str(getattr(k, 'key', getattr(k, 'name', k))) for k in path)


def pruned_leaves(params, include: str) -> list[str]:
  """Paths of the leaves a pattern selects (matrices only: biases are not pruned)."""
  pattern = re.compile(include)
  return [leaf_path(p) for p, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
          if np.ndim(leaf) >= 2 and pattern.search(leaf_path(p))]


class PruningState(NamedTuple):
  count: jax.Array  # int32: updates seen, the schedule's step
  masks: dict  # path -> bool mask of the leaf's shape (True: kept)


def _threshold(magnitudes: Sequence[jax.Array], sparsity) -> jax.Array:
  """The magnitude below which a fraction `sparsity` of all the given values lie."""
  values = jnp.sort(jnp.concatenate([m.reshape(-1) for m in magnitudes]))
  k = jnp.clip(jnp.floor(sparsity * values.size).astype(jnp.int32), 0, values.size)  # How many to prune.
  # Values <= the k-th smallest go; k == 0 prunes nothing (a threshold below every magnitude).
  return jnp.where(k > 0, values[jnp.maximum(k - 1, 0)], -1.0)


def magnitude_pruning(sparsity: Callable, is_pruning_step: Callable, include: str = r'kernel|embedding/embedding',
                      scope: str = 'global') -> optax.GradientTransformation:
  """Prunes the leaves whose path matches `include` to sparsity(step), by magnitude.

  scope: 'global' ranks all pruned leaves' weights together (layers end up with different
  sparsities); 'layer' gives each leaf the target sparsity of its own.
  """
  if scope not in SCOPES:
    raise ValueError(f'pruning scope {scope!r} is unknown; use one of {SCOPES}')

  def init(params):
    paths = pruned_leaves(params, include)
    if not paths:
      raise ValueError(f'no parameter matrix matches the pruning pattern {include!r}')
    flat = _flat(params)
    return PruningState(count=jnp.zeros((), jnp.int32),
                        masks={p: jnp.ones(flat[p].shape, bool) for p in paths})

  def update(updates, state, params=None):
    if params is None:
      raise ValueError('magnitude_pruning needs the parameters (optax.apply_updates passes them)')
    flat_updates, flat_params = _flat(updates), _flat(params)

    def new_masks():
      candidates = {p: jnp.abs(flat_params[p] + flat_updates[p]) for p in state.masks}
      target = sparsity(state.count)
      if scope == 'global':
        threshold = _threshold(list(candidates.values()), target)
        return {p: (m > threshold) & state.masks[p] for p, m in candidates.items()}
      return {p: (m > _threshold([m], target)) & state.masks[p] for p, m in candidates.items()}

    # Only on pruning steps is the sort over every pruned weight paid for.
    masks = jax.lax.cond(is_pruning_step(state.count), new_masks, lambda: state.masks)

    def masked(path, u):
      name = leaf_path(path)
      if name not in masks:
        return u
      return jnp.where(masks[name], u, -flat_params[name]).astype(u.dtype)

    updates = jax.tree_util.tree_map_with_path(masked, updates)
    return updates, PruningState(count=state.count + 1, masks=masks)

  return optax.GradientTransformation(init, update)


def _flat(tree) -> dict:
  return {leaf_path(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def sparsity_report(params, include: str = r'kernel|embedding/embedding') -> dict:
  """Zeros among the pruned leaves, per leaf and overall, and the bytes a sparse encoding takes.

  Sparse sizes: values (4 bytes each, float32) plus either a bitmap of the dense shape
  (1 bit per weight) or int32 indices (4 bytes per kept weight), whichever is smaller;
  the leaves that are not pruned count at their dense size.
  """
  flat = {p: np.asarray(v) for p, v in _flat(jax.device_get(params)).items()}
  pruned = set(pruned_leaves(params, include))
  per_leaf, zeros, total, dense_bytes, sparse_bytes = {}, 0, 0, 0, 0
  for path, leaf in flat.items():
    dense_bytes += leaf.nbytes
    if path not in pruned:
      sparse_bytes += leaf.nbytes
      continue
    nonzero = int(np.count_nonzero(leaf))
    per_leaf[path] = 1.0 - nonzero / leaf.size
    zeros += leaf.size - nonzero
    total += leaf.size
    sparse_bytes += nonzero * leaf.itemsize + min(-(-leaf.size // 8), 4 * nonzero)
  return {'sparsity': zeros / max(total, 1), 'pruned_weights': total, 'per_leaf': per_leaf,
          'dense_bytes': dense_bytes, 'sparse_bytes': sparse_bytes}
