"""Multi-process plumbing shared by every command: flags, `jax.distributed`, per-process logs.

Every process of a multi-host job (a TPU pod slice, a SLURM allocation, several local
processes) runs the same command; `initialize` connects them through JAX's own runtime
(`jax.distributed`), and `to_host` gathers a global array back to NumPy on every process. `create_mesh` is the 1-D
``("data",)`` mesh every command shards its batches over.
"""

import logging as std_logging
import os

import jax
import numpy as np
from absl import app, flags, logging
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


def define_flags() -> None:
    """Defines the multi-process flags every command takes (all three, or none for a launcher)."""
    flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-process runs).")
    flags.DEFINE_integer("num_processes", None, "Number of processes (multi-process runs).")
    flags.DEFINE_integer("process_id", None, "Index of this process (multi-process runs).")


def initialize_from_flags() -> None:
    """`initialize` from the flags of `define_flags`; a usage error when only some are given."""
    f = flags.FLAGS
    try:
        initialize(f.coordinator_address, f.num_processes, f.process_id)
    except ValueError as error:
        raise app.UsageError(str(error)) from error


class _QuietOrbax(std_logging.Filter):
    """Drops orbax's INFO lines (a dozen per checkpoint) so that the progress lines stand out."""

    def filter(self, record):
        return record.levelno >= std_logging.WARNING or f"{os.sep}orbax{os.sep}" not in (
            record.pathname
        )


def log_to_workdir(workdir: str) -> None:
    """Copies this process's log into ``workdir`` and logs its place in the run.

    Like the original, the log goes to ``stdout.txt`` (process i > 0: ``stdout_i.txt``).
    """
    os.makedirs(workdir, exist_ok=True)
    suffix = "" if jax.process_index() == 0 else f"_{jax.process_index()}"
    log_file = std_logging.FileHandler(os.path.join(workdir, f"stdout{suffix}.txt"))
    log_file.setFormatter(logging.PythonFormatter())
    std_logging.getLogger().addHandler(log_file)
    for handler in (logging.get_absl_handler(), log_file):
        handler.addFilter(_QuietOrbax())
    logging.info(
        "Process %d/%d, %d local / %d global devices: %s",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
        jax.devices(),
    )


def create_mesh(devices=None) -> jax.sharding.Mesh:
    """A 1-D ``("data",)`` mesh over ``devices`` (default: all devices of all processes)."""
    devices = jax.devices() if devices is None else list(devices)
    return jax.make_mesh(
        (len(devices),), ("data",), axis_types=(jax.sharding.AxisType.Auto,), devices=devices
    )


def to_host(x) -> np.ndarray:
    """A global array as one host NumPy array on every process.

    A NumPy ``x`` is this process's rows: the result is every process's rows, in process order.
    """
    if jax.process_count() == 1 or getattr(x, "is_fully_addressable", False):
        return np.asarray(jax.device_get(x))
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
