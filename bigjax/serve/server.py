"""Runs the app under uvicorn, draining on SIGTERM/SIGINT.

On the first signal uvicorn stops accepting connections, closes idle keep-alive ones, and
waits (up to drain_timeout_s) for the requests it holds; the batcher is told at once to
stop waiting for batches to fill, so held requests are answered without the max wait.
Then the app's lifespan closes the batcher. A second SIGINT forces the exit.
"""
import asyncio
import logging

import uvicorn

from bigjax.serve import app as app_lib


class _DrainingServer(uvicorn.Server):

  def __init__(self, config: uvicorn.Config, batcher):
    super().__init__(config)
    self._batcher = batcher
    self._loop = None

  async def serve(self, sockets=None):
    self._loop = asyncio.get_running_loop()
    await super().serve(sockets)

  def handle_exit(self, sig, frame):
    # A signal handler runs between bytecodes of the loop's own thread: hand the loop the
    # call (call_soon_threadsafe is the signal-safe way in) rather than touch its state here.
    if self._loop is not None:
      self._loop.call_soon_threadsafe(self._batcher.drain)
    super().handle_exit(sig, frame)


def serve(model: app_lib.ServedModel, *, host: str = '127.0.0.1', port: int = 8000, drain_timeout_s: float = 30.0,
          access_log: bool = False, **app_options) -> None:
  """Serves until SIGTERM/SIGINT, then drains. app_options: bigjax.serve.app.create_app's limits and batching."""
  app = app_lib.create_app(model, **app_options)
  config = uvicorn.Config(app, host=host, port=port, lifespan='on', access_log=access_log, log_level='info',
                          timeout_graceful_shutdown=drain_timeout_s)
  logging.getLogger('uvicorn.error').info('serving %s (labels %s)', model.describe().get('model'), model.labels)
  _DrainingServer(config, app.state.batcher).run()
