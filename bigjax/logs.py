"""Library chatter kept out of a command's output: Orbax's per-step INFO lines, and the noise
of a failed save's other writes, which follows the one real error."""
import logging
import sys
import traceback


class _DropLibraryChatter(logging.Filter):
  """Orbax logs each save and restore step at INFO through absl; keep its warnings only.

  Its errors (with tracebacks) only with --verbose: a failed save reaches the user as
  one CheckpointError that names the step and the cause.
  """

  def __init__(self, verbose: bool = False):
    super().__init__()
    self.verbose = verbose

  def filter(self, record):
    if record.name == 'asyncio' and not self.verbose:
      # A failed save's other writes, left unawaited on Orbax's event loop, are logged when
      # collected ("Task exception was never retrieved"), after the one real error.
      message = record.getMessage()
      if record.exc_info:  # The Orbax frames may be in the attached traceback only.
        message += ''.join(traceback.format_exception(*record.exc_info))
      return not ('was never retrieved' in message and ('orbax' in message or 'OCDBT' in message))
    if '/orbax/' not in record.pathname:
      return True
    return record.levelno >= logging.WARNING and (self.verbose or record.levelno < logging.ERROR)


def quiet_library_logs(verbose: bool = False):
  for handler in logging.getLogger().handlers + logging.getLogger('absl').handlers:
    handler.addFilter(_DropLibraryChatter(verbose))
  if not verbose:
    previous = sys.unraisablehook

    def drop_closed_loop_noise(unraisable):
      # When one write of a save fails (a full disk), TensorStore completes the others on
      # Orbax's already closed event loop: a traceback each, after the real error.
      if not (unraisable.exc_type is RuntimeError and 'Event loop is closed' in str(unraisable.exc_value)):
        previous(unraisable)

    sys.unraisablehook = drop_closed_loop_noise
