"""Command line entry point: ``python -m score_sde_jax.train --workdir DIR [--config PATH]``.

Kept thin on purpose (facts §8.1): flags and process setup here, the loop in
`score_sde_jax.train_lib.train_and_evaluate`. Without ``--config`` it trains the offline default
(`score_sde_jax/configs/digits.py`). Any config key can be overridden, e.g.
``--config.training.n_iters=2000``; re-running with the same ``--workdir`` resumes.

Multi-host: `jax.distributed.initialize` runs when ``--coordinator_address``,
``--num_processes`` and ``--process_id`` are given, or when the launcher is detected (SLURM with
more than one task, Open MPI, a multi-host Cloud TPU); every process then runs this same command.
"""

import logging as std_logging
import os

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from score_sde_jax import distributed, train_lib
from score_sde_jax.configs import DEFAULT_CONFIG

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Folder for checkpoints, samples and TensorBoard logs.")
config_flags.DEFINE_config_file(
    "config", DEFAULT_CONFIG, "Config file (default: the offline digits config).", lock_config=True
)
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-process runs).")
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-process runs).")
flags.DEFINE_integer("process_id", None, "Index of this process (multi-process runs).")
flags.mark_flags_as_required(["workdir"])


class _QuietLibraries(std_logging.Filter):
    """Drops orbax's INFO lines (a dozen per checkpoint) so that the progress lines stand out."""

    def filter(self, record):
        return record.levelno >= std_logging.WARNING or f"{os.sep}orbax{os.sep}" not in (
            record.pathname
        )


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    except ValueError as error:
        raise app.UsageError(str(error)) from error
    os.makedirs(FLAGS.workdir, exist_ok=True)
    # Like the original, keep a copy of the log in the workdir (one file per process).
    suffix = "" if jax.process_index() == 0 else f"_{jax.process_index()}"
    log_file = std_logging.FileHandler(os.path.join(FLAGS.workdir, f"stdout{suffix}.txt"))
    log_file.setFormatter(logging.PythonFormatter())
    std_logging.getLogger().addHandler(log_file)
    for handler in (logging.get_absl_handler(), log_file):
        handler.addFilter(_QuietLibraries())
    logging.info(
        "Process %d/%d, %d local / %d global devices: %s",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
        jax.devices(),
    )
    logging.info("Config:\n%s", FLAGS.config)
    train_lib.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
    app.run(main)
