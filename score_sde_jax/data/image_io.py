"""Images as uint8: the conversion from [0, 1] (`to_uint8`) and PNG writers for grids and plots."""

import math

import numpy as np
import PIL.Image


def to_uint8(images):
    """Images in [0, 1] -> uint8 by rounding (k / 255 -> k); out-of-range values are clipped.

    Works on NumPy and JAX arrays alike (also under ``jit``), in the input's float precision.
    """
    if not hasattr(images, "clip"):
        images = np.asarray(images, np.float64)
    return (images.clip(0.0, 1.0) * 255.0).round().astype(np.uint8)


def image_grid(images, nrow: int | None = None, padding: int = 2, scale: int = 1):
    """Tiles uint8 images [N, H, W, C] into one [H', W', C] grid (rows of ``nrow``, default √N).

    Cells are separated by ``padding`` black pixels, like the original's sample.png, and the
    grid is enlarged ``scale`` times by pixel repetition.
    """
    images = np.asarray(images)
    n, h, w, c = images.shape
    nrow = nrow or max(1, int(math.ceil(math.sqrt(n))))
    ncol = int(math.ceil(n / nrow))
    grid = np.zeros(
        (ncol * (h + padding) + padding, nrow * (w + padding) + padding, c), images.dtype
    )
    for i, image in enumerate(images):
        r, col = divmod(i, nrow)
        y, x = padding + r * (h + padding), padding + col * (w + padding)
        grid[y : y + h, x : x + w] = image
    return grid.repeat(scale, axis=0).repeat(scale, axis=1)


def save_image_grid(images, path, min_width: int = 256):
    """Writes `image_grid` of uint8 images [N, H, W, C] to a PNG, enlarged to >= ``min_width``.

    Returns:
      The grid as written, uint8 [H', W', C].
    """
    grid = image_grid(images)
    grid = image_grid(images, scale=max(1, int(math.ceil(min_width / grid.shape[1]))))
    PIL.Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(path)
    return grid


def save_scatter_png(points, path, size: int = 256):
    """Writes a scatter plot of 2-D ``points`` [N, 2] (dark dots on white) to a PNG.

    The square window is centred at 0 and covers 99.5 % of the points' coordinates.

    Returns:
      The image as written, uint8 [size, size, 1].
    """
    points = np.asarray(points, np.float64)
    finite = points[np.all(np.isfinite(points), axis=1)]
    radius = 1.1 * float(np.percentile(np.abs(finite), 99.5)) if finite.size else 1.0
    radius = radius if radius > 0 else 1.0
    pixels = np.round((finite / radius + 1.0) * 0.5 * (size - 1)).astype(int)
    inside = np.all((pixels >= 0) & (pixels < size - 1), axis=1)
    image = np.full((size, size), 255, np.uint8)
    cols, rows = pixels[inside, 0], size - 2 - pixels[inside, 1]
    for dy in (0, 1):
        for dx in (0, 1):
            image[rows + dy, cols + dx] = 0
    PIL.Image.fromarray(image).save(path)
    return image[..., None]
