"""Multi-process plumbing shared by the ``train``, ``sample`` and ``evaluate`` commands.

Every process of a multi-host job (a TPU pod slice, a SLURM allocation, several local
processes) runs the same command; `initialize` connects them through JAX's own runtime
(`jax.distributed`), and `to_host` gathers a global array back to NumPy on every process.
"""

import os

import jax
import numpy as np
from jax.experimental import multihost_utils


def launcher_detected() -> bool:
    """Whether a multi-process launcher that `jax.distributed.initialize` can read started us.

    SLURM with more than one task, Open MPI, or a multi-host Cloud TPU slice.
    """
    env = os.environ
    return (
        int(env.get("SLURM_NTASKS", "1")) > 1
        or int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1
        or "," in env.get("TPU_WORKER_HOSTNAMES", "")
    )


def initialize(coordinator_address=None, num_processes=None, process_id=None) -> None:
    """Connects the processes of a multi-process run; a no-op for a single process.

    Explicit arguments (all three or none) take precedence; otherwise a detected launcher lets
    `jax.distributed.initialize` read the cluster from the environment.

    Raises:
      ValueError: only some of the three arguments are given.
    """
    given = (coordinator_address, num_processes, process_id)
    if any(v is not None for v in given) and not all(v is not None for v in given):
        raise ValueError("Pass all of --coordinator_address, --num_processes, --process_id.")
    if coordinator_address is not None:
        jax.distributed.initialize(coordinator_address, num_processes, process_id)
    elif launcher_detected():
        jax.distributed.initialize()


def to_host(x) -> np.ndarray:
    """A global array as one host NumPy array on every process."""
    if x.is_fully_addressable:
        return np.asarray(jax.device_get(x))
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
