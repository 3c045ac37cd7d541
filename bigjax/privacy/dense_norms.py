"""Dense layers' per-example gradient norms and clipped sums without their per-example gradients.

A dense layer y = x W + b that an example runs once, its inputs x [M, d_in] at M positions
(M = 1 after an MLP's average; the tokens in a Transformer) and its output gradients g [M, d_out],
has the gradient x^T g for W and sum_m g_m for b. Its squared norm is |x|^2 |g|^2 for one position
and sum_{m,n} (x_m . x_n)(g_m . g_n) for several (Goodfellow 2015; Li et al. 2021's ghost
clipping): O(M^2 (d_in + d_out)) work against O(M d_in d_out) for forming x^T g, whichever is
smaller is used. The clipped sum over examples is one contraction, sum_i c_i x_i^T g_i.

g is the gradient of the loss with respect to the layer's output, which each row's loss gives
through a zero added to that output (`perturbed`): the per-example pass (bigjax.privacy.clipping)
differentiates a row's loss with respect to those zeros instead of the layer's parameters, and
keeps the layer's inputs. Layers found by `find`: flax nn.Dense and nn.DenseGeneral (no
batch_dims) called once a row, outside any lifted transformation (a scan over time applies its
layer at every step), whose kernel and bias no other operation reads (a tied table); every
other parameter keeps its per-example gradient.
"""
import contextlib
import dataclasses
import math
from typing import Optional

import flax.linen as nn
from flax.core import tracers
import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class DenseCall:
  """One dense layer a row runs once: where its parameters are and its shapes for one row."""
  path: tuple[str, ...]  # The module's path: its kernel is params[path]['kernel'].
  kernel: int  # Index of the kernel in jax.tree.leaves(params).
  bias: Optional[int]  # The bias's index, or None.
  contracted: int  # How many trailing axes of the input the layer contracts.
  output: jax.ShapeDtypeStruct  # Its output for one row.


def leaves_read(fn, params, *args) -> set[int]:
  """Indices (in jax.tree.leaves order) of the parameters fn(params, *args) reads."""
  leaves, treedef = jax.tree.flatten(params)
  jaxpr = jax.make_jaxpr(lambda ls, *rest: fn(jax.tree.unflatten(treedef, ls), *rest))(leaves, *args).jaxpr
  position = {id(v): i for i, v in enumerate(jaxpr.invars[:len(leaves)])}
  read = {position[id(v)] for eqn in jaxpr.eqns for v in eqn.invars if id(v) in position}
  return read | {position[id(v)] for v in jaxpr.outvars if id(v) in position}


def _contracted_axes(module, x) -> Optional[int]:
  """How many trailing axes of x the layer contracts; None where they are not trailing ones."""
  if isinstance(module, nn.Dense):
    return 1
  if module.batch_dims:
    return None
  axes = sorted(a % x.ndim for a in ((module.axis,) if isinstance(module.axis, int) else module.axis))
  return len(axes) if axes == list(range(x.ndim - len(axes), x.ndim)) else None


@contextlib.contextmanager
def _intercepting(on_call):
  """on_call(path, module, next_fun, x, args, kwargs) for each dense layer called at the trace
  level of the `with` (not inside a lifted transformation); other calls run as they are."""
  level = tracers.current_trace()

  def interceptor(next_fun, args, kwargs, context):
    module = context.module
    if (context.method_name != '__call__' or not isinstance(module, (nn.Dense, nn.DenseGeneral)) or not args
        or tracers.current_trace() != level):
      return next_fun(*args, **kwargs)
    return on_call(tuple(module.path), module, next_fun, args[0], args, kwargs)

  with nn.intercept_methods(interceptor):
    yield


def find(row_loss, params, skip: set[int]) -> list[DenseCall]:
  """The dense layers of row_loss(params) whose norms `perturbed` can give, leaving out the
  leaves in `skip` (frozen ones, tables served otherwise)."""
  index = {tuple(str(getattr(k, 'key', k)) for k in path): i
           for i, (path, _) in enumerate(jax.tree_util.tree_flatten_with_path(params)[0])}
  seen, called = {}, {}

  def record(path, module, next_fun, x, args, kwargs):
    y = next_fun(*args, **kwargs)
    called[path] = called.get(path, 0) + 1
    seen[path] = (_contracted_axes(module, x), jax.ShapeDtypeStruct(y.shape, y.dtype))
    return y

  def recorded(p):
    with _intercepting(record):
      return row_loss(p)
  jax.eval_shape(recorded, params)

  candidates = []
  for path, (contracted, output) in seen.items():
    kernel, bias = index.get(path + ('kernel',)), index.get(path + ('bias',))
    if called[path] == 1 and contracted is not None and kernel is not None and kernel not in skip and bias not in skip:
      candidates.append(DenseCall(path, kernel, bias, contracted, output))

  # A layer's parameters must reach the loss through its output alone: with every candidate's
  # output replaced by zeros, a kernel or bias still read is read elsewhere (tied), and stays out.
  by_path = {c.path: c for c in candidates}

  def zeroed(path, module, next_fun, x, args, kwargs):
    if path not in by_path:
      return next_fun(*args, **kwargs)
    return jnp.zeros(by_path[path].output.shape, by_path[path].output.dtype)

  def without_candidates(p):
    with _intercepting(zeroed):
      return row_loss(p)
  read = leaves_read(without_candidates, params)
  return [c for c in candidates if c.kernel not in read and c.bias not in read]


@contextlib.contextmanager
def perturbed(calls: list[DenseCall], perturbations: list):
  """Within it, each call's layer adds its perturbation (zeros of its output) to its output,
  so the loss's gradient with respect to a perturbation is the layer's output gradient. Yields
  the list that the layers' inputs are appended to, in the order of `calls`."""
  position = {c.path: i for i, c in enumerate(calls)}
  inputs = [None] * len(calls)

  def add(path, module, next_fun, x, args, kwargs):
    y = next_fun(*args, **kwargs)
    if path not in position:
      return y
    inputs[position[path]] = x
    return y + perturbations[position[path]].astype(y.dtype)

  with _intercepting(add):
    yield inputs


def _flat(call: DenseCall, x, g):
  """x as [B, M, d_in], g as [B, M, d_out] (B examples, M positions each), in float32."""
  out_axes = g.ndim - (x.ndim - call.contracted)  # The layer's feature axes.
  d_in = math.prod(x.shape[x.ndim - call.contracted:])
  d_out = math.prod(g.shape[g.ndim - out_axes:])
  batch = x.shape[0]
  return x.reshape(batch, -1, d_in).astype(jnp.float32), g.reshape(batch, -1, d_out).astype(jnp.float32)


def squared_norms(call: DenseCall, x, g) -> jax.Array:
  """float32[B]: the squared norm of each example's kernel and bias gradient. x: the layer's
  inputs [B, ...], g: its output gradients [B, ...]."""
  x, g = _flat(call, x, g)
  _, positions, d_in = x.shape
  d_out = g.shape[-1]
  if positions == 1:
    kernel = jnp.sum(jnp.square(x), axis=(1, 2)) * jnp.sum(jnp.square(g), axis=(1, 2))
  elif positions * (d_in + d_out) < d_in * d_out:
    kernel = jnp.sum(jnp.einsum('bmi,bni->bmn', x, x) * jnp.einsum('bmo,bno->bmn', g, g), axis=(1, 2))
  else:
    kernel = jnp.sum(jnp.square(jnp.einsum('bmi,bmo->bio', x, g)), axis=(1, 2))
  bias = jnp.sum(jnp.square(jnp.sum(g, axis=1)), axis=1) if call.bias is not None else 0.0
  return kernel + bias


def weighted_sums(call: DenseCall, factors, x, g, kernel_like, bias_like):
  """(sum_i factors_i * kernel gradient_i, the same for the bias or None), shaped and typed as
  kernel_like and bias_like."""
  x, g = _flat(call, x, g)
  kernel = jnp.einsum('b,bmi,bmo->io', factors.astype(jnp.float32), x, g)
  kernel = kernel.reshape(kernel_like.shape).astype(kernel_like.dtype)
  if call.bias is None:
    return kernel, None
  bias = jnp.einsum('b,bmo->o', factors.astype(jnp.float32), g)
  return kernel, bias.reshape(bias_like.shape).astype(bias_like.dtype)
