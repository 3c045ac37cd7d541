"""Errors meant for the person running bigjax, not for a debugger.

Each says what went wrong, where (file and line when there is one) and what to do.
Entry points print them without a traceback (unless --verbose) and exit non-zero.
"""
import errno
import sys


class BigjaxError(Exception):
  """A problem with the user's input, config or environment."""


class DataError(BigjaxError):
  """Input data that cannot be read or does not have the expected form."""


class ConfigError(BigjaxError):
  """A config value that cannot work."""


class CheckpointError(BigjaxError):
  """A checkpoint that cannot be restored into this run."""


def exit_on_user_error(main_fn, verbose: bool):
  """Runs main_fn; a user's error becomes one clear line and exit status 2 (traceback with --verbose).

  User errors: a BigjaxError, a full disk, and an interrupt before a checkpoint could be
  saved (exit status 130, as shells report Ctrl-C).
  """
  try:
    return main_fn()
  except BigjaxError as e:
    if verbose:
      raise
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  except OSError as e:
    if verbose or e.errno not in (errno.ENOSPC, errno.EDQUOT):
      raise
    print(f'error: {e.filename or "writing"}: {e.strerror}; free some space (or move --workdir) and rerun the '
          'same command to resume from the last checkpoint', file=sys.stderr)
    sys.exit(2)
  except KeyboardInterrupt as e:
    if verbose:
      raise
    print(f'error: interrupted ({e or "SIGINT"}) before a checkpoint was saved; rerun the same command to resume '
          'from the last checkpoint', file=sys.stderr)
    sys.exit(130)
