"""Dataset sources: random-access uint8 images (or toy points) with labels, at `data.image_size`.

A source is anything with ``len(source)`` and ``source[i] -> (example, label)``: ``example`` is a
uint8 ``[H, W, C]`` image already cropped and resized to ``config.data.image_size`` (or a float32
``[d]`` point for ``TOY2D``) and ``label`` an int. The input pipeline (`input_pipeline`) shuffles,
shards, flips, dequantizes and scales them; everything here is deterministic.

Datasets (``config.data.dataset``, case-insensitive;
docs/original_code.md#training-evaluation-and-data):

* ``CIFAR10``, ``SVHN``: tfds ``cifar10`` / ``svhn_cropped``, splits train / test; resized to
  ``image_size`` with antialiased bilinear when it is not 32.
* ``CELEBA``: tfds ``celeb_a``, train / validation; central crop 140 x 140 (of 218 x 178), then the
  short side resized to ``image_size`` (antialiased bilinear).
* ``LSUN``: tfds ``lsun/<data.category>`` (``bedroom``, ``church_outdoor``, ...), train /
  validation; ``image_size`` 128: short side resized (antialiased bilinear) then central crop;
  otherwise: the largest central square resized with antialiased bicubic.
* ``CELEBAHQ``, ``FFHQ``: ``data.tfrecords_path`` (the StyleGAN / PGGAN multi-resolution
  ``.tfrecords``, one file per resolution: features ``shape`` int64[3] and ``data`` raw uint8 CHW),
  else ``data.path`` (an image folder), else (CelebA-HQ only) tfds ``celeb_a_hq/<image_size>``.
  There is no held-out split: evaluation reads the training images, as in the original
  (docs/original_code.md, D23).
* ``DIGITS``: the 1,797 8 x 8 handwritten digits bundled with scikit-learn (nothing is
  downloaded); values 0..16 scaled to uint8 by round(v * 255 / 16); ``data.resize`` = 'bilinear'
  (default; antialiased) or 'pad' (zeros around the native 8 x 8); the last 180 images (10 %) are
  the held-out split.
* ``TOY2D`` (alias ``GMM2D``): a fixed set of points from a Gaussian mixture, ``data.mixture_weights``
  [K], ``data.mixture_means`` [K, d], ``data.mixture_stds`` (scalar, [K] or [K, d]) or
  ``data.mixture_covs`` [K, d, d], ``data.num_train`` (10,000), ``data.num_eval`` (2,000),
  ``data.data_seed`` (0). Labels are the mixture components.
* ``FOLDER``: every ``.png`` / ``.jpg`` / ``.jpeg`` under ``data.path`` (sorted relative paths;
  EXIF orientation applied), largest central square resized to ``image_size`` with antialiased
  bicubic; held-out split ``data.eval_path`` if set, else the same folder. Labels: the index of an
  image's top-level subdirectory (sorted) when every image lies in one, else 0.

Resizing (docs/original_code.md, D22, re-implemented deliberately): target sizes are integers (short
side ``round(side * image_size / short_side)``, half to even as ``tf.round``); resampling is PIL's
antialiased filter (triangle for bilinear, Keys a = -0.5 cubic for bicubic, support widened by the
downscale factor) evaluated in float32 — the same definition as ``tf.image.resize(...,
antialias=True)``, which it matches to < 0.005 levels — followed by clip to [0, 255] and round to
uint8. Unlike the original (which kept the resized floats for CIFAR-10 / CelebA and cast bicubic
overshoots to uint8 without clipping for LSUN), every dataset is therefore 8-bit data, so uniform
dequantization and bits/dim are well defined.

Channels: an image whose channel count differs from ``data.num_channels`` (grayscale or RGBA files
in an RGB folder, ...) raises a ValueError, unless ``data.convert_channels`` is True: then
grayscale is replicated, color becomes ITU-R 601 luma, and alpha is dropped.
"""

import functools
import importlib.util
import os
import pathlib
import weakref

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

DATASETS = ("CIFAR10", "SVHN", "CELEBA", "LSUN", "CELEBAHQ", "FFHQ", "DIGITS", "TOY2D", "FOLDER")
_ALIASES = {"GMM2D": "TOY2D", "CELEB_A": "CELEBA", "IMAGEFOLDER": "FOLDER"}
# tfds splits for (training, held-out).
_TFDS_SPLITS = {
    "CIFAR10": ("train", "test"),
    "SVHN": ("train", "test"),
    "CELEBA": ("train", "validation"),
    "LSUN": ("train", "validation"),
    "CELEBAHQ": ("train", "train"),
}
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
DIGITS_NUM_EVAL = 180
CELEBA_CROP = 140


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


def tfds_name(dataset: str, *, category: str | None = None, image_size: int | None = None) -> str:
    """The tfds builder name of a dataset that tfds can prepare (cifar10, lsun/bedroom, ...)."""
    name = canonical_name(dataset)
    if name == "CIFAR10":
        return "cifar10"
    if name == "SVHN":
        return "svhn_cropped"
    if name == "CELEBA":
        return "celeb_a"
    if name == "LSUN":
        if not category:
            raise ValueError(
                "LSUN needs a category (data.category; prepare_data --category), e.g. 'bedroom' "
                "or 'church_outdoor' (any tfds lsun config)."
            )
        return f"lsun/{category}"
    if name == "CELEBAHQ":
        return f"celeb_a_hq/{image_size or 256}"
    raise ValueError(
        f"{name} is not a tfds dataset; tfds can prepare "
        f"{', '.join(n for n in DATASETS if n in _TFDS_SPLITS)}."
    )


# ------------------------------------------------------------------------------------------------
# Deterministic preprocessing on uint8 [H, W, C] arrays (docs/original_code.md, D22).
# ------------------------------------------------------------------------------------------------

_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


def central_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The central ``size`` x ``size`` window, top-left at ((H - size) // 2, (W - size) // 2)."""
    h, w = image.shape[:2]
    if size > min(h, w):
        raise ValueError(f"Cannot crop {size} x {size} from a {h} x {w} image.")
    top, left = (h - size) // 2, (w - size) // 2
    return image[top : top + size, left : left + size]


def resize(image: np.ndarray, height: int, width: int, method: str = "bilinear") -> np.ndarray:
    """Antialiased resize of a uint8 [H, W, C] image to [height, width, C], clipped and rounded.

    Equals ``tf.image.resize(image, (height, width), method, antialias=True)`` up to float32
    rounding, then ``clip(round(.), 0, 255)`` to uint8 (docs/original_code.md, D22).
    """
    if method not in _RESAMPLE:
        raise ValueError(f"Unknown resize method {method!r}; valid: {', '.join(_RESAMPLE)}.")
    if image.shape[:2] == (height, width):
        return image
    channels = [
        np.asarray(
            Image.fromarray(image[..., c].astype(np.float32), mode="F").resize(
                (width, height), _RESAMPLE[method]
            )
        )
        for c in range(image.shape[-1])
    ]
    return np.clip(np.round(np.stack(channels, axis=-1)), 0, 255).astype(np.uint8)


def short_side_size(height: int, width: int, resolution: int) -> tuple[int, int]:
    """Integer (height, width) with the short side ``resolution`` and the aspect ratio kept."""
    short = min(height, width)
    return round(height * resolution / short), round(width * resolution / short)


def resize_small(image: np.ndarray, resolution: int, method: str = "bilinear") -> np.ndarray:
    """Resize so that the short side is ``resolution`` (the original's ``resize_small``)."""
    return resize(image, *short_side_size(*image.shape[:2], resolution), method=method)


def crop_resize(image: np.ndarray, resolution: int, method: str = "bicubic") -> np.ndarray:
    """Largest central square, resized to ``resolution`` (the original's LSUN ``crop_resize``)."""
    return resize(central_crop(image, min(image.shape[:2])), resolution, resolution, method)


def pad_to(image: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad an image to ``size`` x ``size``, centred (extra row/column at the bottom/right)."""
    h, w = image.shape[:2]
    if h > size or w > size:
        raise ValueError(f"Cannot pad a {h} x {w} image to {size} x {size}; use a resize.")
    top, left = (size - h) // 2, (size - w) // 2
    return np.pad(image, ((top, size - h - top), (left, size - w - left), (0, 0)))


def match_channels(image: np.ndarray, num_channels: int, convert: bool, what: str) -> np.ndarray:
    """Returns ``image`` with ``num_channels`` (1 or 3) channels, or raises.

    Args:
      image: uint8 [H, W, C] with C in 1 (gray), 2 (gray + alpha), 3 (RGB), 4 (RGBA).
      num_channels: ``config.data.num_channels``.
      convert: ``config.data.convert_channels``: replicate gray, ITU-R 601 luma for color, drop
        alpha. Without it a mismatch is an error, so that a stray grayscale or RGBA file is not
        silently reinterpreted.
      what: names the image in the error message.
    """
    c = image.shape[-1]
    if c == num_channels:
        return image
    if num_channels not in (1, 3):
        raise ValueError(f"data.num_channels must be 1 or 3 for images, got {num_channels}.")
    if not convert:
        raise ValueError(
            f"{what} has {c} channels but data.num_channels={num_channels}; set "
            "data.convert_channels=True to convert (gray replicated, color to luma, alpha dropped) "
            "or fix the data."
        )
    color = image[..., :3] if c >= 3 else image[..., :1]
    if num_channels == 3:
        return np.repeat(color, 3, axis=-1) if color.shape[-1] == 1 else color
    if color.shape[-1] == 1:
        return color
    luma = color.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.clip(np.round(luma), 0, 255).astype(np.uint8)[..., None]


# ------------------------------------------------------------------------------------------------
# Sources.
# ------------------------------------------------------------------------------------------------


class Source:
    """A random-access dataset: ``source[i] -> (example, label)`` with a fixed example shape.

    Attributes:
      name: description used in messages.
      shape: shape of every example ([H, W, C], or [d] for points).
      is_image: uint8 images (flip / dequantization / scaling apply) rather than float points.
    """

    def __init__(self, name, num_examples, read, preprocess, shape, *, is_image, channels=None):
        self.name = name
        self.shape = tuple(shape)
        self.is_image = is_image
        self._num_examples = num_examples
        self._read = read
        self._preprocess = preprocess
        self._channels = channels  # (num_channels, convert) for images

    def __len__(self) -> int:
        return self._num_examples

    def __getitem__(self, index: int):
        if not 0 <= index < self._num_examples:
            raise IndexError(f"Index {index} out of range for {self.name} ({len(self)} examples).")
        example, label = self._read(int(index))
        what = f"{self.name} example {index}"
        if self.is_image:
            example = np.asarray(example, np.uint8)
            if example.ndim == 2:
                example = example[..., None]
            example = match_channels(example, *self._channels, what=what)
        example = self._preprocess(example)
        if example.shape != self.shape:
            raise ValueError(f"{what} has shape {example.shape}, expected {self.shape}.")
        return example, int(label)


def _image_source(config, name, num_examples, read, preprocess):
    size, channels = config.data.image_size, config.data.num_channels
    return Source(
        name,
        num_examples,
        read,
        preprocess,
        (size, size, channels),
        is_image=True,
        channels=(channels, bool(config.data.get("convert_channels", False))),
    )


@functools.cache
def digits_uint8() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 8 x 8 digits as uint8 [N, 8, 8, 1] (round(v * 255 / 16)), labels [N].

    Reads the CSV that scikit-learn ships (``sklearn/datasets/data/digits.csv.gz``: 64 pixel
    values 0..16 then the digit, per row) without importing ``sklearn.datasets``, whose import
    takes seconds; falls back to ``load_digits`` if the file moves.
    """
    spec = importlib.util.find_spec("sklearn")
    path = (
        pathlib.Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec else None
    )
    if path is not None and path.is_file():
        table = np.loadtxt(path, delimiter=",")
        pixels, labels = table[:, :-1].reshape(-1, 8, 8), table[:, -1]
    else:
        from sklearn.datasets import load_digits

        digits = load_digits()
        pixels, labels = digits.images, digits.target
    images = np.round(pixels * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = labels.astype(np.int32)
    images.flags.writeable = labels.flags.writeable = False  # cached and shared
    return images, labels


@functools.cache
def _digits_resized(size: int, method: str) -> np.ndarray:
    images, _ = digits_uint8()
    if method == "pad":
        resized = np.stack([pad_to(x, size) for x in images])
    elif method in _RESAMPLE:
        resized = np.stack([resize(x, size, size, method) for x in images])
    else:
        raise ValueError(f"Unknown data.resize {method!r}; valid: 'pad', {', '.join(_RESAMPLE)}.")
    resized.flags.writeable = False  # shared by every source built from this cache
    return resized


def _digits_source(config, train: bool) -> Source:
    # Small enough to preprocess once (per size and method) rather than at every read.
    images = _digits_resized(config.data.image_size, config.data.get("resize", "bilinear"))
    labels = digits_uint8()[1]
    split = slice(None, -DIGITS_NUM_EVAL) if train else slice(-DIGITS_NUM_EVAL, None)
    images, labels = images[split], labels[split]
    return _image_source(
        config,
        f"DIGITS {'train' if train else 'eval'}",
        len(images),
        lambda i: (images[i], labels[i]),
        lambda x: x,
    )


def toy_mixture(config) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mixture (weights [K], means [K, d], covs [K, d, d]) of a ``TOY2D`` config.

    Default: eight isotropic components (std 0.1) evenly spaced on the circle of radius 2.
    """
    data = config.data
    means = data.get("mixture_means", None)
    if means is None:
        angles = 2 * np.pi * np.arange(8) / 8
        means = np.stack([2 * np.cos(angles), 2 * np.sin(angles)], -1)
    means = np.asarray(means, np.float64)
    if means.ndim != 2:
        raise ValueError(f"data.mixture_means must be [K, d], got shape {means.shape}.")
    k, d = means.shape
    weights = data.get("mixture_weights", None)
    weights = np.ones(k) if weights is None else np.asarray(weights, np.float64)
    if data.get("mixture_covs", None) is not None:
        covs = np.asarray(data.mixture_covs, np.float64)
    else:
        stds = np.asarray(data.get("mixture_stds", 0.1), np.float64)
        stds = np.broadcast_to(stds[..., None] if stds.ndim == 1 else stds, (k, d))
        covs = np.eye(d) * stds[:, None, :] ** 2  # diag(std_k²)
    if weights.shape != (k,) or covs.shape != (k, d, d) or np.any(weights < 0):
        raise ValueError(
            f"Mixture shapes disagree: weights {weights.shape}, means {means.shape}, covs "
            f"{covs.shape}; expected non-negative [K], [K, d], [K, d, d]."
        )
    return weights / weights.sum(), means, covs


def _toy_source(config, train: bool) -> Source:
    weights, means, covs = toy_mixture(config)
    n = int(config.data.get("num_train", 10_000) if train else config.data.get("num_eval", 2_000))
    # The point set is part of the dataset, not of the run: its seed is data.data_seed, not seed.
    rng = np.random.default_rng([int(config.data.get("data_seed", 0)), 0 if train else 1])
    labels = rng.choice(len(weights), size=n, p=weights).astype(np.int32)
    z = rng.standard_normal((n, means.shape[1]))
    chol = np.linalg.cholesky(covs)
    points = (means[labels] + np.einsum("nij,nj->ni", chol[labels], z)).astype(np.float32)
    return Source(
        f"TOY2D {'train' if train else 'eval'}",
        n,
        lambda i: (points[i], labels[i]),
        lambda x: x,
        (means.shape[1],),
        is_image=False,
    )


def _tfds_preprocess(name: str, config):
    size = config.data.image_size
    if name in ("CIFAR10", "SVHN"):
        return lambda x: resize(x, size, size, "bilinear")
    if name == "CELEBA":
        return lambda x: resize_small(central_crop(x, CELEBA_CROP), size, "bilinear")
    if name == "LSUN":
        if size == 128:
            return lambda x: central_crop(resize_small(x, size, "bilinear"), size)
        return lambda x: crop_resize(x, size, "bicubic")
    return lambda x: x  # CELEBAHQ: tfds stores each resolution separately


def default_data_dir(config, data_dir: str | None = None) -> str | None:
    """tfds data_dir: the argument, else ``config.data.data_dir``, else $TFDS_DATA_DIR / default."""
    return data_dir or config.data.get("data_dir", None) or None


def _tfds_source(name: str, config, train: bool, data_dir: str | None) -> Source:
    import tensorflow_datasets as tfds

    builder = tfds_name(
        name, category=config.data.get("category", None), image_size=config.data.image_size
    )
    split = _TFDS_SPLITS[name][0 if train else 1]
    try:
        source = tfds.data_source(builder, split=split, data_dir=data_dir, download=False)
    except (NotImplementedError, FileNotFoundError, AssertionError) as e:
        where = data_dir or os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")
        raise FileNotFoundError(
            f"{name} (tfds '{builder}', split '{split}') is not prepared in array_record format "
            f"under {where}. Prepare it with:\n  python -m score_sde_jax.prepare_data "
            f"{builder} --data_dir {where}\n(and pass that directory as data_dir, "
            "config.data.data_dir or $TFDS_DATA_DIR)."
        ) from e

    def read(i):
        example = source[i]
        return example["image"], example.get("label", 0)

    return _image_source(
        config, f"{name} {split}", len(source), read, _tfds_preprocess(name, config)
    )


# --- StyleGAN / PGGAN .tfrecords (FFHQ, CelebA-HQ), read without TensorFlow. ---


def tfrecord_offsets(path: str | os.PathLike) -> np.ndarray:
    """Byte offsets and lengths of the records of an uncompressed TFRecord file: int64 [N, 2].

    A record is: uint64 length, uint32 CRC of the length, ``length`` bytes, uint32 CRC. Only the
    headers are read (CRCs are not checked); a truncated file raises ValueError.
    """
    size = os.path.getsize(path)
    offsets = []
    with open(path, "rb") as f:
        position = 0
        while position < size:
            header = f.read(12)
            length = int.from_bytes(header[:8], "little") if len(header) == 12 else -1
            end = position + 12 + length + 4
            if length < 0 or end > size:
                raise ValueError(
                    f"{path} is truncated or not an uncompressed TFRecord file "
                    f"(record {len(offsets)} at byte {position})."
                )
            offsets.append((position + 12, length))
            position = end
            f.seek(position)
    return np.asarray(offsets, np.int64).reshape(-1, 2)


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _proto_fields(buf: memoryview):
    """(field number, wire type, value) of a serialized protobuf message."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        wire = key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            n, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + n], pos + n
        elif wire in (1, 5):
            n = 8 if wire == 1 else 4
            value, pos = buf[pos : pos + n], pos + n
        else:
            raise ValueError(f"Unsupported protobuf wire type {wire}.")
        yield key >> 3, wire, value


def parse_tf_example(record: bytes) -> dict[str, list]:
    """A serialized ``tf.train.Example`` -> {feature name: list of bytes / int / float}.

    Wire layout: Example.features (1) -> Features.feature (1, map entries key=1, value=2) ->
    Feature.{bytes_list=1, float_list=2, int64_list=3}, each a repeated ``value`` field 1.
    """
    features = {}
    for field, _, message in _proto_fields(memoryview(record)):
        if field != 1:
            continue
        for _, _, entry in _proto_fields(message):
            key, feature = "", memoryview(b"")
            for entry_field, _, value in _proto_fields(entry):
                if entry_field == 1:
                    key = bytes(value).decode()
                elif entry_field == 2:
                    feature = value
            features[key] = _parse_feature(feature)
    return features


def _parse_feature(feature: memoryview) -> list:
    values = []
    for kind, _, values_message in _proto_fields(feature):
        for _, wire, value in _proto_fields(values_message):
            if kind == 1:
                values.append(bytes(value))
            elif kind == 2:
                values.extend(np.frombuffer(value, "<f4").tolist())
            elif wire == 0:
                values.append(value - (1 << 64) if value >= 1 << 63 else value)
            else:  # packed int64 list
                pos = 0
                while pos < len(value):
                    v, pos = _varint(value, pos)
                    values.append(v - (1 << 64) if v >= 1 << 63 else v)
    return values


def _tfrecord_source(name: str, config, path: str) -> Source:
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"data.tfrecords_path {path} does not exist; {name} is read from the StyleGAN "
            "multi-resolution .tfrecords (e.g. ffhq-r08.tfrecords for 256 px, -r10 for 1024 px) "
            "or from an image folder given as data.path."
        )
    offsets = tfrecord_offsets(path)
    if len(offsets) == 0:
        raise ValueError(f"{path} holds no records.")
    fd = os.open(path, os.O_RDONLY)  # os.pread on one descriptor is thread-safe

    def read(i):
        start, length = offsets[i]
        features = parse_tf_example(os.pread(fd, int(length), int(start)))
        shape = features.get("shape")
        if not shape or len(shape) != 3 or "data" not in features:
            raise ValueError(f"{path} record {i} lacks the StyleGAN 'shape' / 'data' features.")
        chw = np.frombuffer(features["data"][0], np.uint8).reshape(shape)
        return chw.transpose(1, 2, 0), 0

    size = config.data.image_size

    def check_size(image):
        if image.shape[:2] != (size, size):
            raise ValueError(
                f"{path} holds {image.shape[0]} x {image.shape[1]} images but data.image_size="
                f"{size}; StyleGAN .tfrecords keep one file per resolution (-r08: 256, -r10: 1024)."
            )
        return image

    source = _image_source(config, f"{name} {path}", len(offsets), read, check_size)
    weakref.finalize(source, os.close, fd)
    return source


# --- Image folders. ---


def list_images(root: str | os.PathLike) -> tuple[list[pathlib.Path], np.ndarray]:
    """Sorted image files under ``root`` and their labels (top-level subdirectory index or 0)."""
    root = pathlib.Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"Image folder {root} does not exist or is not a directory.")
    files = sorted(
        p.relative_to(root)
        for p in root.rglob("*")
        if p.suffix.lower() in IMAGE_EXTENSIONS
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    if not files:
        raise ValueError(
            f"Image folder {root} holds no images ({', '.join(IMAGE_EXTENSIONS)}, any depth)."
        )
    if all(len(f.parts) > 1 for f in files):
        classes = sorted({f.parts[0] for f in files})
        labels = np.asarray([classes.index(f.parts[0]) for f in files], np.int32)
    else:
        labels = np.zeros(len(files), np.int32)
    return [root / f for f in files], labels


def load_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as uint8 [H, W, C], C in {1, 2, 3, 4}; ValueError naming unreadable files."""
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            if image.mode == "P":
                image = image.convert("RGBA" if "transparency" in image.info else "RGB")
            elif image.mode in ("1", "CMYK", "YCbCr"):
                image = image.convert("L" if image.mode == "1" else "RGB")
            if image.mode not in ("L", "LA", "RGB", "RGBA"):
                raise ValueError(f"unsupported mode {image.mode}; use 8-bit gray or RGB(A) images")
            array = np.asarray(image, np.uint8)
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise ValueError(f"Cannot read image {path}: {e}") from e
    return array[..., None] if array.ndim == 2 else array


def _folder_source(name: str, config, root) -> Source:
    files, labels = list_images(root)
    size = config.data.image_size
    source = _image_source(
        config,
        f"{name} folder {root}",
        len(files),
        lambda i: (load_image(files[i]), labels[i]),
        lambda x: crop_resize(x, size, "bicubic"),
    )
    source[0]  # fail now, not in a reader thread, on an unreadable first image or wrong channels
    return source


def get_source(config, split: str = "train", data_dir: str | None = None) -> Source:
    """The dataset of ``config.data`` for ``split`` ('train' or 'eval', the held-out split).

    Raises:
      ValueError: unknown dataset (valid names listed), bad options, unreadable images.
      FileNotFoundError: tfds data not prepared (the message gives the ``prepare_data`` command),
        or a missing tfrecords file / image folder.
    """
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}.")
    train = split == "train"
    name = canonical_name(config.data.dataset)
    if name == "DIGITS":
        return _digits_source(config, train)
    if name == "TOY2D":
        return _toy_source(config, train)
    if name == "FOLDER":
        path = config.data.get("path", None) if train else config.data.get("eval_path", None)
        path = path or config.data.get("path", None)
        if not path:
            raise ValueError("data.dataset='folder' needs data.path (a directory of images).")
        return _folder_source(name, config, path)
    if name in ("FFHQ", "CELEBAHQ"):
        if config.data.get("tfrecords_path", None):
            return _tfrecord_source(name, config, config.data.tfrecords_path)
        if config.data.get("path", None):
            return _folder_source(name, config, config.data.path)
        if name == "FFHQ":
            raise ValueError(
                "FFHQ is not in tfds: set data.tfrecords_path (StyleGAN .tfrecords) or data.path "
                "(a folder of images)."
            )
    return _tfds_source(name, config, train, default_data_dir(config, data_dir))


def example_shape(config) -> tuple[int, ...]:
    """Shape of one example in model space: (H, W, C), or (d,) for ``TOY2D`` points."""
    if canonical_name(config.data.dataset) == "TOY2D":
        return (toy_mixture(config)[1].shape[1],)
    size = config.data.image_size
    return (size, size, config.data.num_channels)
