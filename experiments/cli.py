"""The command line of experiments/: flags, one-line user errors, and the process set-up.

A bad flag, config file or override is one `error:` line and exit status 2; a user's error
while running (bigjax.errors.BigjaxError) likewise (--verbose shows the traceback).
"""
import difflib
import json
import logging
import os
import runpy
import sys
from typing import Callable, Optional

from absl import flags
import jax
from jax.experimental.compilation_cache import compilation_cache
import ml_collections

from bigjax import distributed
from bigjax import hostmem
from bigjax import logs
from bigjax.data import cache as cache_lib
from bigjax.errors import ConfigError, exit_on_user_error


def define_job_flags() -> Callable[[], None]:
  """Defines the flags of a training job (multi-host and fake devices); returns the function that
  starts the job from them (initialize_distributed), to call before anything touches devices."""
  coordinator = flags.DEFINE_string('coordinator_address', '', 'HOST:PORT of process 0, for multi-process jobs.')
  num_processes = flags.DEFINE_integer('num_processes', 0, 'Processes in the job (multi-process only).')
  process_id = flags.DEFINE_integer('process_id', -1, 'This process, 0..num_processes-1.')
  auto = flags.DEFINE_bool('distributed', False, 'jax.distributed.initialize() with auto-detection (TPU pods, '
                           'SLURM, Open MPI).')
  cpu_devices = flags.DEFINE_integer('cpu_devices', 0, 'Fake CPU devices per process (0: JAX default).')
  return lambda: distributed.initialize_distributed(coordinator_address=coordinator.value, num_processes=num_processes.value,
                                        process_id=process_id.value, auto=auto.value, cpu_devices=cpu_devices.value)


def use_compilation_cache(config: ml_collections.ConfigDict) -> Optional[str]:
  """JAX's persistent compilation cache in cache.dir/jax (cache.compilation=False: off): a second
  run of a config loads its compiled steps instead of compiling them. Returns the folder."""
  if not config.cache.compilation:
    return None
  folder = os.path.join(config.cache.dir or cache_lib.default_root(), 'jax')
  if jax.config.jax_compilation_cache_dir != folder:
    # JAX trusts what it finds there (it runs it): the default is the user's own cache folder.
    compilation_cache.set_cache_dir(folder)
    compilation_cache.reset_cache()  # Taken up at the next compile, even where this process has compiled.
    # Every step shape is worth keeping: a length bucket of the MLP compiles in well under a second.
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  return folder

_KEEP_FREED_MEMORY = flags.DEFINE_bool(
    'keep_freed_memory', True, 'Keep freed host memory in the process (glibc mallopt) so that XLA:CPU steps do not '
    'page-fault their temporaries in again each step. See bigjax/hostmem.py.')


def setup_host() -> bool:
  """Process-wide settings, before JAX allocates anything big. Returns whether freed memory is kept."""
  if not _KEEP_FREED_MEMORY.value:
    return False
  kept = hostmem.keep_freed_memory()
  if not kept:
    logging.info('keep_freed_memory: not a glibc system; left the allocator as it is')
  return kept


def _bad_override(argv: list[str]) -> Optional[str]:
  """The first --config.KEY=... whose KEY the config file lacks, as a message; None if all exist."""
  path = next((a.split('=', 1)[1] for a in argv if a.startswith('--config=')), None)
  try:
    config = runpy.run_path(path.split(':')[0])['get_config']()
  except Exception:  # pylint: disable=broad-except
    return None  # The config file itself is the problem; absl's message names it.
  for arg in argv:
    if not arg.startswith('--config.'):
      continue
    key = arg[len('--config.'):].split('=', 1)[0]
    node, parts = config, key.split('.')
    for depth, part in enumerate(parts):
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        where = '.'.join(parts[:depth]) or 'the config'
        keys = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
        close = difflib.get_close_matches(part, keys, n=1)
        hint = f'did you mean {".".join(parts[:depth] + close)}? ' if close else ''
        return (f'--config.{key}: {where} has no key {part!r}; {hint}keys there: {", ".join(keys)} (see '
                f'{path})')
      node = node[part]
  return None


def parse_flags(argv: list[str]):
  """absl's flag parser, but a bad flag, config file or override is one line and exit status 2."""
  try:
    rest = flags.FLAGS(argv)
    if 'config' in flags.FLAGS and flags.FLAGS['config'].value is not None:
      flags.FLAGS['config'].value.get('seed')  # config_flags raises a config file's load error on first use.
    return rest
  except Exception as e:  # config_flags raises flags.Error, OSError, SyntaxError, KeyError, AttributeError.
    if any(a in ('--verbose', '--verbose=true', '--verbose=1') for a in argv):
      raise
    if isinstance(e, flags.Error):
      message = f'{e} (--helpfull lists the flags; config keys and their types are in the --config file)'
    elif isinstance(e, (KeyError, AttributeError)) and _bad_override(argv):
      message = _bad_override(argv)
    elif isinstance(e, SyntaxError):
      message = f'{e.filename}:{e.lineno}: {e.msg} (a syntax error in the --config file)'
    else:  # e.g. a missing --config file: config_flags' message says which and where it looked.
      cause = e.__cause__ or e
      lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
      message = f'cannot load --config: {lines[-1] if lines else type(cause).__name__}'
    print(f'error: {message}', file=sys.stderr)
    sys.exit(2)


def run_trainer(argv, main_fn, verbose: bool):
  """A training entry point's main: INFO progress logs, the host set up (see setup_host), no
  stray positional arguments, user errors as one line."""
  setup_host()
  return _run_main(argv, main_fn, verbose, 'info')


def run_tool(argv, main_fn, verbose: bool):
  """A post-training tool's main: warnings only, no stray positional arguments, user errors as one line."""
  return _run_main(argv, main_fn, verbose, 'warning')


def _run_main(argv, main_fn, verbose: bool, level: str):
  logging.getLogger().setLevel(level.upper())
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  absl_logging.set_verbosity(level)
  logs.quiet_library_logs(verbose)

  def checked():
    if len(argv) > 1:
      raise ConfigError(f'unexpected arguments {argv[1:]}; flags are written --name=value')
    return main_fn()

  return exit_on_user_error(checked, verbose)


def print_report(report: dict, json_out: str = '') -> None:
  """A tool's JSON report on stdout, and in json_out if given."""
  json.dump(report, sys.stdout, indent=1)
  print()
  if json_out:
    with open(json_out, 'w', encoding='utf-8') as f:
      json.dump(report, f, indent=1)
