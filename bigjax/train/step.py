"""Pure train and eval steps. No I/O, no logging, no host syncs.

Losses are weighted *sums* (a task's, bigjax.tasks), divided by the task's count over the
whole global batch (examples, or target tokens; added over devices first), so filler rows
and uneven padding between devices cannot skew the mean, and k micro-batches give the
update of one batch k times the size.
"""
from typing import Any, Callable, Optional

import flax
import jax
import jax.numpy as jnp
import optax

from bigjax.train import sparse as sparse_lib
from bigjax.types import Batch, ModelFns


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar: optimizer steps taken
  params: flax.core.FrozenDict
  opt_state: optax.OptState
  rng: jax.Array  # uint32[2]; the dropout key of step s is fold_in(rng, s)
  # A recurrent model's state after the last batch, one row per global batch row, carried
  # into the next (truncated BPTT over streams); None for tasks that carry nothing. It is
  # part of the state, so checkpoints hold it and a resume goes on exactly.
  carry: Any = None


def create_train_state(model_fns: ModelFns, tx, key, example: Batch, start: Optional[Callable] = None,
                       carry_rows: int = 0) -> TrainState:
  """A fresh state; start(params) -> params puts pretrained values in (bigjax.transfer).

  carry_rows > 0: the state carries the model's recurrent state for that many global rows.
  """
  init_key, dropout_key = jax.random.split(key)
  # Jitted: run eagerly, an init compiles each of its ops on its own (~5 s on a first run of
  # the IMDB MLP, for 50-odd small programs).
  params = jax.jit(model_fns.init)(init_key, example.token_ids, example.lengths)
  if start is not None:
    params = start(params)
  carry = model_fns.initial_carry(carry_rows) if carry_rows else None
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=jax.jit(tx.init)(params),
                    rng=dropout_key, carry=carry)


def gradient_sums(loss_fn: Callable, params, batch: Batch, dropout_key, accum_steps: int = 1):
  """Gradient of the loss, and the metric sums, summed over `accum_steps` micro-batches.

  Micro-batch i takes rows i, i+k, i+2k, ... (k = accum_steps): strided rows keep each
  device's share of every micro-batch equal when the batch is sharded by rows.
  Summing before dividing makes k micro-batches give the update of one big batch.
  """
  grad_fn = jax.grad(loss_fn, has_aux=True)
  if accum_steps == 1:
    return grad_fn(params, batch, dropout_key)
  micro = jax.tree.map(lambda x: jnp.moveaxis(x.reshape((-1, accum_steps) + x.shape[1:]), 1, 0), batch)

  def add_micro_batch(totals, xs):
    index, micro_batch = xs
    sums = grad_fn(params, micro_batch, jax.random.fold_in(dropout_key, index))
    return jax.tree.map(jnp.add, totals, sums), None

  first = jax.tree.map(lambda x: x[0], micro)
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(grad_fn, params, first, dropout_key))
  totals, _ = jax.lax.scan(add_micro_batch, zeros, (jnp.arange(accum_steps), micro))
  return totals


def train_step(state: TrainState, batch: Batch, constants=None, *, loss_fn: Callable, count_fn: Callable, tx,
               axis_name: Optional[str] = None, accum_steps: int = 1, private=None):
  """One optimizer step. Returns the new state and metric sums.

  loss_fn(params, batch, dropout_key, constants) -> (loss_sum, sums): a task's loss.
  count_fn(batch) -> what loss_sum is divided by (its rows' share of the global count).
  constants: inputs that are neither trained nor donated (a teacher's parameters), or None.
  axis_name: set under pmap/shard_map, where gradients and sums are psum-ed over it.
  accum_steps: split the batch into this many micro-batches (rows must divide by it).
  private: a bigjax.privacy.PrivateGradients: DP-SGD's gradient (each real row's clipped, their
    sum noised and divided by the expected batch size) instead of the mean loss's.
  """
  dropout_key = jax.random.fold_in(state.rng, state.step)
  if axis_name is not None:  # Different dropout masks on each device's rows.
    dropout_key = jax.random.fold_in(dropout_key, jax.lax.axis_index(axis_name))
  # The count is known before the backward pass, so the loss sum is divided by it there:
  # the gradients come out as means, with no division pass over every parameter (without
  # that pass over its embedding table the SST-2 MLP step ran 1.6x faster).
  count = count_fn(batch)
  if axis_name is not None:
    count = jax.lax.psum(count, axis_name)
  count = jnp.maximum(count, 1.0)

  def mean_loss(params, batch, dropout_key):
    loss_sum, sums = loss_fn(params, batch, dropout_key, constants)
    return loss_sum / count, sums

  row_sparse = isinstance(tx, sparse_lib.RowSparseOptimizer)
  carry = None
  if private is not None:
    if row_sparse or state.carry is not None:
      raise ValueError('DP-SGD needs dense updates and a task that carries no state')
    rows = batch.weights.shape[0]
    first_row = 0 if axis_name is None else jax.lax.axis_index(axis_name) * rows
    grads, sums = private.clipped_sum(state.params, batch, dropout_key, accum_steps, first_row)
  elif row_sparse:  # The embedding tables' gradients come as rows (bigjax.train.sparse).
    if accum_steps != 1 or state.carry is not None:
      raise ValueError('row-sparse embedding updates need accum_steps=1 and a task that carries no state')
    grads, sums = tx.gradients(mean_loss, state.params, batch, dropout_key)
  elif state.carry is None:
    grads, sums = gradient_sums(mean_loss, state.params, batch, dropout_key, accum_steps)
  else:
    if accum_steps != 1:
      raise ValueError('a carried state needs accum_steps=1: micro-batches would split its rows')
    rows = batch.weights.shape[0]
    carry = state.carry
    if axis_name is not None:  # Under pmap each device has its own rows of the global carry.
      start = jax.lax.axis_index(axis_name) * rows
      carry = jax.tree.map(lambda c: jax.lax.dynamic_slice_in_dim(c, start, rows), carry)

    def carried_mean_loss(params, batch, dropout_key):
      loss_sum, (sums, new_carry) = loss_fn(params, batch, dropout_key, constants, carry=carry)
      return loss_sum / count, (sums, new_carry)

    grads, (sums, carry) = jax.grad(carried_mean_loss, has_aux=True)(state.params, batch, dropout_key)
    if axis_name is not None:
      carry = jax.lax.all_gather(carry, axis_name, tiled=True)
  # Throughput counts, whatever the task: real rows and their real tokens.
  sums = dict(sums, examples=jnp.sum(batch.weights),
              tokens=jnp.sum(batch.lengths * (batch.weights > 0)).astype(jnp.float32))
  if axis_name is not None:
    if row_sparse:
      grads, sums = tx.all_reduce(grads, state.params, axis_name), jax.lax.psum(sums, axis_name)
    else:
      grads, sums = jax.lax.psum((grads, sums), axis_name)
  if private is not None:  # After the sum over devices: the noise is added once.
    grads = private.noisy_mean(grads, state.rng, state.step)
  grad_norm = tx.norm(grads) if row_sparse else optax.tree.norm(grads)
  # A NaN/Inf loss or gradient leaves params and optimizer state as they were, so no
  # checkpoint ever holds its result; the loop then stops or skips (train.nan_policy).
  # lax.cond, not jnp.where over the state: the where cost 25% of an SST-2 MLP step on CPU.
  finite = jnp.isfinite(grad_norm) & jnp.isfinite(sums.get('loss', 0.0))

  def apply(params, opt_state):
    if row_sparse:
      return tx.apply(grads, opt_state, params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  params, opt_state = jax.lax.cond(finite, apply, lambda *kept: kept, state.params, state.opt_state)
  if carry is not None:
    carry = jax.tree.map(lambda new, old: jnp.where(finite, new, old), carry, state.carry)
  sums = jax.tree.map(lambda x: jnp.where(finite, x, jnp.zeros_like(x)), dict(sums, grad_norm_sum=grad_norm))
  sums.update(steps=jnp.ones((), jnp.float32), nonfinite_steps=1.0 - finite.astype(jnp.float32))
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state, carry=carry), sums


def eval_step(params, batch: Batch, *, sums_fn: Callable, axis_name: Optional[str] = None):
  """A task's evaluation sums over the batch (and over devices under pmap)."""
  sums = sums_fn(params, batch)
  if axis_name is not None:
    sums = jax.lax.psum(sums, axis_name)
  return sums
