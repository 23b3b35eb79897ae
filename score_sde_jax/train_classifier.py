"""Command line entry point: ``python -m score_sde_jax.train_classifier --workdir DIR
[--config NAME|PATH]`` (console script ``score-sde-train-classifier``).

Trains the noise-conditional classifier that guides class-conditional sampling (App. I.1);
the loop is `score_sde_jax.training.train_classifier`. Without ``--config`` it trains
the offline default (the config ``classifier_digits``); the released CIFAR-10
classifier's settings are ``configs/classifier/cifar10_wideresnet.py``. Any config key can be
overridden, e.g. ``--config.training.n_iters=500``; re-running with the same ``--workdir``
resumes. Multi-process runs take the same flags as ``score_sde_jax.train`` (docs/commands.md).
"""

from score_sde_jax import commands, training

commands.define_training_flags(
    "classifier_digits",
    "Classifier config name or file (default: the offline digits classifier).",
    required_section="classifier",
    hint="train_classifier needs a classifier config, e.g. classifier_digits or "
    "configs/classifier/cifar10_wideresnet.py; score models train with score_sde_jax.train",
)


def main(argv):
    del argv
    config, workdir = commands.prepare_training(training.classifier.Classifier)
    training.train_classifier(config, workdir)


def main_cli():
    commands.run(main)


if __name__ == "__main__":
    main_cli()
