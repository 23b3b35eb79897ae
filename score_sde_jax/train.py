"""Command line entry point: ``python -m score_sde_jax.train --workdir DIR [--config PATH]``.

Kept thin on purpose, like the original's ``main.py``
(docs/original_code.md#training-evaluation-and-data): flags and process setup here, the loop in
`score_sde_jax.training.train_and_evaluate`. Without ``--config`` it trains the offline default
(`score_sde_jax/configs/digits.py`). Any config key can be overridden, e.g.
``--config.training.n_iters=2000``; re-running with the same ``--workdir`` resumes.

Multi-host: `jax.distributed.initialize` runs when ``--coordinator_address``,
``--num_processes`` and ``--process_id`` are given, or when the launcher is detected (SLURM with
more than one task, Open MPI, a multi-host Cloud TPU); every process then runs this same command.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from score_sde_jax import distributed, training
from score_sde_jax.configs import DEFAULT_CONFIG

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Folder for checkpoints, samples and TensorBoard logs.")
config_flags.DEFINE_config_file(
    "config", DEFAULT_CONFIG, "Config file (default: the offline digits config).", lock_config=True
)
distributed.define_flags()
flags.mark_flags_as_required(["workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    distributed.initialize_from_flags()
    distributed.log_to_workdir(FLAGS.workdir)
    logging.info("Config:\n%s", FLAGS.config)
    training.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
    app.run(main)
