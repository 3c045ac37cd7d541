"""A bounded load test of the service, on loopback only: N concurrent clients, a fixed number
of requests, a time limit, every answer checked.

Each client sends POST /predict with `texts_per_request` texts drawn in turn from a list,
over its own keep-alive connection, as soon as its previous answer arrived (a closed loop,
so the offered load follows the service's speed). An error is any answer that is not 200
with one prediction per text, or a transport failure; the run stops at `requests` requests or
`time_limit_s`, whichever comes first.
"""
import asyncio
import ipaddress
import os
import signal
import socket
import subprocess
import time
import urllib.parse
from typing import Optional, Sequence

import httpx
import numpy as np


def check_loopback(url: str) -> str:
  """The URL, if its host resolves to a loopback address only; ValueError otherwise."""
  host = urllib.parse.urlsplit(url).hostname
  if not host:
    raise ValueError(f'{url!r} has no host')
  try:
    addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
  except socket.gaierror as e:
    raise ValueError(f'{host!r} does not resolve ({e})') from None
  if not all(ipaddress.ip_address(a.split('%')[0]).is_loopback for a in addresses):
    raise ValueError(f'{url} resolves to {sorted(addresses)}; the load test only targets loopback (127.0.0.0/8, ::1)')
  return url


async def run_load(url: str, texts: Sequence[str], *, requests: int = 2000, concurrency: int = 8,
                   texts_per_request: int = 1, time_limit_s: float = 300.0, timeout_s: float = 30.0) -> dict:
  """Sends the requests and returns counts, errors, throughput and latency percentiles."""
  check_loopback(url)
  if not texts:
    raise ValueError('no texts to send')
  endpoint = url.rstrip('/') + '/predict'
  latencies, errors = [], {}
  sent = 0
  deadline = time.monotonic() + time_limit_s
  limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

  async def client(http: httpx.AsyncClient):
    nonlocal sent
    while sent < requests and time.monotonic() < deadline:
      index = sent
      sent += 1
      start = index * texts_per_request
      batch = [texts[(start + i) % len(texts)] for i in range(texts_per_request)]
      began = time.perf_counter()
      try:
        response = await http.post(endpoint, json={'texts': batch})
        ok = response.status_code == 200 and len(response.json().get('predictions', ())) == len(batch)
        kind = None if ok else f'status {response.status_code}'
      except (httpx.HTTPError, ValueError) as e:
        kind = type(e).__name__
      latencies.append(time.perf_counter() - began)
      if kind:
        errors[kind] = errors.get(kind, 0) + 1

  began = time.perf_counter()
  async with httpx.AsyncClient(timeout=timeout_s, limits=limits) as http:
    await asyncio.gather(*(client(http) for _ in range(concurrency)))
  elapsed = time.perf_counter() - began
  ms = np.asarray(latencies) * 1000
  done = len(latencies)
  return {'url': url, 'requests': done, 'requested': requests, 'concurrency': concurrency,
          'texts_per_request': texts_per_request, 'errors': sum(errors.values()), 'error_kinds': errors,
          'stopped_by_time_limit': done < requests, 'seconds': elapsed, 'requests_per_s': done / elapsed,
          'texts_per_s': done * texts_per_request / elapsed,
          'latency_ms': {'p50': float(np.percentile(ms, 50)), 'p90': float(np.percentile(ms, 90)),
                         'p99': float(np.percentile(ms, 99)), 'max': float(ms.max()), 'mean': float(ms.mean())}}


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


class ServerProcess:
  """A service started as a subprocess (argv), waited for on url/healthz, stopped with SIGTERM."""

  def __init__(self, argv: Sequence[str], url: str, *, start_timeout_s: float = 600.0,
               log_path: Optional[str] = None):
    self.argv, self.url, self.start_timeout_s = list(argv), check_loopback(url), start_timeout_s
    self.log_path = log_path
    self.process = None
    self.returncode = None

  def __enter__(self):
    log = open(self.log_path or os.devnull, 'wb')  # pylint: disable=consider-using-with
    self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT)  # pylint: disable=consider-using-with
    log.close()
    deadline = time.monotonic() + self.start_timeout_s
    while time.monotonic() < deadline:
      if self.process.poll() is not None:
        raise RuntimeError(f'the server exited with status {self.process.returncode} before answering '
                           f'(log: {self.log_path or "not kept"})')
      try:
        if httpx.get(self.url.rstrip('/') + '/healthz', timeout=2).status_code == 200:
          return self
      except httpx.HTTPError:
        pass
      time.sleep(0.25)
    self.__exit__(None, None, None)
    raise RuntimeError(f'the server did not answer {self.url}/healthz within {self.start_timeout_s} s')

  def metadata(self) -> dict:
    return httpx.get(self.url.rstrip('/') + '/metadata', timeout=10).json()

  def __exit__(self, *exc):
    if self.process and self.process.poll() is None:
      self.process.send_signal(signal.SIGTERM)
      try:
        self.process.wait(timeout=60)
      except subprocess.TimeoutExpired:
        self.process.kill()
        self.process.wait()
    self.returncode = self.process.returncode if self.process else None
    return False
