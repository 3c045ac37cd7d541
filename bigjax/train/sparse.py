"""Row-sparse embedding updates: a step reads and writes only the table rows its batch looks up.

A dense gradient of an embedding table is a [V, E] array that is zero except in the rows
the batch read, and a dense Adam step then reads and writes all V rows of the table and
of both moments. Here the tables are left out of differentiation altogether: each
nn.Embed lookup of a chosen table becomes `stop_gradient(table)[ids] + delta[inverse]`,
where `delta` is a zero [N, E] array (N: the lookup's size) and `inverse` maps each
position to its id's slot among the batch's distinct ids. The gradient with respect to
`delta` is then the table's gradient on those rows, duplicates summed (the transpose of
a gather adds). A row rule (lazy Adam, Adagrad, SGD) updates those rows and their state
and leaves every other row, and its moments, untouched.

The model is not changed: the lookups are rerouted with flax's method interception
while the train step differentiates, so a model only has to read its tables with
nn.Embed. A table the model also reads another way (a tied output layer's `attend`)
cannot be updated by rows, and gets an error saying so.
"""
import re
from typing import Any, Callable, NamedTuple, Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

RULES = ('lazy_adam', 'adagrad', 'sgd')


@flax.struct.dataclass
class Rows:
  """Some rows of a [V, E] table: ids >= V are filler slots, ignored everywhere."""
  ids: jax.Array  # int32[N]
  values: jax.Array  # float32[N, E]


class RowRule(NamedTuple):
  """An optax-style optimizer for a table's rows.

  init(table) -> state (arrays shaped like the table, and a step count);
  update(rows, state) -> (row updates to add to the table, new state): only the rows'
  entries of the state are read or written.
  """
  init: Callable[[jax.Array], Any]
  update: Callable[[Rows, Any], tuple[Rows, Any]]


def _schedule(learning_rate):
  return learning_rate if callable(learning_rate) else optax.constant_schedule(learning_rate)


def _take(table, ids):
  """table[ids]; filler ids read the last row (what they compute is dropped by _put). Clipping
  instead of mode='fill' spares XLA a bounds check and a select per element."""
  return table.at[jnp.minimum(ids, table.shape[0] - 1)].get(mode='promise_in_bounds')


def _put(table, ids, values):
  return table.at[ids].set(values, mode='drop')


def lazy_adam(learning_rate, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> RowRule:
  """Adam on the rows a step touches (TF's LazyAdam, PyTorch's SparseAdam): an untouched
  row's moments do not decay. On a table every step touches whole, it is optax.adam."""
  schedule = _schedule(learning_rate)

  def init(table):
    return {'count': jnp.zeros((), jnp.int32), 'mu': jnp.zeros_like(table), 'nu': jnp.zeros_like(table)}

  def update(rows, state):
    count = state['count'] + 1
    g = rows.values
    mu = (1 - b1) * g + b1 * _take(state['mu'], rows.ids)
    nu = (1 - b2) * (g * g) + b2 * _take(state['nu'], rows.ids)
    t = count.astype(jnp.float32)
    mu_hat = mu / (1 - b1 ** t)
    nu_hat = nu / (1 - b2 ** t)
    step = -schedule(state['count']) * (mu_hat / (jnp.sqrt(nu_hat) + eps))
    return Rows(rows.ids, step), {'count': count, 'mu': _put(state['mu'], rows.ids, mu),
                                  'nu': _put(state['nu'], rows.ids, nu)}
  return RowRule(init, update)


def adagrad(learning_rate, initial_accumulator_value: float = 0.1, eps: float = 1e-7) -> RowRule:
  """optax.adagrad on the touched rows (the squared-gradient sums of other rows stay)."""
  schedule = _schedule(learning_rate)

  def init(table):
    return {'count': jnp.zeros((), jnp.int32), 'sum_sq': jnp.full_like(table, initial_accumulator_value)}

  def update(rows, state):
    g = rows.values
    sum_sq = _take(state['sum_sq'], rows.ids) + g * g
    scaled = jnp.where(sum_sq > 0, g * jax.lax.rsqrt(sum_sq + eps), 0.0)
    return Rows(rows.ids, -schedule(state['count']) * scaled), {
        'count': state['count'] + 1, 'sum_sq': _put(state['sum_sq'], rows.ids, sum_sq)}
  return RowRule(init, update)


def sgd(learning_rate) -> RowRule:
  """Plain SGD (no momentum: momentum would touch every row that ever had a gradient)."""
  schedule = _schedule(learning_rate)

  def init(table):
    del table
    return {'count': jnp.zeros((), jnp.int32)}

  def update(rows, state):
    return Rows(rows.ids, -schedule(state['count']) * rows.values), {'count': state['count'] + 1}
  return RowRule(init, update)


def make_rule(name: str, learning_rate, *, b1: float = 0.9, b2: float = 0.999) -> RowRule:
  if name == 'lazy_adam':
    return lazy_adam(learning_rate, b1=b1, b2=b2)
  if name == 'adagrad':
    return adagrad(learning_rate)
  if name == 'sgd':
    return sgd(learning_rate)
  raise ValueError(f'unknown row-sparse rule {name!r}; known: {", ".join(RULES)}')


def distinct_rows(ids, values, num_rows: int) -> Rows:
  """Rows with ids [N] (repeats allowed) and values [N, E] -> N slots, one per distinct id, values summed."""
  slots, inverse = _distinct_slots(ids, num_rows)
  return Rows(slots, jax.ops.segment_sum(values, inverse, num_segments=ids.shape[0]))


def _path_key(path: str) -> tuple:
  return tuple(path.split('/'))


class RowSparseOptimizer:
  """`dense` (an optax transformation) for every parameter but the embedding tables whose
  path matches `pattern`; those get their gradient as rows and `rule`'s update.

  init(params) -> {'dense': dense's state, 'rows': each table's rule state, nested like params}.
  clip_norm > 0 clips the gradient by its global norm, the tables' rows included (the
  dense optimizer must then not clip on its own).
  """

  def __init__(self, dense: optax.GradientTransformation, rule: RowRule, pattern: str, clip_norm: float = 0.0):
    self.dense, self.rule, self.pattern, self.clip_norm = dense, rule, pattern, clip_norm

  def table_paths(self, params) -> list[str]:
    flat = traverse_util.flatten_dict(flax.core.unfreeze(params), sep='/')
    paths = [p for p in flat if re.search(self.pattern, p) and p.endswith('/embedding')]
    if not paths:
      raise ValueError(f'optim.sparse_embeddings={self.pattern!r} matches no embedding table; the model has '
                       + ', '.join(p for p in flat if p.endswith('/embedding')))
    return paths

  def split(self, params):
    """params -> (the params without the tables, {path: table})."""
    flat = traverse_util.flatten_dict(flax.core.unfreeze(params), sep='/')
    tables = {p: flat.pop(p) for p in self.table_paths(params)}
    return traverse_util.unflatten_dict(flat, sep='/'), tables

  @staticmethod
  def merge(dense, tables):
    flat = traverse_util.flatten_dict(dense, sep='/')
    flat.update(tables)
    return traverse_util.unflatten_dict(flat, sep='/')

  def init(self, params):
    dense, tables = self.split(params)
    rows = {_path_key(p): self.rule.init(t) for p, t in tables.items()}
    return {'dense': self.dense.init(dense), 'rows': traverse_util.unflatten_dict(rows)}

  def gradients(self, loss_fn: Callable, params, *args):
    """loss_fn(params, *args) -> (loss, aux) as for jax.grad(has_aux=True).

    Returns ((dense gradients, {path: Rows}), aux). A table's Rows has one slot per
    position of its lookup (a bound on its distinct ids); unused slots are filler.
    """
    dense, tables = self.split(params)
    frozen = {p: jax.lax.stop_gradient(t) for p, t in tables.items()}
    sizes = _lookup_sizes(loss_fn, dense, tables, args)

    def loss_of_rows(dense, deltas):
      seen = {}
      with nn.intercept_methods(_reroute(frozen, deltas, seen)):
        loss, aux = loss_fn(self.merge(dense, frozen), *args)
      return loss, (aux, seen)

    deltas = {p: jnp.zeros((n,) + tables[p].shape[1:], tables[p].dtype) for p, n in sizes.items()}
    (dense_grads, delta_grads), (aux, unique) = jax.grad(loss_of_rows, argnums=(0, 1), has_aux=True)(dense, deltas)
    return (dense_grads, {p: Rows(unique[p], delta_grads[p]) for p in sizes}), aux

  def all_reduce(self, grads, params, axis_name: str):
    """Sums gradients over devices: dense ones by psum; rows gathered, then merged by id."""
    dense_grads, rows = grads
    _, tables = self.split(params)
    gathered = {}
    for p, r in rows.items():
      ids = jax.lax.all_gather(r.ids, axis_name, tiled=True)
      values = jax.lax.all_gather(r.values, axis_name, tiled=True)
      gathered[p] = distinct_rows(ids, values, tables[p].shape[0])
    return jax.lax.psum(dense_grads, axis_name), gathered

  @staticmethod
  def norm(grads):
    dense_grads, rows = grads
    squares = optax.tree.norm(dense_grads) ** 2 + sum(jnp.sum(r.values ** 2) for r in rows.values())
    return jnp.sqrt(squares)

  def apply(self, grads, opt_state, params):
    """One optimizer step: (new params, new state)."""
    dense_grads, rows = grads
    if self.clip_norm > 0:
      norm = self.norm(grads)
      scale = jnp.where(norm > self.clip_norm, self.clip_norm / norm, 1.0)
      dense_grads = jax.tree.map(lambda g: g * scale, dense_grads)
      rows = {p: Rows(r.ids, r.values * scale) for p, r in rows.items()}
    dense, tables = self.split(params)
    updates, dense_state = self.dense.update(dense_grads, opt_state['dense'], dense)
    dense = optax.apply_updates(dense, updates)
    row_states = traverse_util.flatten_dict(opt_state['rows'], sep='/', is_leaf=lambda _, v: 'count' in v)
    for p, r in rows.items():
      step, row_states[p] = self.rule.update(r, row_states[p])
      tables[p] = tables[p].at[step.ids].add(step.values.astype(tables[p].dtype), mode='drop')
    return self.merge(dense, tables), {'dense': dense_state,
                                       'rows': traverse_util.unflatten_dict(row_states, sep='/')}


def _table_path(context, tables: dict) -> Optional[str]:
  """The path of the chosen table this nn.Embed reads, or None (another module, or another
  model's embedding at the same path: a distillation teacher's)."""
  if not isinstance(context.module, nn.Embed):
    return None
  path = '/'.join(context.module.path + ('embedding',))
  return path if path in tables and context.module.get_variable('params', 'embedding') is tables[path] else None


def _lookup_sizes(loss_fn, dense, tables: dict, args) -> dict:
  """{path: positions looked up per step}, from a trace (no computation).

  The trace's lookups return zeros without reading the table, so a table the trace
  still reads is read some other way (a tied output layer): its gradient would be lost.
  """
  sizes = {}

  def record(next_fun, call_args, kwargs, context):
    path = _table_path(context, traced_tables)
    if path is None or context.method_name != '__call__':
      return next_fun(*call_args, **kwargs)
    if path in sizes:
      raise ValueError(f'{path} is looked up more than once per step; row-sparse updates need one lookup')
    ids = call_args[0]
    sizes[path] = int(ids.size)
    return jnp.zeros(ids.shape + tables[path].shape[1:], context.module.dtype or tables[path].dtype)

  traced_tables = {}

  def loss_of_tables(t):
    traced_tables.update(t)
    return loss_fn(RowSparseOptimizer.merge(dense, t), *args)

  with nn.intercept_methods(record):
    traced = jax.make_jaxpr(loss_of_tables)(tables)
  read = {id(v) for eqn in traced.jaxpr.eqns for v in eqn.invars} | {id(v) for v in traced.jaxpr.outvars}
  for path, var in zip(sorted(tables), traced.jaxpr.invars):  # A dict's leaves come in sorted key order.
    if id(var) in read:
      raise ValueError(f'{path} is read by the model other than by its nn.Embed lookup (a tied output layer?): it '
                       'cannot be updated by rows; leave it out of optim.sparse_embeddings')
  missing = set(tables) - set(sizes)
  if missing:
    raise ValueError(f'{", ".join(sorted(missing))}: matched by optim.sparse_embeddings but never looked up')
  return sizes


def _distinct_slots(ids, num_rows: int):
  """int32[N] -> (slots int32[N], inverse int32[N]): slot j holds a distinct id (or the filler
  num_rows), and ids[i] == slots[inverse[i]].

  A sort and a binary search: the sorted ids are the slots, each run's first one keeps its
  id. (jnp.unique does the same with an argsort, 4x slower on CPU at 51k ids.)
  """
  ordered = jnp.sort(ids)
  first = jnp.concatenate([jnp.ones((1,), bool), ordered[1:] != ordered[:-1]])
  return jnp.where(first, ordered, num_rows), jnp.searchsorted(ordered, ids, method='scan').astype(jnp.int32)


@jax.custom_vjp
def _with_row_gradients(rows, delta, inverse):
  """rows, whose cotangent reaches `delta` as the sum over the positions of each slot.

  The same as rows + delta[inverse] with delta = 0, without gathering the zeros."""
  del delta, inverse
  return rows


def _with_row_gradients_fwd(rows, delta, inverse):
  return rows, (delta, inverse)


def _with_row_gradients_bwd(residuals, g):
  delta, inverse = residuals
  summed = jax.ops.segment_sum(g.reshape((-1, g.shape[-1])).astype(delta.dtype), inverse.reshape(-1),
                               num_segments=delta.shape[0])
  return jnp.zeros_like(g), summed, None


_with_row_gradients.defvjp(_with_row_gradients_fwd, _with_row_gradients_bwd)


def _reroute(frozen: dict, deltas: dict, seen: dict):
  """An interceptor: lookups of the chosen tables read frozen rows, with gradients to delta slots."""
  def reroute(next_fun, call_args, kwargs, context):
    path = _table_path(context, frozen)
    if path is None or context.method_name != '__call__':
      return next_fun(*call_args, **kwargs)
    ids = call_args[0]
    slots, inverse = _distinct_slots(ids.reshape(-1), frozen[path].shape[0])
    seen[path] = slots
    rows = _with_row_gradients(jnp.take(frozen[path], ids, axis=0), deltas[path], inverse.reshape(ids.shape))
    dtype = context.module.dtype
    return rows if dtype is None else rows.astype(dtype)
  return reroute
