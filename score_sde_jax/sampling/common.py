"""Helpers shared by every sampler: argument checks, per-sample keys, the prior draw, Tweedie.

The noise of sample b comes from its own key only, so no sample depends on its batch-mates
(docs/sampling.md#per-sample-randomness).
"""

import jax
import jax.numpy as jnp

from score_sde_jax import sde_lib


def resolve_eps(sde: sde_lib.SDE, eps) -> float:
    """``eps`` as a float in (0, T); ``None`` selects the original's end time."""
    eps = sde_lib.default_sampling_eps(sde) if eps is None else float(eps)
    if not 0.0 < eps < sde.T:
        raise ValueError(f"eps must lie in (0, T) = (0, {sde.T}), got {eps}.")
    return eps


def check_positive_int(name: str, value) -> int:
    """``value`` as an int; raises unless it is a positive integer."""
    if int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}.")
    return int(value)


def check_shape(shape) -> tuple[int, ...]:
    """The sample shape ``[B, ...]`` as a tuple of positive ints."""
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2 or min(shape) <= 0:
        raise ValueError(f"shape must be [batch, ...] with positive sizes, got {shape}.")
    return shape


def check_prior_sample(z, shape):
    """Raises unless the given prior sample ``z`` has the sampler's ``shape``."""
    if z is not None and tuple(z.shape) != shape:
        raise ValueError(f"z has shape {tuple(z.shape)} but the sampler was built for {shape}.")


def per_sample_keys(rng, batch_size: int):
    """One key per sample: ``rng`` split ``batch_size`` ways, or ``rng`` itself if already [B]."""
    typed = jnp.issubdtype(rng.dtype, jax.dtypes.prng_key)
    if rng.ndim == (0 if typed else 1):
        return jax.random.split(rng, batch_size)
    if rng.shape[0] != batch_size:
        raise ValueError(
            f"Got {rng.shape[0]} per-sample keys for a batch of {batch_size}; pass one key "
            "or exactly one key per sample."
        )
    return rng


def split_per_sample(keys, num: int):
    """Splits each per-sample key ``num`` ways: a tuple of ``num`` key batches."""
    split = jax.vmap(lambda k: jax.random.split(k, num))(keys)
    return tuple(split[:, j] for j in range(num))


def fold_in_per_sample(keys, data):
    """``fold_in(keys[b], data)`` for every per-sample key."""
    return jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, data)


def normal_like(keys, x):
    """Standard normal noise shaped like ``x`` [B, ...], sample b drawn from ``keys[b]``."""
    return jax.vmap(lambda k: jax.random.normal(k, x.shape[1:], x.dtype))(keys)


def prior_sample(sde: sde_lib.SDE, keys, shape):
    """x(T) ~ p_T for each per-sample key."""
    return jax.vmap(lambda k: sde.prior_sampling(k, shape[1:]))(keys)


def tweedie_denoise(sde: sde_lib.SDE, score_fn, params, x, t):
    """E[x(0) | x(t)] = (x + σ_t² ∇log p_t(x)) / m_t for x(t) = m_t x(0) + σ_t z (Tweedie).

    Exact for every linear SDE and independent of N. For VE at t = eps it is the original's final
    reverse-diffusion step x + σ_min² s (docs/original_code.md#samplers), as σ(eps) ≈ σ_min; for VP
    that step, (2 - sqrt(1 - β_1)) x + β_1 s, matches it only while β_1 ≈ σ_eps² (N = 1000,
    eps = 1e-3).
    """
    mean_coeff = sde.marginal_prob(jnp.ones_like(x), t)[0]
    std = sde.marginal_prob(x, t)[1]
    return (x + sde_lib.batch_mul(std**2, score_fn(params, x, t))) / mean_coeff
