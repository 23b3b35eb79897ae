"""Image folders: every ``.png`` / ``.jpg`` / ``.jpeg`` under a directory, labelled by subdirectory.

Files are taken in sorted relative-path order (hidden ones skipped) with their EXIF orientation
applied; an image's label is the index of its top-level subdirectory (sorted) when every image
lies in one, else 0.
"""

import os
import pathlib

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from score_sde_jax.data import preprocessing
from score_sde_jax.data.source import Source, image_source

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


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


def source(name: str, config, root) -> Source:
    """Every image under ``root``, largest central square resized (bicubic) to ``data.image_size``."""
    files, labels = list_images(root)
    size = config.data.image_size
    folder = image_source(
        config,
        f"{name} folder {root}",
        len(files),
        lambda i: (load_image(files[i]), labels[i]),
        lambda x: preprocessing.crop_resize(x, size, "bicubic"),
    )
    folder[0]  # fail now, not in a reader thread, on an unreadable first image or wrong channels
    return folder
