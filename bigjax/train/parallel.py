"""One train/eval step, run three ways: plain jit, jax.pmap, or jit over a device Mesh.

`mesh` is the path that scales (pmap is in maintenance mode since JAX 0.8); `pmap` is
kept for comparison and older code. All three take the same global numpy Batch and
hold state that `get_state` turns back into one plain TrainState, so checkpoints do not
depend on the mode or the device count.
"""
import collections
import functools
import logging
import threading
from typing import Callable, Optional, Sequence

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from bigjax import checkpoint
from bigjax.train import sharding as sharding_lib
from bigjax.train import step as step_lib
from bigjax.types import Batch

MODES = ('none', 'pmap', 'mesh')
AXIS = 'data'
# How many steps the host may queue ahead of the devices on a multi-device CPU (see _Pacer).
CPU_STEPS_AHEAD = 2


def pad_rows(batch: Batch, multiple: int) -> Batch:
  """Adds zero-weight filler rows so the batch splits evenly over `multiple` devices."""
  extra = -len(batch.weights) % multiple
  if not extra:
    return batch
  return jax.tree.map(lambda x: np.concatenate([np.asarray(x), np.zeros((extra,) + np.shape(x)[1:],
                                                                         np.asarray(x).dtype)]), batch)


class Driver:
  """Places state, constants and batches on devices and runs the jitted steps.

  The steps return their sums as device arrays without waiting for them; `fetch` brings
  a list of them to the host in one go. The loop adds them up there, at log time: no
  arithmetic on device arrays between steps. Under pmap and mesh each such op is one more
  program on every device, and a multi-device CPU must not have many of those queued
  (see _Pacer): with the log window's sums added on device (17 programs a step under
  pmap) the SST-2 MLP deadlocked within its first 20 steps on 8 fake devices.
  put_state copies: the steps donate the state's buffers, and the caller's state
  (a checkpoint restore target, say) must outlive them. Constants (a teacher's
  parameters) are placed once with put_constants and passed to every step, never donated.
  """
  num_devices: int

  def put_state(self, state):
    raise NotImplementedError

  def put_constants(self, constants):
    raise NotImplementedError

  def get_state(self, device_state) -> step_lib.TrainState:
    raise NotImplementedError

  def train_step(self, device_state, batch: Batch, constants=None):
    raise NotImplementedError

  def eval_step(self, device_state, batch: Batch):
    raise NotImplementedError

  def abstract_state(self, state):
    """Where a checkpoint restores to: `state`'s shapes in the layout the steps take."""
    return checkpoint.abstract_like(state)

  def memory(self, device_state, batch: Batch, constants=None) -> dict:
    """Per-device bytes of the parameters, the optimizer state and the train step's
    temporaries (the compiled program's own analysis) for a batch of this shape."""
    raise NotImplementedError

  def fetch(self, sums: list) -> list:
    """Device sums of several steps -> the same as numpy, in one transfer."""
    return jax.device_get(sums)

  def compile_ahead(self, device_state, train_examples: Sequence[Batch], eval_examples: Sequence[Batch],
                    constants=None) -> Optional['AheadOfTime']:
    """Starts compiling the steps for these batch shapes on a background thread, or None
    where this driver compiles each shape at its first step (pmap, mesh)."""
    del device_state, train_examples, eval_examples, constants
    return None


class _Pacer:
  """Keeps the host at most CPU_STEPS_AHEAD steps in front of a multi-device CPU.

  XLA:CPU (jaxlib 0.10) runs a program on n devices as n tasks on one pool of
  max(cores, n) threads, so a step's n all-reduce participants need every thread of it
  at once. Launching a program also runs on that pool, and blocks there while a device
  has 32 programs queued (PjRt's per-device in-flight limit). Once the host is that far
  ahead, a blocked launch holds a thread that the queued step's all-reduce needs: a
  deadlock (no CPU used), which XLA aborts 20 + 40 s later ("Termination timeout for
  `all reduce ...` of 40 seconds exceeded ... only 7 of them arrived", exit 134). It
  happened under mesh and pmap alike with one program a step (SST-2 MLP, 8 fake devices,
  after 110 and 250 steps without a host sync); a longer XLA timeout only hangs longer.
  Waiting for the step before last keeps one step queued, so the devices never idle.
  GPUs and TPUs queue programs on device streams, with no such pool: no pacing there.
  """

  def __init__(self):
    devices = jax.local_devices()
    self.ahead = CPU_STEPS_AHEAD if len(devices) > 1 and devices[0].platform == 'cpu' else 0
    self._queued = collections.deque()

  def __call__(self, sums):
    """Takes each step's sums right after its launch; returns them."""
    if self.ahead:
      self._queued.append(jax.tree.leaves(sums)[0])  # Not the state: the next step donates it.
      while len(self._queued) > self.ahead:
        self._queued.popleft().block_until_ready()
    return sums


def _spec(x):
  """What jit keys a compilation on, without the buffer: shape, dtype, weak type and, for a
  committed array, its sharding (an uncommitted one compiles apart from a committed one)."""
  if isinstance(x, jax.Array):
    return jax.ShapeDtypeStruct(x.shape, x.dtype, weak_type=x.aval.weak_type,
                                sharding=x.sharding if x.committed else None)
  return x


class AheadOfTime:
  """Compiles step programs on a daemon thread while the loop runs the steps it has.

  A shape costs a first run seconds of XLA compiling (the IMDB MLP: ~2.5 s for each of 9
  train shapes). jit's in-memory and persistent caches are shared, so a step whose shape
  was compiled here runs at once, and one whose shape is being compiled here waits for it.
  A shuffled stream reaches all its shapes within a few steps, so the train shapes are
  taken last-reached first: the loop compiles from the front, this thread from the back
  until they meet (on 2 cores two compilations at once take about as long as one after the
  other: XLA's compiler uses both). Then the evaluation shapes, which leave the critical
  path: the loop is training meanwhile. Failures are left to the step, where they are
  raised with their context.
  """

  def __init__(self, jobs: Sequence[tuple[Callable, tuple]]):
    self._stop = threading.Event()
    self.compiled = 0
    self._thread = threading.Thread(target=self._run, args=(list(jobs),), name='compile-ahead', daemon=True)
    self._thread.start()

  def _run(self, jobs):
    for jitted, specs in jobs:
      if self._stop.is_set():
        return
      try:
        jitted.lower(*specs).compile()
        self.compiled += 1
      except Exception as e:  # pylint: disable=broad-except
        logging.info('compiling ahead stopped (the step compiles at its first use instead): %s', e)
        return

  def join(self):
    """Waits until every program is compiled."""
    self._thread.join()

  def close(self):
    """Stops after the compilation in progress, and waits for it."""
    self._stop.set()
    self._thread.join()


def _steps(loss_fn, count_fn, tx, sums_fn, accum_steps, axis_name=None, private=None):
  train = functools.partial(step_lib.train_step, loss_fn=loss_fn, count_fn=count_fn, tx=tx, axis_name=axis_name,
                            accum_steps=accum_steps, private=private)
  return train, functools.partial(step_lib.eval_step, sums_fn=sums_fn, axis_name=axis_name)


class JitDriver(Driver):
  """One device; also the reference the other modes are tested against."""

  def __init__(self, loss_fn: Callable, count_fn: Callable, tx, sums_fn: Callable, accum_steps: int = 1,
               private=None):
    if jax.process_count() > 1:
      raise ValueError("parallel='none' runs on one device; a multi-process job needs 'mesh' or 'pmap'")
    self.num_devices = 1
    self.accum_steps = accum_steps
    train, evaluate = _steps(loss_fn, count_fn, tx, sums_fn, accum_steps, private=private)
    self._train = jax.jit(train, donate_argnums=0)
    self._eval = jax.jit(evaluate)
    self._device = jax.devices()[0]

  def put_state(self, state):
    # Committed to the device, always: a fresh state's arrays are uncommitted and a restored
    # one's committed, and jit compiles every shape again for a change of commitment (the
    # IMDB MLP recompiled its 9 dev shapes to test the restored best parameters).
    return jax.device_put(state, self._device, may_alias=False)

  def put_constants(self, constants):
    return jax.device_put(constants)

  def get_state(self, device_state):
    return device_state

  def train_step(self, device_state, batch, constants=None):
    return self._train(device_state, pad_rows(batch, self.accum_steps), constants)

  def eval_step(self, device_state, batch):
    return self._eval(device_state.params, batch)

  def memory(self, device_state, batch, constants=None):
    compiled = self._train.lower(device_state, pad_rows(batch, self.accum_steps), constants).compile()
    return _memory(device_state, compiled)

  def compile_ahead(self, device_state, train_examples, eval_examples, constants=None):
    state, params, constants = jax.tree.map(_spec, (device_state, device_state.params, constants))
    jobs = [(self._train, (state, pad_rows(b, self.accum_steps), constants)) for b in train_examples[::-1]]
    jobs += [(self._eval, (params, b)) for b in eval_examples]
    return AheadOfTime(jobs) if jobs else None


class PmapDriver(Driver):
  """jax.pmap over this process's devices (psum spans every process's); state has a device axis.

  Nothing here runs a device op of its own on pmap's outputs. On pmap's arrays (sharded
  over a Mesh of the local devices since JAX 0.8) even `x[0]` is a program on every local
  device with an all-reduce, and `a + b` one on every device: per-step slices and adds of
  the sums queued 17 programs a step, which deadlocked XLA:CPU within 20 steps (see
  _Pacer), and `x[0]`'s replicated result is an argument pmap refuses (a checkpoint
  restored onto get_state's arrays could not be put back). So sums come back as pmap
  returned them, `fetch` takes device 0's copy on the host, and states move through the host.
  """

  def __init__(self, loss_fn: Callable, count_fn: Callable, tx, sums_fn: Callable, accum_steps: int = 1,
               private=None):
    self.num_devices = jax.local_device_count()
    self.accum_steps = accum_steps
    train, evaluate = _steps(loss_fn, count_fn, tx, sums_fn, accum_steps, axis_name=AXIS, private=private)
    self._train = jax.pmap(train, axis_name=AXIS, donate_argnums=0)
    self._eval = jax.pmap(evaluate, axis_name=AXIS)
    # One program places a whole tree with the sharding the steps take (pmap refuses a
    # committed argument sharded otherwise, e.g. a checkpoint restored onto a target).
    self._replicate = jax.pmap(lambda tree: tree, axis_name=AXIS)
    self._pace = _Pacer()

  def _split(self, batch, multiple=1):
    batch = pad_rows(batch, self.num_devices * multiple)
    return jax.tree.map(lambda x: np.reshape(x, (self.num_devices, -1) + np.shape(x)[1:]), batch)

  def put_state(self, state):
    n = self.num_devices
    host = jax.device_get(state)  # A copy: the steps donate what this returns, never the caller's arrays.
    return self._replicate(jax.tree.map(lambda x: np.broadcast_to(x, (n,) + np.shape(x)), host))

  put_constants = put_state

  def get_state(self, device_state):
    """Device 0's copy as numpy (a save reads it to the host anyway): no device program."""
    first = jax.device_get(jax.tree.map(lambda x: x.addressable_shards[0].data, device_state))
    return jax.tree.map(lambda x: x[0], first)

  def train_step(self, device_state, batch, constants=None):
    device_state, sums = self._train(device_state, self._split(batch, self.accum_steps), constants)
    return device_state, self._pace(sums)

  def eval_step(self, device_state, batch):
    return self._pace(self._eval(device_state.params, self._split(batch)))

  def memory(self, device_state, batch, constants=None):
    return _memory(device_state, self._train.lower(device_state, self._split(batch, self.accum_steps),
                                                   constants).compile())

  def fetch(self, sums):
    # psum-ed: every device holds the same sums; device 0's are taken, on the host.
    return jax.tree.map(lambda x: x[0], jax.device_get(sums))


class MeshDriver(Driver):
  """jit over a data x fsdp x tensor Mesh (bigjax.train.sharding): batch rows split over data
  and fsdp, parameters and optimizer state placed by the sharding rules.

  With the default mesh (data = every device) the state is replicated, as data parallelism
  wants. The state's layout is worked out from its first put_state (its shapes), and the
  steps are jitted with it: every step takes and returns the state in that layout, and XLA
  gathers what a matmul needs. Under multi-host, every process passes its own rows of the
  global batch and `make_array_from_process_local_data` stitches them together.
  """

  def __init__(self, loss_fn: Callable, count_fn: Callable, tx, sums_fn: Callable, accum_steps: int = 1,
               mesh_shape: Optional[sharding_lib.MeshShape] = None, rules=None, logical_axes: Optional[Callable] = None,
               fsdp_min_size: int = 1 << 16, private=None):
    self.mesh = sharding_lib.make_mesh(mesh_shape or sharding_lib.MeshShape())
    self.num_devices = jax.device_count()
    self.accum_steps = accum_steps
    if rules is None:
      rules = sharding_lib.parse_rules(sharding_lib.DEFAULT_RULES)
    self._rules, self._logical_axes, self._fsdp_min_size = rules, logical_axes, fsdp_min_size
    self._replicated = NamedSharding(self.mesh, P())
    self._rows = NamedSharding(self.mesh, P(sharding_lib.BATCH_AXES))
    self._steps = _steps(loss_fn, count_fn, tx, sums_fn, accum_steps, private=private)
    self.state_shardings = None  # Set by the first put_state (or abstract_state).
    self._pace = _Pacer()

  def _layout(self, state):
    """The state's shardings, and the jitted steps that keep it in them (once)."""
    if self.state_shardings is None:
      specs = sharding_lib.param_specs(state.params, self.mesh, self._rules,
                                       self._logical_axes() if self._logical_axes else None, self._fsdp_min_size)
      self.param_specs = specs
      self.state_shardings = sharding_lib.named(self.mesh, sharding_lib.state_specs(state, specs))
      train, evaluate = self._steps
      self._train = jax.jit(train, out_shardings=(self.state_shardings, self._replicated), donate_argnums=0)
      self._eval = jax.jit(evaluate, out_shardings=self._replicated)
    return self.state_shardings

  def abstract_state(self, state):
    shardings = self._layout(state)
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)

  def put_batch(self, batch: Batch, multiple: int = 1) -> Batch:
    """This process's rows -> one global array sharded by rows over every process's devices."""
    batch = pad_rows(batch, jax.local_device_count() * multiple)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(self._rows, np.asarray(x)), batch)

  def put_state(self, state):
    shardings = self._layout(state)

    def place(x, sharding):
      if isinstance(x, jax.Array) and x.sharding == sharding:
        return jax.device_put(x, sharding, may_alias=False)  # Already there (a sharded restore): a copy.
      # Through host memory: a state restored on one local device cannot move across hosts on
      # XLA:CPU; every process holds the same values, so each gives its own.
      return jax.device_put(jax.device_get(x), sharding)

    return jax.tree.map(place, state, shardings)

  def put_constants(self, constants):
    return jax.device_put(jax.device_get(constants), self._replicated)

  def get_state(self, device_state):
    return device_state

  def train_step(self, device_state, batch, constants=None):
    device_state, sums = self._train(device_state, self.put_batch(batch, self.accum_steps), constants)
    return device_state, self._pace(sums)

  def eval_step(self, device_state, batch):
    return self._pace(self._eval(device_state.params, self.put_batch(batch)))

  def memory(self, device_state, batch: Batch, constants=None) -> dict:
    compiled = self._train.lower(device_state, self.put_batch(batch, self.accum_steps), constants).compile()
    return dict(_memory(device_state, compiled), mesh=dict(self.mesh.shape),
                split_params=len(sharding_lib.spec_text(self.param_specs)))


def _memory(device_state, compiled) -> dict:
  try:
    stats = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except  # Not every backend analyses (nor every version).
    stats = None
  temp = getattr(stats, 'temp_size_in_bytes', None)
  return {'params_bytes_per_device': sharding_lib.bytes_per_device(device_state.params),
          'optimizer_bytes_per_device': sharding_lib.bytes_per_device(device_state.opt_state),
          'step_temp_bytes_per_device': None if temp is None else int(temp)}


def make_driver(mode: str, *, loss_fn: Callable, count_fn: Callable, tx, sums_fn: Callable,
                accum_steps: int = 1, mesh: Optional[dict] = None, private=None) -> Driver:
  """loss_fn, count_fn and private as for step.train_step; sums_fn(params, batch) -> evaluation sums.

  mesh: MeshDriver's keyword arguments (mesh_shape, rules, logical_axes, fsdp_min_size), for mode 'mesh'.
  """
  drivers = {'none': JitDriver, 'pmap': PmapDriver, 'mesh': MeshDriver}
  if mode not in drivers:
    raise ValueError(f'unknown parallel mode {mode!r}; known: {MODES}')
  if mode == 'mesh':
    return MeshDriver(loss_fn, count_fn, tx, sums_fn, accum_steps, **(mesh or {}), private=private)
  return drivers[mode](loss_fn, count_fn, tx, sums_fn, accum_steps, private=private)


def task_driver(mode: str, task, model, tx, accum_steps: int = 1, mesh: Optional[dict] = None,
                private=None, frozen: Optional[Callable] = None) -> Driver:
  """The driver of a task's steps for a model (see bigjax.tasks); under 'mesh', the model's
  logical axis names (where it declares them) place its parameters. private: DP-SGD's
  gradient (a bigjax.privacy.PrivateGradients), or None. frozen: params -> a tree of bools, True
  on the leaves that never train (bigjax.train.optim.frozen_mask), or None."""
  if mode == 'mesh':
    mesh = dict(mesh or {}, logical_axes=model.logical_axes)
  loss_fn = functools.partial(task.loss, model)
  if frozen is not None:
    loss_fn = without_frozen_gradients(loss_fn, frozen)
  return make_driver(mode, loss_fn=loss_fn, count_fn=task.count, tx=tx,
                     sums_fn=functools.partial(task.eval_sums, model), accum_steps=accum_steps, mesh=mesh,
                     private=private)


def without_frozen_gradients(loss_fn: Callable, frozen: Callable) -> Callable:
  """loss_fn(params, ...) with the frozen leaves of params held constant: their gradient is zero
  (the optimizer ignores it; the gradient's clipping norm no longer counts it) and no backward
  pass runs through what only they compute, such as a frozen encoder under a trained head."""
  def loss(params, *args, **kwargs):
    params = jax.tree.map(lambda p, f: jax.lax.stop_gradient(p) if f else p, params, frozen(params))
    return loss_fn(params, *args, **kwargs)
  return loss


def rows_multiple(mode: str, accum_steps: int = 1) -> int:
  """What the global batch's row count must divide by in this mode (under 'mesh' the rows split
  over data x fsdp, which divides the device count)."""
  return accum_steps * (1 if mode == 'none' else jax.device_count())
