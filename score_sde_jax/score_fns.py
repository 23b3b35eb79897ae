"""Turning a network's raw output into a score function.

Samplers, losses and likelihoods consume ``score_fn(params, x, t, rng=None) -> score`` with ``x``
[B, ...] and ``t`` [B]; ``rng`` is a dropout key (train mode) or ``None`` (eval mode). A network
enters as ``model_fn(params, x, labels, rng) -> raw output``; this module decides which label the
network sees and how its output becomes ∇ₓ log p_t(x). See
docs/original_code.md#sdes-and-time-conditioning.
"""

import jax.numpy as jnp

from score_sde_jax import sde_lib

# The original feeds VP/sub-VP networks 999·t whatever N is (docs/original_code.md, D18); kept
# because the released networks were trained with it.
VP_CONTINUOUS_LABEL_SCALE = 999.0


def get_labels(sde: sde_lib.SDE, t, continuous: bool):
    """The conditioning label the original networks receive at time ``t`` [B].

    VE continuous: σ(t). VE discrete: round((T - t)(N - 1)) as int32 (0 ↔ σ_max).
    VP/sub-VP continuous (sub-VP always): 999·t. VP discrete: (N - 1)·t (float, not rounded).
    """
    if isinstance(sde, sde_lib.VESDE):
        if continuous:
            return sde.marginal_prob(jnp.zeros_like(t), t)[1]
        return jnp.round((sde.T - t) * (sde.N - 1)).astype(jnp.int32)
    if isinstance(sde, sde_lib.subVPSDE) or continuous:
        return t * VP_CONTINUOUS_LABEL_SCALE
    if isinstance(sde, sde_lib.VPSDE):
        return t * (sde.N - 1)
    raise ValueError(f"No score parameterization for SDE {type(sde).__name__}.")


def get_score_fn(sde: sde_lib.SDE, model_fn, continuous: bool):
    """Builds ``score_fn(params, x, t, rng=None)`` from ``model_fn(params, x, labels, rng)``.

    VE networks output the score directly (they divide by σ themselves when
    ``scale_by_sigma``); VP and sub-VP networks predict the noise ε, so the score is -ε/std
    with std = marginal std at t (continuous) or sqrt(1 - ᾱ_i) (discrete VP).
    """
    if isinstance(sde, sde_lib.VESDE):

        def score_fn(params, x, t, rng=None):
            return model_fn(params, x, get_labels(sde, t, continuous), rng)

    elif isinstance(sde, sde_lib.subVPSDE) or (isinstance(sde, sde_lib.VPSDE) and continuous):

        def score_fn(params, x, t, rng=None):
            out = model_fn(params, x, get_labels(sde, t, True), rng)
            std = sde.marginal_prob(jnp.zeros_like(x), t)[1]
            return sde_lib.batch_mul(-1.0 / std, out)

    elif isinstance(sde, sde_lib.VPSDE):

        def score_fn(params, x, t, rng=None):
            labels = get_labels(sde, t, False)
            out = model_fn(params, x, labels, rng)
            std = sde.sqrt_1m_alphas_cumprod[labels.astype(jnp.int32)]
            return sde_lib.batch_mul(-1.0 / std, out)

    else:
        raise ValueError(f"No score parameterization for SDE {type(sde).__name__}.")
    return score_fn
