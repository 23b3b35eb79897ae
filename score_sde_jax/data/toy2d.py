"""``TOY2D``: a fixed set of points drawn from a Gaussian mixture given in ``config.data``.

Keys: ``mixture_weights`` [K], ``mixture_means`` [K, d], ``mixture_stds`` (scalar, [K] or [K, d])
or ``mixture_covs`` [K, d, d], ``num_train`` (10,000), ``num_eval`` (2,000), ``data_seed`` (0).
Labels are the mixture components.
"""

import numpy as np

from score_sde_jax.data.source import Source


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


def point_shape(config) -> tuple[int]:
    """(d,): the dimension of the mixture's points."""
    return (toy_mixture(config)[1].shape[1],)


def source(config, train: bool) -> Source:
    """``data.num_train`` or ``data.num_eval`` points of the mixture, labelled by component."""
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
