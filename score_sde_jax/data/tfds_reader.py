"""Datasets prepared by tfds in array_record format, read with ``tfds.data_source`` (no TF).

`python -m score_sde_jax.prepare_data` prepares them; an unprepared dataset raises an error that
gives that command.
"""

import dataclasses
import os
from collections.abc import Callable

from score_sde_jax.data.source import Source, image_source


@dataclasses.dataclass(frozen=True)
class TfdsDataset:
    """A dataset that tfds prepares.

    Attributes:
      builder: the tfds builder name, or ``builder(category, image_size) -> name``.
      splits: the tfds splits of (training, held-out).
      preprocess: ``preprocess(image_size)`` -> uint8 image -> uint8 ``image_size`` image.
    """

    builder: str | Callable[[str | None, int | None], str]
    splits: tuple[str, str]
    preprocess: Callable[[int], Callable]

    def builder_name(self, category: str | None = None, image_size: int | None = None) -> str:
        """The tfds builder name (``cifar10``, ``lsun/bedroom``, ``celeb_a_hq/256``, ...)."""
        if isinstance(self.builder, str):
            return self.builder
        return self.builder(category, image_size)


def source(name: str, dataset: TfdsDataset, config, train: bool, data_dir: str | None) -> Source:
    """The prepared training or held-out split of ``dataset`` at ``data.image_size``.

    ``data_dir`` defaults to ``data.data_dir``, then to tfds's own ($TFDS_DATA_DIR, ...).

    Raises:
      FileNotFoundError: not prepared under ``data_dir`` (the message gives the command).
    """
    import tensorflow_datasets as tfds

    data_dir = data_dir or config.data.get("data_dir", None) or None
    builder = dataset.builder_name(config.data.get("category", None), config.data.image_size)
    split = dataset.splits[0 if train else 1]
    try:
        arrays = tfds.data_source(builder, split=split, data_dir=data_dir, download=False)
    except (NotImplementedError, FileNotFoundError, AssertionError) as e:
        where = data_dir or os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")
        raise FileNotFoundError(
            f"{name} (tfds '{builder}', split '{split}') is not prepared in array_record format "
            f"under {where}. Prepare it with:\n  python -m score_sde_jax.prepare_data "
            f"{builder} --data_dir {where}\n(and pass that directory as data_dir, "
            "config.data.data_dir or $TFDS_DATA_DIR)."
        ) from e

    def read(i):
        example = arrays[i]
        return example["image"], example.get("label", 0)

    preprocess = dataset.preprocess(config.data.image_size)
    return image_source(config, f"{name} {split}", len(arrays), read, preprocess)
