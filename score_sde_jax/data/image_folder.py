"""Image folders: every ``.png`` / ``.jpg`` / ``.jpeg`` under a directory, labelled by subdirectory.

Files are taken in sorted relative-path order (hidden ones skipped) with their EXIF orientation
applied; an image's label is the index of its top-level subdirectory (sorted) when every image
lies in one, else 0. Every file is checked when the folder is opened (header, and the end chunk of
a PNG), so a damaged image stops a run before it starts, named; ``data.skip_unreadable_images``
leaves such files out instead and says how many (docs/data.md#image-folders).
"""

import os
import pathlib

import numpy as np
from absl import logging
from PIL import Image, ImageOps, UnidentifiedImageError

from score_sde_jax.data import preprocessing
from score_sde_jax.data.source import Source, image_source
from score_sde_jax.errors import DataError, InputError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
_PNG_END = b"IEND\xaeB`\x82"  # the last chunk of every complete PNG file
_SKIP_OPTION = "data.skip_unreadable_images"


def list_images(root: str | os.PathLike) -> tuple[list[pathlib.Path], np.ndarray]:
    """Sorted image files under ``root`` and their labels (top-level subdirectory index or 0)."""
    root = pathlib.Path(root).expanduser()
    if not root.is_dir():
        raise InputError(
            f"Image folder {root} does not exist or is not a directory",
            "check data.path / data.eval_path",
        )
    files = sorted(
        p.relative_to(root)
        for p in root.rglob("*")
        if p.suffix.lower() in IMAGE_EXTENSIONS
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    if not files:
        raise DataError(
            f"Image folder {root} holds no images ({', '.join(IMAGE_EXTENSIONS)}, any depth)",
            "check data.path / data.eval_path",
        )
    if all(len(f.parts) > 1 for f in files):
        classes = sorted({f.parts[0] for f in files})
        labels = np.asarray([classes.index(f.parts[0]) for f in files], np.int32)
    else:
        labels = np.zeros(len(files), np.int32)
    return [root / f for f in files], labels


def load_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as uint8 [H, W, C], C in {1, 2, 3, 4}; `DataError` naming unreadable files."""
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
        raise DataError(
            f"Cannot read image {path}: {e}",
            f"fix or remove it, or set --config.{_SKIP_OPTION}=True",
        ) from e
    return array[..., None] if array.ndim == 2 else array


def unreadable_reason(path: pathlib.Path) -> str | None:
    """Why ``path`` is not a complete image, from its header and its end; None if it looks
    fine. Cheap (no decoding): a file damaged inside is still found when it is read."""
    try:
        with Image.open(path) as image:
            image_format = image.format
    except (OSError, UnidentifiedImageError) as e:
        return str(e)
    if image_format == "PNG":
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - len(_PNG_END)))
            if f.read() != _PNG_END:
                return "truncated PNG (no end chunk)"
    return None


def _readable(config, root, files, labels):
    """``files`` and ``labels`` without the unreadable images when ``data.skip_unreadable_images``;
    otherwise a `DataError` naming the first one."""
    bad = {i: reason for i, f in enumerate(files) if (reason := unreadable_reason(f))}
    if not bad:
        return files, labels
    first, reason = next(iter(bad.items()))
    others = f" ({len(bad) - 1} more unreadable images in {root})" if len(bad) > 1 else ""
    if not config.data.get("skip_unreadable_images", False):
        raise DataError(
            f"Cannot read image {files[first]}: {reason}{others}",
            f"fix or remove it, or set --config.{_SKIP_OPTION}=True",
        )
    if len(bad) == len(files):
        raise DataError(
            f"None of the {len(files)} images in {root} is readable, e.g. {files[first]}"
        )
    logging.warning(
        "Skipped %d unreadable image(s) of %d in %s (%s), e.g. %s: %s.",
        len(bad),
        len(files),
        root,
        _SKIP_OPTION,
        files[first],
        reason,
    )
    keep = [i for i in range(len(files)) if i not in bad]
    return [files[i] for i in keep], labels[keep]


def source(name: str, config, root) -> Source:
    """Every image under ``root``, largest central square resized (bicubic) to ``data.image_size``."""
    files, labels = _readable(config, root, *list_images(root))
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
