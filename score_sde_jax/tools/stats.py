"""Reference Inception statistics of a dataset for FID / KID: the command.

    python -m score_sde_jax.tools.stats --config=configs/ve/cifar10_ncsnpp_continuous.py \\
        [--output=cifar10_stats.npz] [--split=train|eval] [--batch_size=500] [--data_dir=DIR] \\
        [--inception_weights=PATH]

Runs the FID Inception-v3 over every image of the split and writes ``pool_3``, ``mu``, ``sigma``
and ``num_images`` (`score_sde_jax.evaluation.dataset_stats`; docs/evaluation.md#dataset-statistics).
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from score_sde_jax.evaluation import dataset_stats, inception, inception_weights

FLAGS = flags.FLAGS


def _define_flags():
    config_flags.DEFINE_config_file("config", None, "Training configuration.", lock_config=True)
    flags.DEFINE_string(
        "output",
        None,
        "Output .npz (default: the original's file name, e.g. cifar10_stats.npz, here).",
    )
    flags.DEFINE_enum(
        "split",
        "train",
        ["train", "eval"],
        "Dataset split: 'train' (the original's CIFAR-10 stats) or 'eval' (the held-out split).",
    )
    flags.DEFINE_string("data_dir", None, "tfds data directory (default: config.data.data_dir).")
    flags.DEFINE_integer("batch_size", 500, "Images per Inception call.")
    flags.DEFINE_string(
        "inception_weights",
        None,
        "FID Inception weight file (.pth or converted .npz); default "
        "$SCORE_SDE_INCEPTION_WEIGHTS or ~/.cache/score_sde_jax/"
        + inception_weights.WEIGHTS_FILENAME,
    )
    flags.mark_flags_as_required(["config"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    config = FLAGS.config
    output = FLAGS.output or dataset_stats.stats_filename(config)
    # Fail on a missing weight file before touching the dataset, with the message alone.
    try:
        variables = inception_weights.load_inception_params(FLAGS.inception_weights)
    except FileNotFoundError as error:
        sys.exit(f"error: {error}")
    inception_fn = inception.make_inception_fn(variables)
    pool_3 = dataset_stats.compute_dataset_pool3(
        config,
        inception_fn,
        split=FLAGS.split,
        batch_size=FLAGS.batch_size,
        data_dir=FLAGS.data_dir,
    )
    dataset_stats.save_stats(output, pool_3)
    logging.info("Wrote statistics of %d images to %s", len(pool_3), output)


if __name__ == "__main__":
    _define_flags()
    app.run(main)
