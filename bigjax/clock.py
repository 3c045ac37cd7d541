"""How long this process has run: launch-to-X timings in a run's results."""
import os


def process_age_s() -> float | None:
  """Seconds since this process started (Linux /proc; None elsewhere): launch-to-X timings
  that include the interpreter's start and the imports."""
  try:
    with open('/proc/self/stat', encoding='ascii') as f:
      start_ticks = int(f.read().rsplit(')', 1)[1].split()[19])  # Field 22, starttime.
    with open('/proc/uptime', encoding='ascii') as f:
      uptime = float(f.read().split()[0])
    return uptime - start_ticks / os.sysconf('SC_CLK_TCK')
  except (OSError, ValueError, IndexError):
    return None
