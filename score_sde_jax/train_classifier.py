"""Command line entry point: ``python -m score_sde_jax.train_classifier --workdir DIR [--config P]``.

Trains the noise-conditional classifier that guides class-conditional sampling (App. I.1);
the loop is `score_sde_jax.training.train_classifier`. Without ``--config`` it trains
the offline default (`score_sde_jax/configs/classifier_digits.py`); the released CIFAR-10
classifier's settings are ``configs/classifier/cifar10_wideresnet.py``. Any config key can be
overridden, e.g. ``--config.training.n_iters=500``; re-running with the same ``--workdir``
resumes. Multi-process runs take the same flags as ``score_sde_jax.train``.
"""

import os

from absl import app, flags, logging
from ml_collections import config_flags

from score_sde_jax import distributed, training
from score_sde_jax.configs import CONFIG_DIR

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Folder for checkpoints and TensorBoard logs.")
config_flags.DEFINE_config_file(
    "config",
    os.path.join(CONFIG_DIR, "classifier_digits.py"),
    "Config file (default: the offline digits classifier).",
    lock_config=True,
)
distributed.define_flags()
flags.mark_flags_as_required(["workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    distributed.initialize_from_flags()
    distributed.log_to_workdir(FLAGS.workdir)
    logging.info("Config:\n%s", FLAGS.config)
    training.train_classifier(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
    app.run(main)
