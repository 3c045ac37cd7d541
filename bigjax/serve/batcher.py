"""Micro-batching: texts of concurrent requests share one call of the model.

One asyncio worker takes the texts waiting in a bounded queue, up to `max_batch` at a time,
after waiting at most `max_wait_s` (from the arrival of the oldest) for more to arrive, and
runs the batch in a single worker thread, so the event loop keeps accepting and answering
requests meanwhile and the next batch fills while this one computes. The batch function
pads the batch to a trained length bucket (bigjax/export/loader.py: Artifact.run_rows).

With max_wait_s=0 (the default) nothing waits on purpose: a batch is whatever queued up
while the previous one computed, which on the 2-core CPU served more requests per second
and lower p50 latency than a 2 ms wait for both the MLP and the LSTM (docs/results/deployment.md).
A wait pays where a batch of B costs far less than B batches of one (a GPU, a big model).

A full queue refuses a request whole (QueueFull, which the app answers with 503 and
Retry-After) rather than letting latency grow without bound. `drain()` stops waiting for
batches to fill; `close()` answers everything queued, then stops the worker.
"""
import asyncio
import collections
import concurrent.futures
import dataclasses
import time
from typing import Callable, Sequence

import numpy as np


class QueueFull(Exception):
  """No room in the queue for a request's texts now; retry after `retry_after_s`."""

  def __init__(self, queued: int, capacity: int, retry_after_s: int):
    super().__init__(f'the queue holds {queued} of {capacity} texts; retry in {retry_after_s} s')
    self.retry_after_s = retry_after_s


class Closed(Exception):
  """The batcher has stopped (the server is shutting down)."""


@dataclasses.dataclass
class _Item:
  text: str
  future: asyncio.Future
  arrived: float


class MicroBatcher:
  """submit(texts) -> float32[len(texts), K], computed in batches shared with other callers."""

  def __init__(self, run_batch: Callable[[list], np.ndarray], *, max_batch: int = 64, max_wait_s: float = 0.0,
               max_queue: int = 1024, retry_after_s: int = 1):
    if max_batch < 1 or max_queue < 1 or max_wait_s < 0:
      raise ValueError(f'max_batch={max_batch} and max_queue={max_queue} must be >= 1, max_wait_s={max_wait_s} '
                       '>= 0')
    self._run_batch = run_batch
    self.max_batch, self.max_wait_s, self.max_queue = max_batch, max_wait_s, max_queue
    self.retry_after_s = retry_after_s
    self._queue = collections.deque()
    self._wake = None  # asyncio.Event, made in start() on the serving loop.
    self._worker = None
    self._draining = False
    self._closed = False
    # One thread: one batch computes at a time, in the order the batches were formed.
    self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix='batch')
    self.in_flight = 0  # Texts in the batch now computing.
    self.batches = 0
    self.texts = 0
    self.batch_sizes = collections.Counter()

  @property
  def queued(self) -> int:
    return len(self._queue)

  @property
  def draining(self) -> bool:
    return self._draining

  async def start(self) -> None:
    self._wake = asyncio.Event()
    self._worker = asyncio.get_running_loop().create_task(self._work())

  async def run_in_worker_thread(self, fn, *args):
    """Runs fn in the batch thread (e.g. compiling shapes at start-up), never beside a batch."""
    return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

  async def submit(self, texts: Sequence[str]) -> np.ndarray:
    if self._closed:
      raise Closed('the server is shutting down')
    if len(self._queue) + len(texts) > self.max_queue:
      raise QueueFull(len(self._queue), self.max_queue, self.retry_after_s)
    loop = asyncio.get_running_loop()
    now = time.monotonic()
    items = [_Item(text, loop.create_future(), now) for text in texts]
    self._queue.extend(items)
    self._wake.set()
    return np.stack(await asyncio.gather(*(item.future for item in items)))

  def drain(self) -> None:
    """Stop waiting for batches to fill: what is queued is computed at once (shutdown)."""
    self._draining = True
    if self._wake is not None:
      self._wake.set()

  async def close(self) -> None:
    """Answers every queued text, then stops the worker and its thread."""
    self.drain()
    self._closed = True
    if self._worker is not None:
      self._wake.set()
      await self._worker
    self._executor.shutdown(wait=True)

  async def _wait_for(self, seconds: float) -> None:
    self._wake.clear()
    try:
      await asyncio.wait_for(self._wake.wait(), timeout=max(seconds, 0.0))
    except asyncio.TimeoutError:
      pass

  async def _work(self) -> None:
    loop = asyncio.get_running_loop()
    while True:
      if not self._queue:
        if self._closed:
          return
        self._wake.clear()
        await self._wake.wait()
        continue
      # Wait for the batch to fill, until the oldest text has waited max_wait_s.
      deadline = self._queue[0].arrived + self.max_wait_s
      while len(self._queue) < self.max_batch and not self._draining and time.monotonic() < deadline:
        await self._wait_for(deadline - time.monotonic())
      batch = [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]
      self.in_flight = len(batch)
      try:
        probabilities = await loop.run_in_executor(self._executor, self._run_batch, [i.text for i in batch])
      except Exception as e:  # pylint: disable=broad-except  # Each waiting request gets the error.
        for item in batch:
          if not item.future.done():
            item.future.set_exception(e)
      else:
        for item, row in zip(batch, probabilities):
          if not item.future.done():  # A caller that went away (cancelled) is skipped.
            item.future.set_result(row)
      finally:
        self.in_flight = 0
      self.batches += 1
      self.texts += len(batch)
      self.batch_sizes[len(batch)] += 1
