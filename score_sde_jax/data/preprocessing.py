"""Deterministic preprocessing of uint8 [H, W, C] images: crop, antialiased resize, pad, channels.

Resizing re-implements ``tf.image.resize(..., antialias=True)`` with PIL and rounds to uint8
(docs/data.md#resizing; docs/original_code.md, D22).
"""

import numpy as np
from PIL import Image

RESIZE_METHODS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


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
    if method not in RESIZE_METHODS:
        raise ValueError(f"Unknown resize method {method!r}; valid: {', '.join(RESIZE_METHODS)}.")
    if image.shape[:2] == (height, width):
        return image
    channels = [
        np.asarray(
            Image.fromarray(image[..., c].astype(np.float32), mode="F").resize(
                (width, height), RESIZE_METHODS[method]
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
