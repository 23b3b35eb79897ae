"""``DIGITS``: scikit-learn's 1,797 handwritten 8 x 8 digits, bundled, so nothing is downloaded.

Values 0..16 become uint8 round(v * 255 / 16); ``data.resize`` = 'bilinear' (default; antialiased),
'bicubic' or 'pad' (zeros around the native 8 x 8); the last 180 images are the held-out split.
``COLOR_DIGITS``: the same digits in RGB, each drawn in its own random colour (`colors`), so
that a gray image leaves its colour to be recovered (colorization, paper App. I.3).
"""

import functools
import importlib.util
import pathlib

import numpy as np

from score_sde_jax.data import preprocessing
from score_sde_jax.data.source import Source, image_source

NUM_EVAL = 180  # the held-out split: the last 10 %


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
def _resized(size: int, method: str) -> np.ndarray:
    images, _ = digits_uint8()
    if method == "pad":
        resized = np.stack([preprocessing.pad_to(x, size) for x in images])
    elif method in preprocessing.RESIZE_METHODS:
        resized = np.stack([preprocessing.resize(x, size, size, method) for x in images])
    else:
        raise ValueError(
            f"Unknown data.resize {method!r}; valid: 'pad', "
            f"{', '.join(preprocessing.RESIZE_METHODS)}."
        )
    resized.flags.writeable = False  # shared by every source built from this cache
    return resized


@functools.cache
def colors(num: int, seed: int = 0) -> np.ndarray:
    """``num`` random RGB colours in [0, 1] [num, 3]: hue uniform, saturation in [0.5, 1], value 1.

    The brightest channel is always 1, so a coloured digit keeps the full stroke intensity of the
    gray one in that channel.
    """
    rng = np.random.default_rng(seed)
    hue, saturation = rng.uniform(0.0, 1.0, num), rng.uniform(0.5, 1.0, num)
    # HSV -> RGB at value 1 (as colorsys.hsv_to_rgb), vectorised.
    k = np.array([5.0, 3.0, 1.0])
    ramp = np.clip(
        np.minimum((k + 6.0 * hue[:, None]) % 6.0, 4.0 - (k + 6.0 * hue[:, None]) % 6.0), 0, 1
    )
    return 1.0 - saturation[:, None] * ramp


@functools.cache
def _colored(size: int, method: str) -> np.ndarray:
    gray = _resized(size, method).astype(np.float64)
    tint = colors(len(gray))[:, None, None, :]
    colored = np.round(gray * tint).astype(np.uint8)
    colored.flags.writeable = False
    return colored


def source(config, train: bool, colored: bool = False) -> Source:
    """The training (first 1,617) or held-out (last 180) digits at ``data.image_size``.

    ``colored``: the RGB digits of ``COLOR_DIGITS`` instead of the gray ones.
    """
    # Small enough to preprocess once (per size and method) rather than at every read.
    resize = _colored if colored else _resized
    images = resize(config.data.image_size, config.data.get("resize", "bilinear"))
    labels = digits_uint8()[1]
    split = slice(None, -NUM_EVAL) if train else slice(-NUM_EVAL, None)
    images, labels = images[split], labels[split]
    return image_source(
        config,
        f"{'COLOR_DIGITS' if colored else 'DIGITS'} {'train' if train else 'eval'}",
        len(images),
        lambda i: (images[i], labels[i]),
        lambda x: x,
    )
