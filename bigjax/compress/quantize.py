"""Post-training int8 quantization with qwix (the JAX team's quantization library).

Why qwix: it quantizes Flax Linen modules as they are, by intercepting their dot_generals
(nn.Dense, and the LSTM's jnp.dot inside its lax.scan), so the models need no quantized
twin; its QArray (int8 values + float32 scales) is a pytree that Orbax saves and restores
as it is. What it does not cover is done here with its own `qwix.quantize`: embedding
lookups are gathers, not matmuls, so the tables get one scale per row.

What is quantized, symmetric (absmax) int8:
- dense and LSTM kernels: one scale per output channel (qwix's choice for a kernel's
  non-contracting axis);
- embedding tables: one scale per row (per token). They stay int8 in memory and in an
  exported artifact: each nn.Embed lookup gathers the int8 rows and their scales and
  multiplies them (`with_int8_lookups`), the same products as dequantizing the whole table
  first, for the rows a batch reads. A lookup has no arithmetic for int8 to speed up; what
  the int8 storage saves is memory, disk and download size.

Two modes, and the saved run stores int8 arrays and scales in both:
- 'weights': kernels are dequantized to float32 when the run loads; the model then runs
  exactly as the float model does, on the rounded weights.
- 'int8': the model runs with qwix's quantized dot_generals: int8 weights times int8
  activations, summed in int32, rescaled to float32. Activations are quantized per row at
  run time ('dynamic', the default: no calibration, and each example gets its own range), or
  with one scale per matmul calibrated on training batches ('static', the MLP only: qwix
  collects static activation ranges as Linen variables, which cannot be updated from inside
  the LSTM's lax.scan, once per time step; and it keeps one per position of a Transformer's
  [B, T, H] inputs, tying the model to the calibration width).

qwix intercepts every dot_general the model runs, weights or not. A model's ModelSpec names
the modules whose own matmuls stay float32 (`int8_float_modules`): the Transformer's blocks,
whose only matmuls outside their dense layers are the attention's query x key and weights x
value. Quantized dynamically, the values' scale is taken over all keys, the padded ones too,
and a row's logits would depend on its padding; kept float, the int8 model is exactly as
padding-invariant as the float one. Its position and token-type tables are added, not
multiplied: they stay float32 too (`_is_embedding_table` takes nn.Embed tables only).
"""
import dataclasses
from typing import Iterable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import qwix
# qwix wraps each prequantized weight in WithAux (the array and how it was quantized); it
# does not export the name (0.1.8).
from qwix._src.providers.ptq import WithAux

from bigjax.models import registry
from bigjax.types import ModelFns

MODES = ('weights', 'int8')
ACTIVATIONS = ('dynamic', 'static')
# The module methods ModelFns calls (bigjax.models.registry.model_fns).
_METHODS = ('__call__', 'embed', 'logits_from_embeddings', 'token_states')


def check_choice(model, mode: str, activations: str) -> None:
  if mode not in MODES:
    raise ValueError(f'quantize.mode={mode!r} is unknown; use one of {MODES}')
  if activations not in ACTIVATIONS:
    raise ValueError(f'quantize.activations={activations!r} is unknown; use one of {ACTIVATIONS}')
  spec = registry.spec_of_module(model)
  if mode == 'int8' and activations == 'static' and not spec.static_activation_scales:
    # Why, per model, is in its ModelSpec (the LSTM: a lax.scan; the Transformer: a scale per position).
    raise ValueError(f"quantize.activations='static' does not work for model {spec.name!r}: qwix cannot keep "
                     "one calibrated range per matmul input in it (the MLP only, of the built-in models); use "
                     "'dynamic'")


def _rules(model, mode: str, activations: str) -> list:
  # Rules apply first match first: the model's float modules take no quantization at all.
  skipped = registry.spec_of_module(model).int8_float_modules
  rules = [qwix.QtRule(module_path=skipped)] if skipped else []
  if mode == 'weights':
    return rules + [qwix.QtRule(module_path='.*', weight_qtype=jnp.int8)]
  return rules + [qwix.QtRule(module_path='.*', weight_qtype=jnp.int8, act_qtype=jnp.int8,
                              act_static_scale=activations == 'static')]


def float_compute(model):
  """The model with float32 matmuls: qwix replaces them, and the LSTM's bf16 path is its own kernel.
  Without remat: the Transformer's rematerialized blocks run as a scan of an unbound block,
  whose matmuls qwix would see under other module paths (and remat saves nothing at inference)."""
  if getattr(model, 'remat', ''):
    model = model.clone(remat='')
  return model.clone(dtype=None) if getattr(model, 'dtype', None) is not None else model


def quantized_module(model, mode: str, activations: str = 'dynamic'):
  """The module that runs on the stored tree's kernels (qwix's PTQ rewrite of the model)."""
  methods = tuple(m for m in _METHODS if hasattr(model, m))
  return qwix.quantize_model(float_compute(model), qwix.PtqProvider(_rules(model, mode, activations)),
                             methods=methods)


def is_quantized(x) -> bool:
  return isinstance(x, (WithAux, qwix.QArray))


def _is_embedding_table(path) -> bool:
  names = [str(getattr(k, 'key', k)) for k in path]
  return len(names) >= 2 and names[-1] == 'embedding' and names[-2].endswith('embedding')


def quantize_rows(table):
  """int8 table with one absmax scale per row."""
  return qwix.quantize(table, jnp.int8, channelwise_axes=[0])


def calibrate(model, params, batches: Iterable) -> dict:
  """qwix's static activation statistics (mean absmax per matmul input) over the batches."""
  qat = qwix.quantize_model(float_compute(model), qwix.QtProvider(_rules(model, 'int8', 'static')))
  # qwix tells weights from activations by their type: numpy weights would be calibrated as inputs.
  params = jax.tree.map(jnp.asarray, params)
  stats = None
  for batch in batches:
    if stats is None:
      stats = qat.init(jax.random.PRNGKey(0), batch.token_ids, batch.lengths)['quant_stats']
    _, updated = qat.apply({'params': params, 'quant_stats': stats}, batch.token_ids, batch.lengths,
                           mutable=['quant_stats'])
    stats = updated['quant_stats']
  if stats is None:
    raise ValueError('calibration needs at least one batch of training data')
  return stats


def quantize(model, params, example, mode: str, activations: str = 'dynamic', quant_stats: Optional[dict] = None):
  """The stored tree: kernels as qwix's int8 QArrays (per output channel), embeddings per row.

  example: (token_ids, lengths) arrays or ShapeDtypeStructs of one batch shape.
  quant_stats: from `calibrate`, for activations='static'.
  """
  check_choice(model, mode, activations)
  ptq = quantized_module(model, mode, activations)
  abstract = jax.eval_shape(ptq.init, jax.random.PRNGKey(0), *example)['params']
  params = jax.tree.map(jnp.asarray, params)  # qwix takes jax arrays only (a loaded run holds numpy ones).
  stored = qwix.quantize_params(params, abstract, quant_stats if quant_stats is not None else {})
  return jax.tree_util.tree_map_with_path(
      lambda path, leaf: quantize_rows(leaf) if _is_embedding_table(path) else leaf, stored, is_leaf=is_quantized)


def stored_shapes(model, example, mode: str, activations: str = 'dynamic'):
  """The stored tree's shapes and dtypes (an Orbax restore target), without any parameters."""
  check_choice(model, mode, activations)
  abstract = jax.eval_shape(quantized_module(model, mode, activations).init, jax.random.PRNGKey(0), *example)['params']
  return jax.tree_util.tree_map_with_path(
      lambda path, leaf: jax.eval_shape(quantize_rows, leaf) if _is_embedding_table(path) else leaf, abstract,
      is_leaf=is_quantized)


def _restore(leaf):
  if isinstance(leaf, WithAux):
    leaf = leaf.array
  return qwix.dequantize(leaf) if isinstance(leaf, qwix.QArray) else leaf


def dequantize(tree):
  """Every int8 leaf back to float32."""
  return jax.tree.map(_restore, tree, is_leaf=is_quantized)


def for_inference(model, stored, mode: str, activations: str = 'dynamic'):
  """(module, params, ModelFns) that run a stored tree: see the module docstring for the two
  modes. The embedding tables stay int8 in both: the functions look rows up from them."""
  if mode == 'weights':
    module = model
    params = jax.tree_util.tree_map_with_path(
        lambda path, leaf: leaf if _is_embedding_table(path) else _restore(leaf), stored, is_leaf=is_quantized)
  else:
    module, params = quantized_module(model, mode, activations), stored
  return module, params, with_int8_lookups(registry.model_fns(module))


def _int8_lookup(next_fun, args, kwargs, context):
  """An interceptor: an nn.Embed lookup of a table held as a QArray gathers its int8 rows and
  their scales, then dequantizes just those (the whole table is never made float)."""
  module = context.module
  if not isinstance(module, nn.Embed) or context.method_name != '__call__':
    return next_fun(*args, **kwargs)
  table = module.embedding
  if not isinstance(table, qwix.QArray):
    return next_fun(*args, **kwargs)
  ids = args[0]
  rows = qwix.dequantize(dataclasses.replace(table, qvalue=jnp.take(table.qvalue, ids, axis=0),
                                             scale=jnp.take(table.scale, ids, axis=0)))
  return rows if module.dtype is None else rows.astype(module.dtype)


def with_int8_lookups(fns: ModelFns) -> ModelFns:
  """The functions with every nn.Embed lookup of an int8 table rerouted (_int8_lookup). The
  interception is active while a function runs, so also while jit traces it."""
  def wrap(fn):
    def wrapped(*args, **kwargs):
      with nn.intercept_methods(_int8_lookup):
        return fn(*args, **kwargs)
    return wrapped
  return ModelFns(*(wrap(fn) if callable(fn) else fn for fn in fns))


def plain_tree(tree):
  """Nested dicts of arrays with the same leaves in the same order: an int8 weight becomes
  {'qvalue': int8, 'scale': float32}, a calibrated activation scale its array. What an
  export artifact stores; `jax.tree.unflatten(jax.tree.structure(tree), leaves)` rebuilds it."""
  def plain(leaf):
    if isinstance(leaf, WithAux):
      leaf = leaf.array
    if isinstance(leaf, qwix.QArray):
      if leaf.zero_point is not None:
        return {'qvalue': leaf.qvalue, 'scale': leaf.scale, 'zero_point': leaf.zero_point}
      return {'qvalue': leaf.qvalue, 'scale': leaf.scale}
    return leaf

  return jax.tree.map(plain, tree, is_leaf=is_quantized)


def int8_bytes(stored) -> dict:
  """Bytes of the stored tree by kind: int8 values, their scales, and what stayed float."""
  totals = {'int8_values': 0, 'scales': 0, 'float': 0}

  def count(leaf):
    if isinstance(leaf, WithAux):
      leaf = leaf.array
    if isinstance(leaf, qwix.QArray):
      totals['int8_values'] += leaf.qvalue.size
      totals['scales'] += leaf.scale.size * leaf.scale.dtype.itemsize
    else:
      totals['float'] += leaf.size * leaf.dtype.itemsize

  jax.tree.map(count, stored, is_leaf=is_quantized)
  return totals
