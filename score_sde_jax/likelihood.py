"""Exact likelihoods through the probability-flow ODE (Song et al. 2021, §4.3 and App. D.2).

The ODE carries a data point x(eps) = x to z = x(T), and log p_eps(x) = log p_T(z) + ∫_eps^T ∇·f̃
dt with f̃ = f - ½g²s (Eq. 13); p_T is the SDE's ``prior_logp``, as in the original. Each example
is its own solve (`score_sde_jax.sampling.solvers`), with the exact Jacobian trace or a
Hutchinson–Skilling estimate whose probe is drawn once per example and held fixed over the solve
(docs/original_code.md#likelihood).
"""

import math

import jax
import jax.numpy as jnp

from score_sde_jax import sde_lib
from score_sde_jax.sampling import solvers
from score_sde_jax.sampling.common import resolve_eps

HUTCHINSON_TYPES = ("rademacher", "gaussian", "exact")


def _exact_divergence(f, x, probe):
    """f(x) and the trace of ∂f/∂x, one reverse-mode pass per data dimension."""
    del probe

    def flat_f(y):
        out = f(y.reshape(x.shape)).reshape(-1)
        return out, out

    jacobian, fx = jax.jacrev(flat_f, has_aux=True)(x.reshape(-1))
    return fx.reshape(x.shape), jnp.trace(jacobian)


def _hutchinson_divergence(f, x, probe):
    """f(x) and εᵀ(∂f/∂x)ε from one forward-mode product Jε.

    The original takes the reverse-mode product εᵀJ; the estimate is the same number up to
    round-off. Forward mode keeps no activations, and on XLA:CPU a network's VJP inside the
    solver's loop runs 2.3× slower than outside one, its JVP does not (docs/performance.md).
    """
    fx, jacobian_probe = jax.jvp(f, (x,), (probe,))
    return fx, jnp.sum(jacobian_probe * probe)


def get_log_prob_fn(
    sde: sde_lib.SDE,
    score_fn,
    hutchinson_type: str = "rademacher",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    eps: float = 1e-5,
    method: str = solvers.DEFAULT_ODE_METHOD,
    max_steps: int = 4096,
    num_steps: int | None = None,
):
    """Log-density in nats of data under the probability-flow ODE of ``score_fn`` (App. D.2).

    Args:
        sde: the forward SDE.
        score_fn: ``score_fn(params, x, t, rng=None) -> score``; called in eval mode.
        hutchinson_type: ``'rademacher'`` (the original's default), ``'gaussian'`` or
            ``'exact'``. ``'exact'`` traces the full Jacobian with one reverse-mode pass per data
            dimension per ODE evaluation (D× the cost of an estimate): use it for small D.
        rtol: relative tolerance of the adaptive step-size controller.
        atol: absolute tolerance of the adaptive step-size controller.
        eps: start time of the ODE (the data point is x(eps)); must lie in (0, T).
        method: a diffrax solver of `score_sde_jax.sampling.solvers.ODE_SOLVERS`.
        max_steps: solver step budget per example (the solve raises if it is exhausted).
        num_steps: fixed number of equal steps instead of adaptive ones ('euler' needs it).

    Returns:
        A jitted ``fn(rng, params, x) -> (log_p, z, nfe)`` for data ``x`` [B, ...]: ``log_p`` [B]
        is log p_eps(x) in nats per example, ``z`` [B, ...] = x(T) the latent code and ``nfe``
        [B] the number of drift evaluations of each example's solve (each a score call; with
        ``'exact'`` one evaluation is D reverse-mode passes).
    """
    if hutchinson_type.lower() not in HUTCHINSON_TYPES:
        raise ValueError(
            f"Unknown hutchinson_type {hutchinson_type!r}; valid choices: {list(HUTCHINSON_TYPES)}."
        )
    hutchinson_type = hutchinson_type.lower()
    divergence = _exact_divergence if hutchinson_type == "exact" else _hutchinson_divergence
    solve = solvers.get_probability_flow_solve(
        sde, score_fn, method, rtol, atol, num_steps, max_steps, divergence=divergence
    )
    eps = resolve_eps(sde, eps)

    def solve_one(params, x, rng):
        # One probe per example, held fixed over the whole solve (module docstring).
        if hutchinson_type == "gaussian":
            probe = jax.random.normal(rng, x.shape, x.dtype)
        else:
            probe = jax.random.rademacher(rng, x.shape, x.dtype)
        (z, delta_logp), nfe = solve(params, x, eps, sde.T, probe)
        return z, delta_logp, nfe

    def log_prob_fn(rng, params, x):
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise ValueError(
                f"x must be floating-point data, got {x.dtype}; dequantize integer images with "
                "uniform_dequantize and apply the data scaler first."
            )
        rngs = jax.random.split(rng, x.shape[0])
        z, delta_logp, nfe = jax.vmap(solve_one, in_axes=(None, 0, 0))(params, x, rngs)
        return sde.prior_logp(z) + delta_logp, z, nfe

    return jax.jit(log_prob_fn)


def bpd_offset(centered: bool, num_bits: int = 8) -> float:
    """Bits/dim offset num_bits + log₂(d inverse_scaler / dx) (docs/original_code.md#likelihood).

    With y = (k + u)/2^num_bits ∈ [0, 1) the dequantized data and x = a·y + b the model's input,
    -log₂ P(k)/D ≤ -log₂ p_x(x)/D - log₂ a + num_bits. ``centered`` data (x = 2y - 1) have a = 2,
    so the offset is num_bits - 1 (7 for 8-bit images); [0, 1] data have offset num_bits.
    """
    if num_bits <= 0:
        raise ValueError(f"num_bits must be a positive integer, got {num_bits}.")
    return num_bits - math.log2(2.0 if centered else 1.0)


def bits_per_dim(log_p, dim: int, centered: bool, num_bits: int = 8):
    """bpd = -log p / (D ln 2) + `bpd_offset` for log-densities ``log_p`` [B] in nats."""
    return -log_p / (dim * math.log(2.0)) + bpd_offset(centered, num_bits)


def get_likelihood_fn(
    sde: sde_lib.SDE,
    score_fn,
    hutchinson_type: str = "rademacher",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    eps: float = 1e-5,
    method: str = solvers.DEFAULT_ODE_METHOD,
    max_steps: int = 4096,
    num_steps: int | None = None,
    *,
    centered: bool,
    num_bits: int = 8,
):
    """Bits/dim of (dequantized, scaled) data under the probability-flow ODE (App. D.2).

    The value is the variational upper bound on the discrete data's code length, so it is only
    meaningful on uniformly dequantized data (`uniform_dequantize`, then the data scaler):
    evaluated on the raw grid points k/255 a continuous density can be made arbitrarily large
    and the "bpd" negative.

    Args:
        sde, score_fn, hutchinson_type, rtol, atol, eps, method, max_steps, num_steps: as in
            `get_log_prob_fn`.
        centered: whether the model sees x = 2y - 1 ∈ [-1, 1] (``config.data.centered``) or
            y ∈ [0, 1]; sets the offset (`bpd_offset`). Required so that the scaling is never
            guessed.
        num_bits: bit depth of the discrete data (8 for standard images).

    Returns:
        A jitted ``fn(rng, params, x) -> (bpd, z, nfe)``: ``bpd`` [B] per example, ``z`` and
        ``nfe`` as in `get_log_prob_fn`.
    """
    bpd_offset(centered, num_bits)  # validates num_bits before anything is traced
    log_prob_fn = get_log_prob_fn(
        sde, score_fn, hutchinson_type, rtol, atol, eps, method, max_steps, num_steps
    )

    def likelihood_fn(rng, params, x):
        log_p, z, nfe = log_prob_fn(rng, params, x)
        return bits_per_dim(log_p, math.prod(x.shape[1:]), centered, num_bits), z, nfe

    return jax.jit(likelihood_fn)


def uniform_dequantize(rng, images, num_bits: int = 8):
    """Uniform dequantization y = (k + u)/2^num_bits, u ~ U[0, 1) per pixel and channel.

    Args:
        rng: PRNG key.
        images: integer pixel values k ∈ {0, …, 2^num_bits - 1} (e.g. uint8), or floats in [0, 1]
            on the grid k/(2^num_bits - 1) (the data pipeline's output), for which this is the
            original's x ← (u + 255 x)/256.
        num_bits: bit depth.

    Returns:
        float32 array in [0, 1) of the same shape; apply the data scaler afterwards.
    """
    if num_bits <= 0:
        raise ValueError(f"num_bits must be a positive integer, got {num_bits}.")
    images = jnp.asarray(images)
    levels = 2**num_bits
    if jnp.issubdtype(images.dtype, jnp.integer):
        k = images.astype(jnp.float32)
    else:
        k = images.astype(jnp.float32) * (levels - 1)
    u = jax.random.uniform(rng, images.shape, jnp.float32)
    return (k + u) / levels
