"""Measurement helpers for benchmarks/benchmark.py: timing, FLOPs, compilations, memory.

Timings are medians over windows of steps, each window ended by block_until_ready, so a
brief stall from another process moves one window, not the figure. (A process's age, which
the training loop reports too, is bigjax.clock.process_age_s.)
"""
import resource
import statistics
import threading
import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import monitoring

from bigjax.models import registry
from bigjax.types import Batch


class CompileCounter:
  """Counts XLA backend compilations and their seconds, from JAX's own monitoring events.

  A context manager: the listener is process-wide, so it is removed on exit.
  """

  def __init__(self):
    self.count, self.seconds, self._lock = 0, 0.0, threading.Lock()

  def __enter__(self):
    monitoring.register_event_duration_secs_listener(self._on_event)
    return self

  def __exit__(self, *exc):
    monitoring.unregister_event_duration_listener(self._on_event)

  def _on_event(self, name, seconds, **kwargs):
    del kwargs
    if name == '/jax/core/compile/backend_compile_duration':
      with self._lock:
        self.count += 1
        self.seconds += seconds


def matmul_ceiling(n: int = 2048, dtype=jnp.float32, seconds: float = 2.0) -> float:
  """Achieved FLOP/s of a square matmul: the practical ceiling for dense math here.

  dtype: that of the operands; the sums are f32 whatever it is, as in the models' matmuls.
  """
  x = jnp.ones((n, n), dtype)
  f = jax.jit(lambda a: jnp.dot(a, a, preferred_element_type=jnp.float32))
  f(x).block_until_ready()
  times = []
  deadline = time.perf_counter() + seconds
  while time.perf_counter() < deadline or len(times) < 3:
    start = time.perf_counter()
    f(x).block_until_ready()
    times.append(time.perf_counter() - start)
  return 2 * n**3 / statistics.median(times)


def model_flops(model: str, *, batch: int, width: int, real_tokens: int, embed_dim: int, hidden_dim: int,
                num_classes: int, num_layers: int = 1, bidirectional: bool = False) -> dict:
  """Multiply-add FLOPs of one training step (forward + backward = 3x forward), as the model's
  module counts them (ModelSpec.training_flops), from the usual section keys."""
  own = {'hidden_dim': hidden_dim, 'num_layers': num_layers, 'bidirectional': bidirectional}
  return registry.spec(model).training_flops(own, batch=batch, width=width, real_tokens=real_tokens,
                                             embed_dim=embed_dim, num_classes=num_classes)


def peak_host_memory_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB.


def minor_page_faults() -> int:
  """This process's minor page faults so far: each is a page of fresh memory touched."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def peak_device_memory_mib() -> float | None:
  stats = jax.devices()[0].memory_stats() or {}
  peak = stats.get('peak_bytes_in_use')
  return None if peak is None else peak / 2**20


def time_windows(run_window: Callable[[int], object], windows: int) -> list[float]:
  """Seconds of each window; run_window(i) returns something to block on."""
  times = []
  for i in range(windows):
    start = time.perf_counter()
    jax.block_until_ready(run_window(i))
    times.append(time.perf_counter() - start)
  return times


def batch_totals(batches: Sequence[Batch]) -> tuple[float, float]:
  """(real examples, real tokens) in batches."""
  examples = sum(float(np.sum(b.weights)) for b in batches)
  tokens = sum(float(np.sum(np.asarray(b.lengths) * (np.asarray(b.weights) > 0))) for b in batches)
  return examples, tokens
