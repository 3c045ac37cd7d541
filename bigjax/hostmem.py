"""Host-memory settings that decide XLA:CPU step time."""
import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1  # mallopt parameter numbers, from glibc's malloc.h.
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
# No mmap'd blocks; trim only above 2 GiB free; one arena, so that XLA's worker threads use the
# main heap, where the first two settings hold.
_MMAP_MAX, _TRIM_THRESHOLD, _ARENA_MAX = 0, 2**31 - 1, 1
# The same setting as environment variables, read by glibc at process start: for giving
# other programs (the PyTorch peers) bigjax's allocator behaviour in a comparison.
KEEP_FREED_MEMORY_ENV = {'MALLOC_MMAP_MAX_': str(_MMAP_MAX), 'MALLOC_TRIM_THRESHOLD_': str(_TRIM_THRESHOLD),
                         'MALLOC_ARENA_MAX': str(_ARENA_MAX)}


def keep_freed_memory(one_arena: bool = True) -> bool:
  """Makes glibc keep freed blocks for reuse instead of returning them to the OS.

  XLA:CPU allocates each step's temporaries afresh (the dense embedding gradient alone is
  V x E floats, 18 MB for SST-2). glibc serves blocks that large with mmap and unmaps them
  on free, so every step faults the same pages in again. With mmap off and trimming at
  2 GiB the next step reuses heap memory: on the 2-core VM an SST-2 LSTM step went from
  13.5k to 3.8k page faults and 13% more examples/s (docs/results/RESULTS.md, speed section).
  Those two alone did not keep the temporaries of XLA:CPU's worker threads, each in a glibc
  arena of its own (a thread that finds the main arena locked gets one), so glibc also gets one
  arena and the threads allocate from the main heap too: the IMDB language model's f32 step went
  from ~50k page faults to 2k and 7 % more tokens/s on an AMD EPYC VM (docs/results/RESULTS.md, "One
  malloc arena").

  Returns whether the setting took effect (False off glibc, e.g. macOS: nothing to do).
  Call it early: blocks allocated before keep their mmap.
  """
  if not sys.platform.startswith('linux'):
    return False
  try:
    libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
    mallopt = libc.mallopt
  except (OSError, AttributeError):  # musl and other libcs have no mallopt.
    return False
  settings = [(_M_MMAP_MAX, _MMAP_MAX), (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)]
  if one_arena:  # (False: only for measuring what the arena cap does.)
    settings.append((_M_ARENA_MAX, _ARENA_MAX))
  return all([bool(mallopt(param, value)) for param, value in settings])
