"""Errors meant for the person running bigjax, not for a debugger.

Each says what went wrong, where (file and line when there is one) and what to do.
Entry points print them without a traceback (unless --verbose) and exit non-zero.
"""


class BigjaxError(Exception):
  """A problem with the user's input, config or environment."""


class DataError(BigjaxError):
  """Input data that cannot be read or does not have the expected form."""


class ConfigError(BigjaxError):
  """A config value that cannot work."""


class CheckpointError(BigjaxError):
  """A checkpoint that cannot be restored into this run."""
