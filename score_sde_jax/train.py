"""Command line entry point: ``python -m score_sde_jax.train --workdir DIR [--config NAME|PATH]``
(console script ``score-sde-train``).

Kept thin on purpose, like the original's ``main.py``
(docs/original_code.md#training-evaluation-and-data): flags and process setup here, the loop in
`score_sde_jax.training.train_and_evaluate`. Without ``--config`` it trains the offline default
(the config ``digits``). Any config key can be overridden, e.g. ``--config.training.n_iters=2000``;
re-running with the same ``--workdir`` resumes. Flags, exit codes: docs/commands.md.

Multi-host: `jax.distributed.initialize` runs when ``--coordinator_address``,
``--num_processes`` and ``--process_id`` are given, or when the launcher is detected (SLURM with
more than one task, Open MPI, a multi-host Cloud TPU); every process then runs this same command.
"""

from score_sde_jax import commands, training

commands.define_training_flags(
    "digits",
    "Config name or file (default: the offline digits).",
    required_section="model",
    hint=commands.SCORE_MODEL_HINT,
)


def main(argv):
    del argv
    config, workdir = commands.prepare_training(training.ScoreModel)
    training.train_and_evaluate(config, workdir)


def main_cli():
    commands.run(main)


if __name__ == "__main__":
    main_cli()
