"""Multi-process JAX jobs: one process per host, started before anything touches devices."""
import logging

import jax

from bigjax.errors import ConfigError


def initialize_distributed(*, coordinator_address: str = '', num_processes: int = 0, process_id: int = -1,
                           auto: bool = False, cpu_devices: int = 0) -> None:
  """Starts a multi-process JAX job (one process per host) before anything touches devices.

  Explicit: coordinator_address, num_processes and process_id, as on a GPU cluster.
  auto: jax.distributed.initialize() finds them itself on TPU pods, SLURM and Open MPI.
  cpu_devices: fake CPU devices per process (tests, or a laptop trying out a pod layout).
  """
  if cpu_devices:
    jax.config.update('jax_num_cpu_devices', cpu_devices)
  if coordinator_address or num_processes > 1:
    if not (coordinator_address and num_processes > 1 and 0 <= process_id < num_processes):
      raise ConfigError('a multi-process job needs --coordinator_address=HOST:PORT, --num_processes=N (> 1) '
                        f'and --process_id in [0, N); got {coordinator_address!r}, {num_processes}, {process_id}')
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id)
  elif auto:
    jax.distributed.initialize()
  if jax.process_count() > 1:
    logging.info('process %d of %d; %d local of %d devices', jax.process_index(), jax.process_count(),
                 jax.local_device_count(), jax.device_count())
