"""The table of datasets, `DATASETS`, and `get_source`: the dataset of ``config.data``.

A row says how a dataset is read, whether tfds prepares it, and what its examples are; a new
dataset is a new row (plus a reader module for a new storage format). The datasets, their splits
and preprocessing: docs/data.md.
"""

import dataclasses
from collections.abc import Callable

from score_sde_jax.data import digits, image_folder, preprocessing, tfds_reader, tfrecord, toy2d
from score_sde_jax.data.source import Source

CELEBA_CROP = 140  # the central 140 x 140 of CelebA's 218 x 178 images


def _image_shape(config) -> tuple[int, int, int]:
    size = config.data.image_size
    return (size, size, config.data.num_channels)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """One row of `DATASETS`.

    Attributes:
      read: ``read(name, config, train, data_dir) -> Source``, the training or held-out split.
      tfds: builder, splits and preprocessing, for a dataset that tfds prepares.
      not_in_tfds: what to do instead of ``prepare_data`` for the others (an error message).
      aliases: other accepted spellings of ``data.dataset``.
      num_classes: the number of classes, for a dataset with class labels.
      shape: ``shape(config)``, the shape of one example in model space.
      is_image: uint8 images (else float points).
    """

    read: Callable[..., Source]
    tfds: tfds_reader.TfdsDataset | None = None
    not_in_tfds: str = ""
    aliases: tuple[str, ...] = ()
    num_classes: int | None = None
    shape: Callable[..., tuple[int, ...]] = _image_shape
    is_image: bool = True


def _read_tfds(name, config, train, data_dir) -> Source:
    return tfds_reader.source(name, DATASETS[name].tfds, config, train, data_dir)


def _read_stylegan(name, config, train, data_dir) -> Source:
    """``data.tfrecords_path``, else the folder ``data.path``, else tfds (if it has the dataset).

    There is no held-out split: evaluation reads the training images, as the original did
    (docs/original_code.md, D23).
    """
    if config.data.get("tfrecords_path", None):
        return tfrecord.source(name, config, config.data.tfrecords_path)
    if config.data.get("path", None):
        return image_folder.source(name, config, config.data.path)
    if DATASETS[name].tfds is None:
        raise ValueError(DATASETS[name].not_in_tfds)
    return _read_tfds(name, config, train, data_dir)


def _read_folder(name, config, train, data_dir) -> Source:
    """``data.path``; the held-out split is ``data.eval_path`` if set, else the same folder."""
    path = config.data.get("path", None) if train else config.data.get("eval_path", None)
    path = path or config.data.get("path", None)
    if not path:
        raise ValueError("data.dataset='folder' needs data.path (a directory of images).")
    return image_folder.source(name, config, path)


def _read_digits(name, config, train, data_dir) -> Source:
    return digits.source(config, train, colored=name == "COLOR_DIGITS")


def _read_toy2d(name, config, train, data_dir) -> Source:
    return toy2d.source(config, train)


def _resize_bilinear(size: int):
    return lambda x: preprocessing.resize(x, size, size, "bilinear")


def _celeba_preprocess(size: int):
    crop = preprocessing.central_crop
    return lambda x: preprocessing.resize_small(crop(x, CELEBA_CROP), size, "bilinear")


def _lsun_preprocess(size: int):
    if size == 128:
        resize_small = preprocessing.resize_small
        return lambda x: preprocessing.central_crop(resize_small(x, size, "bilinear"), size)
    return lambda x: preprocessing.crop_resize(x, size, "bicubic")


def _lsun_builder(category: str | None, image_size: int | None) -> str:
    if not category:
        raise ValueError(
            "LSUN needs a category (data.category; prepare_data --category), e.g. 'bedroom' "
            "or 'church_outdoor' (any tfds lsun config)."
        )
    return f"lsun/{category}"


def _as_stored(size: int):
    return lambda x: x  # tfds stores each CelebA-HQ resolution separately


DATASETS: dict[str, Dataset] = {
    "CIFAR10": Dataset(
        _read_tfds,
        tfds_reader.TfdsDataset("cifar10", ("train", "test"), _resize_bilinear),
        num_classes=10,
    ),
    "SVHN": Dataset(
        _read_tfds,
        tfds_reader.TfdsDataset("svhn_cropped", ("train", "test"), _resize_bilinear),
        num_classes=10,
    ),
    "CELEBA": Dataset(
        _read_tfds,
        tfds_reader.TfdsDataset("celeb_a", ("train", "validation"), _celeba_preprocess),
        aliases=("CELEB_A",),
    ),
    "LSUN": Dataset(
        _read_tfds,
        tfds_reader.TfdsDataset(_lsun_builder, ("train", "validation"), _lsun_preprocess),
    ),
    "CELEBAHQ": Dataset(
        _read_stylegan,
        tfds_reader.TfdsDataset(
            lambda _, size: f"celeb_a_hq/{size or 256}", ("train", "train"), _as_stored
        ),
    ),
    "FFHQ": Dataset(
        _read_stylegan,
        not_in_tfds=(
            "FFHQ is not in tfds: set data.tfrecords_path to the StyleGAN .tfrecords "
            "(ffhq-r08.tfrecords = 256 px, ffhq-r10.tfrecords = 1024 px) or data.path to a folder."
        ),
    ),
    "DIGITS": Dataset(
        _read_digits,
        not_in_tfds="DIGITS ships inside scikit-learn; nothing to prepare.",
        num_classes=10,
    ),
    "COLOR_DIGITS": Dataset(
        _read_digits,
        not_in_tfds="COLOR_DIGITS are made from the digits that ship with scikit-learn; nothing to "
        "prepare.",
        num_classes=10,
    ),
    "TOY2D": Dataset(
        _read_toy2d,
        not_in_tfds="TOY2D points are generated from config.data; nothing to prepare.",
        aliases=("GMM2D",),
        shape=toy2d.point_shape,
        is_image=False,
    ),
    "FOLDER": Dataset(
        _read_folder,
        not_in_tfds="Image folders are read directly (data.path); nothing to prepare.",
        aliases=("IMAGEFOLDER",),
    ),
}
_ALIASES = {alias: name for name, row in DATASETS.items() for alias in row.aliases}


def canonical_name(dataset: str) -> str:
    """``config.data.dataset`` in canonical upper case; ValueError listing valid names."""
    name = str(dataset).upper().replace("-", "").replace(" ", "")
    name = _ALIASES.get(name, name)
    if name not in DATASETS:
        raise ValueError(
            f"Unknown dataset {dataset!r}; valid names (case-insensitive): "
            f"{', '.join(DATASETS)} (aliases: {', '.join(_ALIASES)})."
        )
    return name


def dataset_of(config) -> Dataset:
    """The row of ``config.data.dataset``."""
    return DATASETS[canonical_name(config.data.dataset)]


def tfds_name(dataset: str, *, category: str | None = None, image_size: int | None = None) -> str:
    """The tfds builder name of a dataset that tfds prepares (cifar10, lsun/bedroom, ...).

    Raises:
      ValueError: a dataset tfds does not prepare (the message says what to do instead), or
        LSUN without a category.
    """
    row = DATASETS[canonical_name(dataset)]
    if row.tfds is None:
        raise ValueError(row.not_in_tfds)
    return row.tfds.builder_name(category, image_size)


def get_source(config, split: str = "train", data_dir: str | None = None) -> Source:
    """The dataset of ``config.data`` for ``split`` ('train' or 'eval', the held-out split).

    Raises:
      ValueError: unknown dataset (valid names listed), bad options, unreadable images.
      FileNotFoundError: tfds data not prepared (the message gives the ``prepare_data`` command),
        or a missing tfrecords file / image folder.
    """
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}.")
    name = canonical_name(config.data.dataset)
    return DATASETS[name].read(name, config, split == "train", data_dir)


def example_shape(config) -> tuple[int, ...]:
    """Shape of one example in model space: (H, W, C), or (d,) for ``TOY2D`` points."""
    return dataset_of(config).shape(config)


def is_image(config) -> bool:
    """Whether ``config.data`` holds uint8 images (FID, bits/dim, PNG grids) rather than points."""
    return dataset_of(config).is_image
