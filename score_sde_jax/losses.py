"""Training objectives of Song et al. (2021): continuous DSM and the legacy SMLD/DDPM losses.

Every builder returns a pure ``loss_fn(params, rng, batch)``: ``batch`` is an array ``[B, ...]`` of
data already scaled to the network's range, ``rng`` a PRNG key. The key is split as
``time_rng, noise_rng, dropout_rng = jax.random.split(rng, 3)``: ``time_rng`` draws t (or the
discrete noise level), ``noise_rng`` the Gaussian perturbation z and ``dropout_rng`` is handed
to the network when ``train=True`` (``train=False`` evaluates it without dropout, as the
original's eval step does). By default the loss is the batch mean of the per-example losses;
``per_example=True`` returns the ``[B]`` vector instead (for evaluation statistics).

Per-example reduction over the D data dimensions (docs/original_code.md#losses-optimizer-and-ema):
``reduce_mean=True`` takes the mean, ``reduce_mean=False`` takes **0.5 × the sum** (the original's
convention for VE models).
"""

import jax
import jax.numpy as jnp

from score_sde_jax import score_fns, sde_lib
from score_sde_jax.sde_lib import batch_mul


def _per_example_reduce(reduce_mean: bool):
    """Reduction of ``[B, ...]`` to ``[B]``: mean over dimensions or 0.5 × their sum."""
    if reduce_mean:
        return lambda x: jnp.mean(x.reshape(x.shape[0], -1), axis=-1)
    return lambda x: 0.5 * jnp.sum(x.reshape(x.shape[0], -1), axis=-1)


def _check_eps(sde: sde_lib.SDE, eps: float):
    if not 0.0 < eps < sde.T:
        raise ValueError(f"eps must lie in (0, T) = (0, {sde.T}), got {eps}.")


def get_sde_loss_fn(
    sde: sde_lib.SDE,
    score_fn,
    reduce_mean: bool = True,
    likelihood_weighting: bool = False,
    eps: float = 1e-5,
    train: bool = True,
    per_example: bool = False,
):
    """Continuous denoising score matching (Eq. 7 of Song et al. 2021).

    Per example: t ~ U(eps, T), z ~ N(0, I), x̃ = mean(x, t) + σ_t z and s = score_fn(x̃, t).
    With the default weighting λ(t) = σ_t² the loss is reduce((σ_t s + z)²); with
    ``likelihood_weighting`` it is g(t)² reduce((s + z/σ_t)²), the weighting of Song et al.
    (2021, "Maximum likelihood training of score-based diffusion models") without importance
    sampling of t.

    Args:
        sde: the forward SDE.
        score_fn: ``score_fn(params, x, t, rng=None) -> score``.
        reduce_mean: mean over data dimensions if True, else 0.5 × sum.
        likelihood_weighting: use λ(t) = g(t)² instead of σ_t².
        eps: smallest training time; t ~ U(eps, T). Must lie in (0, T).
        train: pass a dropout key to ``score_fn`` (train mode) or ``None`` (eval mode).
        per_example: return the ``[B]`` per-example losses instead of their mean.

    Returns:
        ``loss_fn(params, rng, batch) -> loss`` (scalar, or ``[B]`` if ``per_example``).
    """
    _check_eps(sde, eps)
    reduce = _per_example_reduce(reduce_mean)

    def loss_fn(params, rng, batch):
        time_rng, noise_rng, dropout_rng = jax.random.split(rng, 3)
        t = jax.random.uniform(time_rng, (batch.shape[0],), minval=eps, maxval=sde.T)
        z = jax.random.normal(noise_rng, batch.shape)
        mean, std = sde.marginal_prob(batch, t)
        perturbed = mean + batch_mul(std, z)
        score = score_fn(params, perturbed, t, rng=dropout_rng if train else None)
        if likelihood_weighting:
            g2 = sde.sde(jnp.zeros_like(batch), t)[1] ** 2
            losses = reduce(jnp.square(score + batch_mul(1.0 / std, z))) * g2
        else:
            losses = reduce(jnp.square(batch_mul(std, score) + z))
        return losses if per_example else jnp.mean(losses)

    return loss_fn


def get_smld_loss_fn(
    vesde: sde_lib.VESDE,
    model_fn,
    reduce_mean: bool = False,
    train: bool = True,
    per_example: bool = False,
):
    """Legacy SMLD / NCSN loss on the discrete noise levels of a VE SDE.

    labels ~ U{0, …, N-1} index the DESCENDING noise scales (label 0 = σ_max, the networks'
    convention); x̃ = x + σ z and the loss σ² reduce((s - (-σ z / σ²))²) compares the raw network
    output s = model_fn(x̃, labels) with the score of the perturbation kernel. See
    docs/original_code.md#losses-optimizer-and-ema.

    Args:
        vesde: a `VESDE`; its σ_min, σ_max and N define the noise levels.
        model_fn: raw network ``model_fn(params, x, labels, rng)`` taking int32 labels [B].
        reduce_mean: mean over data dimensions if True, else 0.5 × sum (the original's default).
        train: pass a dropout key to ``model_fn`` (train mode) or ``None`` (eval mode).
        per_example: return the ``[B]`` per-example losses instead of their mean.

    Returns:
        ``loss_fn(params, rng, batch) -> loss``.
    """
    if not isinstance(vesde, sde_lib.VESDE):
        raise ValueError(f"The SMLD loss needs a VESDE, got {type(vesde).__name__}.")
    reduce = _per_example_reduce(reduce_mean)
    sigmas = vesde.discrete_sigmas[::-1]

    def loss_fn(params, rng, batch):
        label_rng, noise_rng, dropout_rng = jax.random.split(rng, 3)
        labels = jax.random.randint(label_rng, (batch.shape[0],), 0, vesde.N)
        sigma = sigmas[labels]
        noise = batch_mul(sigma, jax.random.normal(noise_rng, batch.shape))
        score = model_fn(params, batch + noise, labels, dropout_rng if train else None)
        target = -batch_mul(1.0 / sigma**2, noise)
        losses = reduce(jnp.square(score - target)) * sigma**2
        return losses if per_example else jnp.mean(losses)

    return loss_fn


def get_ddpm_loss_fn(
    vpsde: sde_lib.VPSDE,
    model_fn,
    reduce_mean: bool = True,
    train: bool = True,
    per_example: bool = False,
):
    """Legacy DDPM noise-prediction loss on the discrete levels of a VP SDE.

    labels ~ U{0, …, N-1}; x̃ = sqrt(ᾱ_label) x + sqrt(1 - ᾱ_label) z; loss reduce((ε̂ - z)²) with
    ε̂ = model_fn(x̃, labels) the network's noise prediction (Ho et al. 2020, Eq. 14). See
    docs/original_code.md#losses-optimizer-and-ema.

    Args:
        vpsde: a `VPSDE`; its discrete β schedule defines ᾱ.
        model_fn: raw network ``model_fn(params, x, labels, rng)`` taking int32 labels [B].
        reduce_mean: mean over data dimensions if True (the original's default), else 0.5 × sum.
        train: pass a dropout key to ``model_fn`` (train mode) or ``None`` (eval mode).
        per_example: return the ``[B]`` per-example losses instead of their mean.

    Returns:
        ``loss_fn(params, rng, batch) -> loss``.
    """
    if not isinstance(vpsde, sde_lib.VPSDE):
        raise ValueError(f"The DDPM loss needs a VPSDE, got {type(vpsde).__name__}.")
    reduce = _per_example_reduce(reduce_mean)

    def loss_fn(params, rng, batch):
        label_rng, noise_rng, dropout_rng = jax.random.split(rng, 3)
        labels = jax.random.randint(label_rng, (batch.shape[0],), 0, vpsde.N)
        alphas_cumprod = vpsde.alphas_cumprod[labels]
        z = jax.random.normal(noise_rng, batch.shape)
        perturbed = batch_mul(jnp.sqrt(alphas_cumprod), batch) + batch_mul(
            jnp.sqrt(1.0 - alphas_cumprod), z
        )
        eps_hat = model_fn(params, perturbed, labels, dropout_rng if train else None)
        losses = reduce(jnp.square(eps_hat - z))
        return losses if per_example else jnp.mean(losses)

    return loss_fn


def get_loss_fn(
    sde: sde_lib.SDE,
    model_fn,
    continuous: bool,
    reduce_mean: bool,
    likelihood_weighting: bool,
    eps: float = 1e-5,
    train: bool = True,
    per_example: bool = False,
):
    """The training objective the original selects from ``config.training``.

    ``continuous`` → `get_sde_loss_fn` on the network's continuous-time score
    (`score_fns.get_score_fn(sde, model_fn, continuous=True)`); otherwise VE → `get_smld_loss_fn`,
    VP → `get_ddpm_loss_fn`. Discrete training of sub-VP and likelihood weighting with discrete
    training are rejected, as in the original. See docs/original_code.md#losses-optimizer-and-ema.

    Args:
        sde: the forward SDE.
        model_fn: raw network ``model_fn(params, x, labels, rng)``.
        continuous: continuous-time DSM (``config.training.continuous``).
        reduce_mean: ``config.training.reduce_mean``.
        likelihood_weighting: ``config.training.likelihood_weighting`` (continuous only).
        eps: smallest training time of the continuous loss.
        train: train mode (dropout) or eval mode.
        per_example: return per-example losses instead of their mean.

    Returns:
        ``loss_fn(params, rng, batch) -> loss``.
    """
    if continuous:
        score_fn = score_fns.get_score_fn(sde, model_fn, continuous=True)
        return get_sde_loss_fn(
            sde, score_fn, reduce_mean, likelihood_weighting, eps, train, per_example
        )
    if likelihood_weighting:
        raise ValueError(
            "Likelihood weighting is only defined for continuous training; set "
            "continuous=True or likelihood_weighting=False."
        )
    if isinstance(sde, sde_lib.VESDE):
        return get_smld_loss_fn(sde, model_fn, reduce_mean, train, per_example)
    if isinstance(sde, sde_lib.VPSDE):
        return get_ddpm_loss_fn(sde, model_fn, reduce_mean, train, per_example)
    raise ValueError(
        f"Discrete training is defined for VESDE (SMLD) and VPSDE (DDPM) only, got "
        f"{type(sde).__name__}; use continuous=True."
    )
