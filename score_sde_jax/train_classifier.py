"""Command line entry point: ``python -m score_sde_jax.train_classifier --workdir DIR [--config P]``.

Trains the noise-conditional classifier that guides class-conditional sampling (facts §5.3);
the loop is `score_sde_jax.classifier_lib.train_and_evaluate`. Without ``--config`` it trains
the offline default (`score_sde_jax/configs/classifier_digits.py`); the released CIFAR-10
classifier's settings are ``configs/classifier/cifar10_wideresnet.py``. Any config key can be
overridden, e.g. ``--config.training.n_iters=500``; re-running with the same ``--workdir``
resumes. Multi-process runs take the same flags as ``score_sde_jax.train``.
"""

import logging as std_logging
import os

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from score_sde_jax import classifier_lib, distributed
from score_sde_jax.configs import CONFIG_DIR

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Folder for checkpoints and TensorBoard logs.")
config_flags.DEFINE_config_file(
    "config",
    os.path.join(CONFIG_DIR, "classifier_digits.py"),
    "Config file (default: the offline digits classifier).",
    lock_config=True,
)
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-process runs).")
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-process runs).")
flags.DEFINE_integer("process_id", None, "Index of this process (multi-process runs).")
flags.mark_flags_as_required(["workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    except ValueError as error:
        raise app.UsageError(str(error)) from error
    os.makedirs(FLAGS.workdir, exist_ok=True)
    suffix = "" if jax.process_index() == 0 else f"_{jax.process_index()}"
    log_file = std_logging.FileHandler(os.path.join(FLAGS.workdir, f"stdout{suffix}.txt"))
    log_file.setFormatter(logging.PythonFormatter())
    std_logging.getLogger().addHandler(log_file)
    # orbax logs a dozen INFO lines per checkpoint; keep its warnings only.
    std_logging.getLogger("absl").addFilter(
        lambda r: r.levelno >= std_logging.WARNING or f"{os.sep}orbax{os.sep}" not in r.pathname
    )
    logging.info(
        "Process %d/%d, %d local / %d global devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )
    logging.info("Config:\n%s", FLAGS.config)
    classifier_lib.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
    app.run(main)
