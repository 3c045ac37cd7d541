"""Where each array of a train state lives on a device mesh: data, FSDP and tensor parallelism.

The mesh has three named axes (maxtext's naming):
  data    batch rows split; parameters and optimizer state copied whole on each group;
  fsdp    batch rows split too, and parameters and optimizer moments split (ZeRO-3 / FSDP):
          each device keeps 1/fsdp of them, gathered for the step's matmuls by XLA;
  tensor  parameters split along their head / MLP / vocabulary axis (Megatron): each device
          computes its part of a layer, and the batch rows are not split over it.
`MeshShape` resolves the sizes (-1: the devices left over) against the device count.

Parameters carry logical axis names where their model declares them (the Transformer's
'vocab', 'embed', 'heads', 'kv', 'mlp', 'position'); `rules` maps names to mesh axes
(`DEFAULT_RULES`). A parameter whose model declares no names (the MLP's and LSTM's) is
split over 'fsdp' along its largest axis that the fsdp size divides, if it holds at least
`fsdp_min_size` numbers (big_vision's FSDP by shape): the IMDB MLP's bigram table is split,
its biases are not. A mesh axis that does not divide the dimension it would split is dropped
for that parameter (it stays whole along that axis): every model runs on every mesh shape.

The optimizer's moments take the sharding of the parameter they belong to (found by path
and shape; optax nests a params-shaped tree inside its state); every other leaf of the
state (step, key, counters, a carried recurrent state) is replicated. XLA's SPMD
partitioner inserts the all-gathers and reduce-scatters these layouts imply, so a sharded
step computes what the one-device step computes, up to the order of float additions.
"""
import dataclasses
import math
import re
from typing import Any, Optional

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

AXES = ('data', 'fsdp', 'tensor')
BATCH_AXES = ('data', 'fsdp')  # The mesh axes that split a batch's rows.
# Logical axis -> mesh axis. 'kv' (a head's width) and 'position' stay whole: splitting them
# would cut every attention score's sum, or the table every row reads.
DEFAULT_RULES = 'embed=fsdp,vocab=tensor,heads=tensor,mlp=tensor'


@dataclasses.dataclass(frozen=True)
class MeshShape:
  data: int = -1
  fsdp: int = 1
  tensor: int = 1

  def resolve(self, devices: int) -> dict:
    """{axis: size} with -1 filled in; ValueError if the sizes do not multiply to `devices`."""
    sizes = {axis: getattr(self, axis) for axis in AXES}
    free = [axis for axis, size in sizes.items() if size == -1]
    if len(free) > 1:
      raise ValueError(f'only one of mesh.{", mesh.".join(free)} may be -1 (the devices left over)')
    if any(size < 1 for axis, size in sizes.items() if axis not in free):
      raise ValueError(f'mesh sizes must be >= 1 or -1: {sizes}')
    fixed = math.prod(size for size in sizes.values() if size != -1)
    if free:
      if devices % fixed:
        raise ValueError(f'mesh {_text(sizes)}: {devices} devices are not a multiple of {fixed}')
      sizes[free[0]] = devices // fixed
    if math.prod(sizes.values()) != devices:
      raise ValueError(f'mesh {_text(sizes)} has {math.prod(sizes.values())} places for {devices} devices; '
                       'set one axis to -1 to take the devices left over')
    return sizes


def _text(sizes: dict) -> str:
  return ' x '.join(f'{axis}={size}' for axis, size in sizes.items())


def make_mesh(shape: MeshShape, devices=None) -> Mesh:
  """A data x fsdp x tensor mesh over `devices` (default: every device of every process).

  Auto axes: jit's in/out shardings say where arrays live and XLA's partitioner does the rest.
  jax.make_mesh orders the devices so that the last axis (tensor, the chattiest) is the
  innermost of the machine's topology.
  """
  devices = jax.devices() if devices is None else list(devices)
  sizes = shape.resolve(len(devices))
  return jax.make_mesh(tuple(sizes.values()), AXES, axis_types=(AxisType.Auto,) * len(AXES), devices=devices)


def parse_rules(text: str) -> tuple[tuple[str, Optional[str]], ...]:
  """'embed=fsdp,heads=tensor,kv=' -> (('embed', 'fsdp'), ('heads', 'tensor'), ('kv', None))."""
  rules = []
  for item in filter(None, (part.strip() for part in text.split(','))):
    logical, sep, axis = (s.strip() for s in item.partition('='))
    if not sep or not logical:
      raise ValueError(f'{item!r} is not LOGICAL=MESH_AXIS')
    if axis and axis not in AXES:
      raise ValueError(f'{item!r}: {axis!r} is not a mesh axis ({", ".join(AXES)}; empty: not split)')
    rules.append((logical, axis or None))
  return tuple(rules)


def _fit(spec: tuple, shape: tuple, mesh: Mesh) -> P:
  """spec with each mesh axis that does not divide its dimension (or has size 1) left out."""
  fitted = []
  for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
    axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
    kept = tuple(a for a in axes if mesh.shape[a] > 1)
    if kept and dim % math.prod(mesh.shape[a] for a in kept):
      kept = ()
    fitted.append(None if not kept else kept[0] if len(kept) == 1 else kept)
  while fitted and fitted[-1] is None:
    fitted.pop()
  return P(*fitted)


def _fsdp_by_shape(shape: tuple, mesh: Mesh, min_size: int) -> P:
  """Split over fsdp along the largest dimension it divides, if the array is large enough."""
  n = mesh.shape['fsdp']
  if n == 1 or math.prod(shape) < min_size:
    return P()
  candidates = [i for i in np.argsort(shape)[::-1] if shape[i] % n == 0]
  if not candidates:
    return P()
  spec = [None] * len(shape)
  spec[candidates[0]] = 'fsdp'
  return _fit(spec, shape, mesh)


def param_specs(params, mesh: Mesh, rules=(), logical_axes=None, fsdp_min_size: int = 1 << 16):
  """PartitionSpecs like `params` (arrays or ShapeDtypeStructs).

  logical_axes: a tree of PartitionSpecs of logical names like params (a model's
  `logical_axes()`), or None: every leaf then goes by shape (see the module docstring).
  """
  if logical_axes is None:
    return jax.tree.map(lambda x: _fsdp_by_shape(tuple(x.shape), mesh, fsdp_min_size), params)
  mesh_axes = nn.logical_to_mesh(logical_axes, rules)
  return jax.tree.map(lambda x, spec: _fit(tuple(spec), tuple(x.shape), mesh), params, mesh_axes,
                      is_leaf=lambda s: isinstance(s, P))


def state_specs(state, params_specs) -> Any:
  """PartitionSpecs like a whole train state: `params` and every optimizer leaf of a
  parameter's path and shape by params_specs; everything else replicated (P())."""
  by_path = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(state.params)[0]:
    by_path[_path_key(path)] = (tuple(leaf.shape), None)
  for path, spec in jax.tree_util.tree_flatten_with_path(params_specs, is_leaf=lambda s: isinstance(s, P))[0]:
    key = _path_key(path)
    by_path[key] = (by_path[key][0], spec)

  def spec_of(path, leaf):
    keys = _path_key(path)
    # The longest suffix of the leaf's path that is a parameter's path (optax nests params-shaped
    # trees as e.g. opt_state[0].mu['params']...; a param's path is matched whole, never a part).
    for start in range(len(keys)):
      found = by_path.get(keys[start:])
      if found is not None and found[0] == tuple(leaf.shape):
        return found[1]
    return P()

  specs = jax.tree_util.tree_map_with_path(spec_of, state.replace(params=None))
  return specs.replace(params=params_specs)


def _path_key(path) -> tuple:
  """A key path as a tuple of plain names (dict keys, attribute names, indices)."""
  return tuple(getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx', k))) for k in path)


def named(mesh: Mesh, specs):
  """PartitionSpecs -> NamedShardings on mesh."""
  return jax.tree.map(lambda spec: NamedSharding(mesh, spec), specs, is_leaf=lambda s: isinstance(s, P))


def bytes_per_device(tree) -> int:
  """The most bytes of `tree` (arrays or ShapeDtypeStructs with shardings) any one device holds."""
  per_device: dict = {}
  for leaf in jax.tree.leaves(tree):
    sharding = getattr(leaf, 'sharding', None)
    nbytes = np.dtype(leaf.dtype).itemsize
    if sharding is None:
      per_device[None] = per_device.get(None, 0) + nbytes * math.prod(leaf.shape)
      continue
    shard_bytes = nbytes * math.prod(sharding.shard_shape(leaf.shape))
    for device in sharding.device_set:
      per_device[device] = per_device.get(device, 0) + shard_bytes
  return max(per_device.values(), default=0)


def describe(mesh: Mesh) -> str:
  return _text(dict(mesh.shape))


def spec_text(specs) -> dict:
  """{path: 'P(...)'} of the split leaves only, for a log or a report."""
  flat = jax.tree_util.tree_flatten_with_path(specs, is_leaf=lambda s: isinstance(s, P))[0]
  return {re.sub(r"[\[\]']+", '/', jax.tree_util.keystr(path)).strip('/').replace('//', '/'): str(spec)
          for path, spec in flat if any(axis is not None for axis in spec)}
