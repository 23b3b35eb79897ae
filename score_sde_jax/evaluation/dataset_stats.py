"""Reference Inception statistics of a dataset for FID / KID: computed, saved and loaded.

Every image of a split, in order, uint8, none dropped; the ``.npz`` holds ``pool_3`` [N, 2048],
``mu``, ``sigma`` and ``num_images``, and `load_stats` also reads the original's files
(docs/evaluation.md#dataset-statistics). The command: ``python -m score_sde_jax.tools.stats``.
"""

import concurrent.futures
import os
import pathlib
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

import numpy as np
from absl import logging

from score_sde_jax.data import datasets
from score_sde_jax.evaluation import inception, metrics
from score_sde_jax.progress import bar


class DatasetStats(NamedTuple):
    """Reference statistics: the Gaussian of FID and, when stored, the features for KID."""

    mu: np.ndarray
    sigma: np.ndarray
    pool_3: np.ndarray | None


def stats_filename(config) -> str:
    """The original's file name for ``config.data`` (``cifar10_stats.npz``, ...).

    CIFAR-10 and CelebA: ``<dataset>_stats.npz``; LSUN: ``lsun_<category>_<image_size>_stats.npz``;
    other datasets (which the original did not support): ``<dataset>_<image_size>_stats.npz``.
    """
    dataset = datasets.canonical_name(config.data.dataset).lower()
    if dataset in ("cifar10", "celeba"):
        return f"{dataset}_stats.npz"
    if dataset == "lsun":
        return f"lsun_{config.data.category}_{config.data.image_size}_stats.npz"
    return f"{dataset}_{config.data.image_size}_stats.npz"


def source_batches(source, batch_size: int, num_threads: int = 8) -> Iterator[np.ndarray]:
    """Every image of a `data.source.Source`, in order, as uint8 [B, H, W, 3] batches.

    The last batch is smaller (never dropped). Grayscale images are replicated to RGB, as the
    Inception network needs three channels.

    Args:
      source: e.g. ``datasets.get_source(config, 'train')``.
      batch_size: images per batch.
      num_threads: reader threads (decoding and resizing release the GIL).
    """
    if not source.is_image:
        raise ValueError(f"{source.name} holds points, not images: it has no Inception statistics.")
    channels = source.shape[-1]
    if channels not in (1, 3):
        raise ValueError(f"{source.name} has {channels} channels; Inception needs 1 (gray) or 3.")
    with concurrent.futures.ThreadPoolExecutor(num_threads) as pool:
        for start in range(0, len(source), batch_size):
            indices = range(start, min(start + batch_size, len(source)))
            yield inception.to_rgb(np.stack(list(pool.map(lambda i: source[i][0], indices))))


def compute_pool3(
    batches: Iterable[np.ndarray],
    inception_fn: Callable[[np.ndarray], dict[str, np.ndarray]],
    batch_size: int = 500,
) -> np.ndarray:
    """pool_3 features of every image in ``batches`` (uint8 NHWC batches of any sizes).

    Args:
      batches: iterable of uint8 [B, H, W, 3] arrays; every image is used, in order.
      inception_fn: `inception.make_inception_fn(variables)` (or a stand-in with its interface).
      batch_size: images per network call; the remainder is padded, never dropped.

    Returns:
      float32 [N, 2048].
    """

    def checked(batches):
        for batch in bar(batches, "Inception features", unit="batch"):
            batch = np.asarray(batch)
            if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[-1] != 3:
                raise ValueError(
                    f"Expected uint8 [B, H, W, 3] batches, got {batch.dtype} {batch.shape}; "
                    "convert [0, 1] images with `image_io.to_uint8`."
                )
            yield batch

    outputs = inception.compute_inception_outputs(inception_fn, checked(batches), batch_size)
    return outputs["pool_3"].astype(np.float32)


def compute_dataset_pool3(
    config,
    inception_fn: Callable[[np.ndarray], dict[str, np.ndarray]],
    *,
    split: str = "train",
    batch_size: int = 500,
    data_dir: str | None = None,
) -> np.ndarray:
    """pool_3 features of every image of ``config.data``'s ``split`` ('train' or 'eval').

    Images come from `datasets.get_source` (uint8, cropped / resized to ``data.image_size`` as
    for training; no flips, no dequantization) in dataset order.
    """
    source = datasets.get_source(config, split, data_dir)
    logging.info("Inception features of %s (%d images)", source.name, len(source))
    return compute_pool3(source_batches(source, batch_size), inception_fn, batch_size=batch_size)


def save_stats(path: str | os.PathLike, pool_3: np.ndarray) -> DatasetStats:
    """Writes ``pool_3``, its ``mu`` / ``sigma`` and ``num_images`` to ``path`` (.npz)."""
    pool_3 = np.asarray(pool_3, np.float32)
    mu, sigma = metrics.feature_stats(pool_3)
    with open(path, "wb") as f:
        np.savez(f, pool_3=pool_3, mu=mu, sigma=sigma, num_images=np.int64(len(pool_3)))
    return DatasetStats(mu, sigma, pool_3)


def load_stats(path: str | os.PathLike) -> DatasetStats:
    """Reads statistics written by `save_stats` or the original's ``<name>_stats.npz``.

    Files with ``mu`` and ``sigma`` are used as stored; files with only ``pool_3`` (the
    original's layout) get them computed with `metrics.feature_stats`.

    Raises:
      FileNotFoundError: no file at ``path``.
      ValueError: neither ``mu``/``sigma`` nor ``pool_3`` in the file, or inconsistent shapes.
    """
    path = pathlib.Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"No dataset statistics at {path}; compute them with "
            "`python -m score_sde_jax.tools.stats --config=... --output=...`."
        )
    with np.load(path) as npz:
        keys = set(npz.files)
        pool_3 = npz["pool_3"] if "pool_3" in keys else None
        if {"mu", "sigma"} <= keys:
            mu, sigma = npz["mu"].astype(np.float64), npz["sigma"].astype(np.float64)
        elif pool_3 is not None:
            mu, sigma = metrics.feature_stats(pool_3)
        else:
            raise ValueError(
                f"{path} has neither 'mu' and 'sigma' nor 'pool_3' (keys: {sorted(keys)})."
            )
    if mu.ndim != 1 or sigma.shape != (mu.shape[0],) * 2:
        raise ValueError(f"{path}: mu {mu.shape} and sigma {sigma.shape} do not match.")
    if pool_3 is not None and (pool_3.ndim != 2 or pool_3.shape[1] != mu.shape[0]):
        raise ValueError(f"{path}: pool_3 has shape {pool_3.shape}, expected [N, {mu.shape[0]}].")
    return DatasetStats(mu, sigma, pool_3)
