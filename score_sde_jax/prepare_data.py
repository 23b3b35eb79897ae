"""Prepares a tfds dataset in array_record format, which `data.pipeline` reads without TF.

    python -m score_sde_jax.prepare_data NAME --data_dir DIR [--manual_dir DIR]
        [--category bedroom] [--resolution 256]

NAME is a dataset of the configs (``cifar10``, ``svhn``, ``celeba``, ``lsun`` with
``--category``, ``celebahq`` with ``--resolution``) or any tfds builder name (``lsun/bedroom``,
``celeb_a_hq/1024``, ...). Downloads go through tfds (CIFAR-10, SVHN and LSUN download
themselves; CelebA's Google-Drive download often fails on quota, and CelebA-HQ needs the
PGGAN ``data<r>x<r>.tar`` files in ``--manual_dir``: see the tfds catalog). Preparing needs
TensorFlow (installed with this package); training then reads the prepared files with
``tfds.data_source`` (TF-free reading needs array_record, not the default tfrecord).

FFHQ is not in tfds: point ``data.tfrecords_path`` at the StyleGAN ``.tfrecords`` (one file per
resolution) or ``data.path`` at a folder of images. ``DIGITS`` and ``TOY2D`` need nothing.
"""

import os

from absl import app, flags, logging

from score_sde_jax.data import datasets


def resolve_name(name: str, *, category: str | None = None, resolution: int | None = None) -> str:
    """A dataset name of the configs, or a tfds builder name, -> the tfds builder name.

    Raises:
      ValueError: for datasets tfds does not prepare (with what to do instead), or LSUN without a
        category.
    """
    if "/" in name:  # already a tfds name such as lsun/bedroom
        return name
    try:
        canonical = datasets.canonical_name(name)
    except ValueError:
        return name  # any other tfds builder
    return datasets.tfds_name(canonical, category=category, image_size=resolution)


def prepare_builder(builder, manual_dir: str | None = None) -> None:
    """``download_and_prepare`` a tfds builder in array_record format."""
    import tensorflow_datasets as tfds

    download_config = tfds.download.DownloadConfig(
        manual_dir=os.path.expanduser(manual_dir) if manual_dir else None
    )
    builder.download_and_prepare(file_format="array_record", download_config=download_config)


def prepare(name: str, data_dir: str, **kwargs) -> str:
    """Prepares dataset ``name`` under ``data_dir``; returns the tfds builder name.

    Args:
      name: see `resolve_name`.
      data_dir: tfds data directory (pass the same one to training: ``data_dir`` /
        ``config.data.data_dir`` / $TFDS_DATA_DIR).
      **kwargs: ``category``, ``resolution`` for `resolve_name`; ``manual_dir`` for
        `prepare_builder`.
    """
    import tensorflow_datasets as tfds

    manual_dir = kwargs.pop("manual_dir", None)
    builder_name = resolve_name(name, **kwargs)
    builder = tfds.builder(builder_name, data_dir=os.path.expanduser(data_dir))
    prepare_builder(builder, manual_dir)
    return builder_name


FLAGS = flags.FLAGS


def _define_flags():
    flags.DEFINE_string("data_dir", None, "tfds data directory to prepare into.", required=True)
    flags.DEFINE_string("manual_dir", None, "Directory of manually downloaded files.")
    flags.DEFINE_string("category", None, "LSUN category (bedroom, church_outdoor, ...).")
    flags.DEFINE_integer("resolution", 256, "CelebA-HQ resolution (tfds config).")


def main(argv):
    if len(argv) != 2:
        raise app.UsageError(
            "Usage: python -m score_sde_jax.prepare_data NAME --data_dir DIR; NAME is one of "
            "cifar10, svhn, celeba, lsun (--category), celebahq (--resolution) or a tfds name."
        )
    try:
        builder_name = prepare(
            argv[1],
            FLAGS.data_dir,
            category=FLAGS.category,
            resolution=FLAGS.resolution,
            manual_dir=FLAGS.manual_dir,
        )
    except ValueError as e:  # a dataset tfds does not prepare, or a missing option
        raise app.UsageError(str(e)) from e
    logging.info(
        "Prepared %s under %s; train with data_dir=%s (or $TFDS_DATA_DIR).",
        builder_name,
        FLAGS.data_dir,
        FLAGS.data_dir,
    )


if __name__ == "__main__":
    _define_flags()
    app.run(main)
