"""A bounded load test of experiments.serve on loopback: throughput, p50/p99 latency, errors.

  # Start the model's service twice (micro-batched, then --max_batch=1) and compare:
  python -m benchmarks.load_test --model=artifacts/mlp_sst2 --texts=texts.txt
  # Or load a service that is already running (loopback only):
  python -m benchmarks.load_test --url=http://127.0.0.1:8000 --texts=texts.txt

--concurrency clients (8) send --requests requests (2,000) in all, each as soon as its last
answer came, with --texts_per_request texts taken in turn from --texts (one per line, or
JSONL); the run also stops at --time_limit_s. --warmup_requests are sent first and not
counted. With --model each service compiles its shapes before opening its port (--warm_up).
Prints (and --json_out writes) the figures and, with --model, the micro-batched/batch-1 ratios
(of medians over --rounds alternating rounds).

  # And the same server answering with the PyTorch seed LSTM, unbatched (benchmarks.torch_peer_serve):
  python -m benchmarks.load_test --model=artifacts/lstm_sst2 --texts=texts.txt \
      --torch_peer=/tmp/torch_peer_sst2 --torch_python=/path/to/python-with-torch
"""
import asyncio
import os
import statistics
import sys
import time

from absl import app
from absl import flags
from absl import logging

from bigjax import errors
from bigjax.export import loader
from bigjax.serve import load
from experiments import cli

_URL = flags.DEFINE_string('url', '', 'A running service (loopback only). Empty: start --model\'s service.')
_MODEL = flags.DEFINE_string('model', '', 'An artifact to serve and load (with and without micro-batching).')
_TEXTS = flags.DEFINE_string('texts', None, 'Texts to send: one per line, or JSONL.')
_REQUESTS = flags.DEFINE_integer('requests', 2000, 'Requests to send (each mode).')
_CONCURRENCY = flags.DEFINE_integer('concurrency', 8, 'Concurrent clients.')
_PER_REQUEST = flags.DEFINE_integer('texts_per_request', 1, 'Texts in each request.')
_TIME_LIMIT = flags.DEFINE_float('time_limit_s', 300.0, 'Stop sending after this long (each mode).')
_WARMUP = flags.DEFINE_integer('warmup_requests', 200, 'Requests sent first and not counted.')
_MAX_BATCH = flags.DEFINE_integer('max_batch', 64, 'The micro-batched service\'s --max_batch (with --model).')
_MAX_WAIT_MS = flags.DEFINE_float('max_wait_ms', 0.0, 'The micro-batched service\'s --max_wait_ms (with --model).')
_BATCH1 = flags.DEFINE_bool('compare_batch1', True, 'With --model, also run the same model at --max_batch=1.')
_ROUNDS = flags.DEFINE_integer('rounds', 1, 'With --model: alternate the two modes this many times; the ratios are '
                               'of the medians (other processes drift less into one mode).')
_TORCH_PEER = flags.DEFINE_string('torch_peer', '', 'With --model: also serve the PyTorch seed LSTM kept in this folder '
                                  '(benchmarks.torch_peer_serve trains it there first) and give ratios against it.')
_TORCH_PYTHON = flags.DEFINE_string('torch_python', sys.executable, 'The Python that runs the torch peer.')
_LOG_DIR = flags.DEFINE_string('server_log_dir', '', 'Keep the services\' logs here.')
_JSON_OUT = flags.DEFINE_string('json_out', '', 'Also write the figures here.')
_VERBOSE = flags.DEFINE_bool('verbose', False, 'Show tracebacks for user errors.')


def _measure(url: str, texts: list) -> dict:
  if _WARMUP.value:
    asyncio.run(load.run_load(url, texts, requests=_WARMUP.value, concurrency=_CONCURRENCY.value,
                              texts_per_request=_PER_REQUEST.value, time_limit_s=_TIME_LIMIT.value))
  return asyncio.run(load.run_load(url, texts, requests=_REQUESTS.value, concurrency=_CONCURRENCY.value,
                                   texts_per_request=_PER_REQUEST.value, time_limit_s=_TIME_LIMIT.value))


def _median(runs: list, *keys) -> float:
  values = []
  for run in runs:
    for key in keys:
      run = run[key]
    values.append(run)
  return float(statistics.median(values))


def _ratios(runs: list, against: list) -> dict:
  """Medians of runs over medians of against: throughput and p50/p99 latency."""
  return {'throughput': _median(runs, 'requests_per_s') / _median(against, 'requests_per_s'),
          'p50_latency': _median(runs, 'latency_ms', 'p50') / _median(against, 'latency_ms', 'p50'),
          'p99_latency': _median(runs, 'latency_ms', 'p99') / _median(against, 'latency_ms', 'p99')}


def _serve_and_measure(name: str, max_batch: int, texts: list) -> dict:
  port = load.free_port()
  url = f'http://127.0.0.1:{port}'
  max_queue = max(1024, _CONCURRENCY.value * _PER_REQUEST.value)
  if name == 'torch-peer':
    argv = [_TORCH_PYTHON.value, '-m', 'benchmarks.torch_peer_serve', f'--workdir={_TORCH_PEER.value}',
            f'--port={port}', f'--max_queue={max_queue}']
  else:
    argv = [sys.executable, '-m', 'experiments.serve', f'--model={_MODEL.value}', f'--port={port}', '--warm_up',
            f'--max_batch={max_batch}', f'--max_wait_ms={_MAX_WAIT_MS.value}', f'--max_queue={max_queue}']
  log_path = None
  if _LOG_DIR.value:
    os.makedirs(_LOG_DIR.value, exist_ok=True)
    log_path = os.path.join(_LOG_DIR.value, f'{name}-{time.strftime("%H%M%S")}.log')
  with load.ServerProcess(argv, url, log_path=log_path) as server:
    result = _measure(url, texts)
    result['batch_sizes'] = server.metadata()['served']['batch_sizes']
  result.update(mode=name, max_batch=max_batch, max_wait_ms=_MAX_WAIT_MS.value,
                server_exit_status=server.returncode)
  return result


def main(argv):
  logging.set_verbosity(logging.WARNING)

  def run():
    if bool(_URL.value) == bool(_MODEL.value):
      raise errors.ConfigError('give one of --url (a running service) and --model (an artifact to serve)')
    if _TORCH_PEER.value and not _MODEL.value:
      raise errors.ConfigError('--torch_peer compares against --model: give both')
    if min(_REQUESTS.value, _CONCURRENCY.value, _PER_REQUEST.value) < 1 or _TIME_LIMIT.value <= 0:
      raise errors.ConfigError('--requests, --concurrency, --texts_per_request and --time_limit_s must be positive')
    try:
      load.check_loopback(_URL.value or 'http://127.0.0.1')
      with open(_TEXTS.value, 'rb') as f:
        texts = list(loader.read_texts(f))
    except (ValueError, OSError) as e:
      raise errors.ConfigError(f'{e}') from None
    if _URL.value:
      report = {'runs': [_measure(_URL.value, texts)]}
    else:
      report = {'runs': []}
      modes = [('micro-batched', _MAX_BATCH.value)] + [('batch-1', 1)] * _BATCH1.value
      modes += [('torch-peer', 1)] * bool(_TORCH_PEER.value)
      for _ in range(_ROUNDS.value):
        for name, max_batch in modes:
          report['runs'].append(_serve_and_measure(name, max_batch, texts))
      by_mode = {name: [r for r in report['runs'] if r['mode'] == name] for name, _ in modes}
      pairs = [('micro-batched', 'batch-1')] * _BATCH1.value
      pairs += [(name, 'torch-peer') for name, _ in modes if name != 'torch-peer'] * bool(_TORCH_PEER.value)
      for mode, against in pairs:
        key = 'ratios' if against == 'batch-1' else f'ratios_{mode}_vs_{against}'
        report[key] = _ratios(by_mode[mode], by_mode[against])
    report['load_average'] = os.getloadavg()
    cli.print_report(report, _JSON_OUT.value)

  cli.run_tool(argv, run, _VERBOSE.value)


if __name__ == '__main__':
  flags.mark_flags_as_required(['texts'])
  app.run(main, flags_parser=cli.parse_flags)
