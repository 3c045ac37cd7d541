"""Serves an exported model over HTTP (JSON), micro-batching concurrent requests.

  python -m experiments.serve --model=artifacts/mlp_sst2 [--port=8000 --host=127.0.0.1]
  curl -s localhost:8000/predict -d '{"texts": ["a gripping film", "dull"]}'

Routes, limits and error answers: bigjax/serve/app.py. Concurrent requests share model calls
(at most --max_batch texts, after waiting at most --max_wait_ms), padded to the trained
length buckets; a full queue (--max_queue texts) answers 503 with Retry-After. SIGTERM or
SIGINT: stop accepting, answer the requests held, exit 0. Bound to 127.0.0.1 unless --host says
otherwise. --warm_up compiles every batch shape before the port opens.
"""
import signal
import sys

from absl import app
from absl import flags
from absl import logging

from bigjax import errors
from bigjax.export import loader
from bigjax.serve import server
from experiments import cli

_MODEL = flags.DEFINE_string('model', None, 'The artifact folder (python -m experiments.export writes one).')
_HOST = flags.DEFINE_string('host', '127.0.0.1', 'Address to bind; 0.0.0.0 exposes the service to the network.')
_PORT = flags.DEFINE_integer('port', 8000, 'Port to bind.')
_MAX_BATCH = flags.DEFINE_integer('max_batch', 64, 'Most texts in one model call (1: no micro-batching).')
_MAX_WAIT_MS = flags.DEFINE_float('max_wait_ms', 0.0, 'Longest a text waits for its batch to fill (0: a batch is what '
                                   'queued while the previous one computed; see docs/results/deployment.md).')
_MAX_QUEUE = flags.DEFINE_integer('max_queue', 1024, 'Texts waiting at most; beyond it requests get 503.')
_MAX_BODY = flags.DEFINE_integer('max_body_bytes', 1 << 20, 'Largest request body.')
_MAX_TEXTS = flags.DEFINE_integer('max_texts', 256, 'Most texts in one request.')
_MAX_CHARS = flags.DEFINE_integer('max_text_chars', 20_000, 'Longest text, in characters.')
_RETRY_AFTER = flags.DEFINE_integer('retry_after_s', 1, 'The Retry-After of a 503.')
_DRAIN_TIMEOUT = flags.DEFINE_float('drain_timeout_s', 30.0, 'On SIGTERM, how long held requests may take.')
_WARM_UP = flags.DEFINE_bool('warm_up', False, 'Compile every (rows, bucket) shape before serving.')
_ACCESS_LOG = flags.DEFINE_bool('access_log', False, 'Log each request.')
_VERBOSE = flags.DEFINE_bool('verbose', False, 'Show tracebacks for user errors.')


def main(argv):
  logging.set_verbosity(logging.WARNING)
  # uvicorn re-raises the signal it drained on; exit 0 then, as a finished drain is a clean stop.
  for sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(sig, lambda *_: sys.exit(0))

  def run():
    if len(argv) > 1:
      raise errors.ConfigError(f'unexpected arguments {argv[1:]}; flags are written --name=value')
    for flag in (_MAX_BATCH, _MAX_QUEUE, _MAX_BODY, _MAX_TEXTS, _MAX_CHARS, _RETRY_AFTER):
      if flag.value < 1:
        raise errors.ConfigError(f'--{flag.name}={flag.value} must be >= 1')
    if _MAX_WAIT_MS.value < 0 or _DRAIN_TIMEOUT.value <= 0 or not 0 <= _PORT.value < 65536:
      raise errors.ConfigError('--max_wait_ms must be >= 0, --drain_timeout_s > 0 and --port in [0, 65535]')
    if _MAX_TEXTS.value > _MAX_QUEUE.value:
      raise errors.ConfigError(f'--max_texts={_MAX_TEXTS.value} exceeds --max_queue={_MAX_QUEUE.value}')
    try:
      artifact = loader.load(_MODEL.value)
    except loader.ArtifactError as e:
      raise errors.ConfigError(str(e)) from None
    server.serve(artifact, host=_HOST.value, port=_PORT.value, drain_timeout_s=_DRAIN_TIMEOUT.value,
                 access_log=_ACCESS_LOG.value, max_batch=_MAX_BATCH.value, max_wait_ms=_MAX_WAIT_MS.value,
                 max_queue=_MAX_QUEUE.value, max_body_bytes=_MAX_BODY.value, max_texts=_MAX_TEXTS.value,
                 max_text_chars=_MAX_CHARS.value, retry_after_s=_RETRY_AFTER.value, warm_up=_WARM_UP.value)

  errors.exit_on_user_error(run, _VERBOSE.value)


if __name__ == '__main__':
  flags.mark_flags_as_required(['model'])
  app.run(main, flags_parser=cli.parse_flags)
