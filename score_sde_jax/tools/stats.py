"""Reference Inception statistics of a dataset for FID / KID: the command.

    python -m score_sde_jax.tools.stats --config=configs/ve/cifar10_ncsnpp_continuous.py \\
        [--output=cifar10_stats.npz] [--split=train|eval] [--batch_size=500] [--data_dir=DIR] \\
        [--inception_weights=PATH]

Runs the FID Inception-v3 over every image of the split and writes ``pool_3``, ``mu``, ``sigma``
and ``num_images`` (`score_sde_jax.evaluation.dataset_stats`; docs/evaluation.md#dataset-statistics).
Console script ``score-sde-stats``; exit codes: docs/commands.md.
"""

from absl import flags, logging

from score_sde_jax import commands, outputs
from score_sde_jax.evaluation import dataset_stats, inception, inception_weights

FLAGS = flags.FLAGS


def _define_flags():
    commands.define_config_flag(None, "Training config (name or file).")
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
    del argv
    config = FLAGS.config
    output = outputs.check_file(FLAGS.output or dataset_stats.stats_filename(config), "--output")
    # Fail on a missing weight file before touching the dataset.
    variables = inception_weights.load_inception_params(FLAGS.inception_weights)
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


def main_cli():
    _define_flags()
    commands.run(main)


if __name__ == "__main__":
    main_cli()
