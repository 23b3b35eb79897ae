"""Controllable generation with one unconditional score model (Song et al. 2021, §5 and App. I).

Imputation (`get_pc_inpainter`, `get_pc_colorizer`, App. I.2-I.3) and class-conditional sampling
(`get_pc_conditional_sampler`, Eq. 14, App. I.1) run `pc.pc_loop` with the registered predictors
and correctors and per-sample keys; latent codes (`get_encoder`, `get_decoder`, `interpolate`)
solve the probability-flow ODE (Eq. 13, §4.3). Where the samplers differ from the original:
docs/original_code.md, D7, D8 and D10.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from score_sde_jax import sde_lib
from score_sde_jax.sampling import solvers
from score_sde_jax.sampling.common import (
    check_positive_int,
    check_shape,
    normal_like,
    per_sample_keys,
    prior_sample,
    resolve_eps,
    split_per_sample,
)
from score_sde_jax.sampling.pc import get_corrector, get_predictor, pc_loop
from score_sde_jax.sde_lib import batch_mul

# Orthonormal colour decoupling of the original (App. I.3;
# docs/original_code.md#controllable-generation), columns (1, 1, 1)/√3, (-2, 1, 1)/√6,
# (0, 1, -1)/√2: decoupled channel 0 is √3 × the gray level (R+G+B)/3 and channels 1, 2 are
# colour differences orthogonal to it. Per pixel, decouple(x) = x M and couple(y) = y Mᵀ
# (Mᵀ = M⁻¹).
COLOR_DECOUPLING = np.array(
    [
        [1 / math.sqrt(3), -2 / math.sqrt(6), 0.0],
        [1 / math.sqrt(3), 1 / math.sqrt(6), 1 / math.sqrt(2)],
        [1 / math.sqrt(3), 1 / math.sqrt(6), -1 / math.sqrt(2)],
    ],
    dtype=np.float32,
)


def decouple_colors(x):
    """Per-pixel x M for channels-last images [..., 3]: (√3·gray, colour, colour) (App. I.3)."""
    return x @ jnp.asarray(COLOR_DECOUPLING, x.dtype)


def couple_colors(y):
    """Inverse of `decouple_colors`: per-pixel y Mᵀ."""
    return y @ jnp.asarray(COLOR_DECOUPLING, y.dtype).T


# ----------------------------------------------------------------------------------------------
# PC sampling with a constraint (inpainting, colorization).
# ----------------------------------------------------------------------------------------------


def _pc_setup(sde, score_fn, shape, predictor, corrector, snr, n_steps, probability_flow, eps):
    """Validated shape and eps, and the (predictor, corrector) updates of the registries."""
    check_positive_int("n_steps", n_steps)
    updates = (
        get_predictor(predictor)(sde, score_fn, probability_flow),
        get_corrector(corrector)(sde, score_fn, snr, n_steps),
    )
    return check_shape(shape), resolve_eps(sde, eps), updates


def _check_binary(name, value):
    """Raises unless a concrete mask holds only 0 and 1 (traced masks cannot be checked)."""
    if isinstance(value, jax.core.Tracer):
        return
    value = np.asarray(value)
    if not np.all((value == 0) | (value == 1)):
        raise ValueError(f"{name} must contain only 0 (unknown) and 1 (known) entries.")


def _get_imputation_sampler(sde, shape, eps, updates, denoise, to_space, from_space):
    """PC sampler conditioned on known coordinates of an orthonormal transform of x (App. I.2).

    ``to_space``/``from_space`` are an orthonormal linear map and its inverse. The SDEs perturb
    every coordinate with the same isotropic Gaussian noise, so the forward marginal of the
    transformed data is the transform of the marginal and known coordinates can be re-drawn in
    the transformed space. Returns ``run(rng, params, known, mask)`` with ``known`` the observed
    values (in the transformed space, zero or anything where ``mask`` is 0) and ``mask``
    boolean, broadcastable to the transformed shape.
    """
    predictor_update, corrector_update = updates

    def replace(x, values, mask):
        return from_space(jnp.where(mask, values, to_space(x)))

    @jax.jit
    def run(rng, params, known, mask):
        keys = per_sample_keys(rng, shape[0])
        prior_keys, init_keys, loop_keys = split_per_sample(keys, 3)

        def project(keys, x, x_mean, t):
            # The known part of x(t) is a fresh draw of p_0t(· | data); the noise-free state keeps
            # the update's own mean in the unknown part and the marginal mean in the known part.
            mean, std = sde.marginal_prob(known, t)
            y = mean + batch_mul(std, normal_like(keys, known))
            return replace(x, y, mask), replace(x_mean, mean, mask)

        x_T = prior_sample(sde, prior_keys, shape)
        x, _ = project(init_keys, x_T, x_T, jnp.full((shape[0],), sde.T))
        x = pc_loop(
            loop_keys,
            params,
            x,
            sde=sde,
            predictor_update=predictor_update,
            corrector_update=corrector_update,
            eps=eps,
            denoise=denoise,
            projection=project,
        )
        return replace(x, known, mask)

    return run


def get_pc_inpainter(
    sde: sde_lib.SDE,
    score_fn,
    shape,
    predictor: str,
    corrector: str,
    snr: float,
    n_steps: int = 1,
    probability_flow: bool = False,
    denoise: bool = True,
    eps: float | None = None,
):
    """PC inpainting by replacement (App. I.2, with the fixes of docs/original_code.md, D7).

    The known pixels start as a sample of the forward marginal at T and are re-drawn from the
    marginal at the time each predictor/corrector update lands on; the unknown pixels follow
    the unconditional updates. This replacement method is approximate: it samples the
    conditional p(x_unknown | x_known) only as far as the re-drawn noisy known pixels are
    consistent with the current unknown ones.

    Args:
      sde: the forward SDE; its ``N`` is the number of PC iterations.
      score_fn: ``score_fn(params, x, t) -> score``.
      shape: the images' shape [B, ...].
      predictor: a registered predictor name (e.g. 'reverse_diffusion', 'euler_maruyama').
      corrector: a registered corrector name (e.g. 'langevin', 'none').
      snr: corrector signal-to-noise ratio.
      n_steps: corrector steps per iteration.
      probability_flow: predictors step the probability-flow ODE.
      denoise: return the last predictor update without its noise.
      eps: last time of the grid; ``None`` selects 1e-5 for VE and 1e-3 for VP/sub-VP.

    Returns:
      ``inpaint(rng, params, data, mask) -> x``: ``data`` of ``shape`` in the model's data space,
      ``mask`` of 0s (fill in) and 1s (known) broadcastable to ``shape``; ``rng`` one key or B
      per-sample keys. ``x`` equals ``data`` exactly where ``mask`` is 1.
    """
    shape, eps, updates = _pc_setup(
        sde, score_fn, shape, predictor, corrector, snr, n_steps, probability_flow, eps
    )
    run = _get_imputation_sampler(sde, shape, eps, updates, denoise, lambda x: x, lambda x: x)

    def inpaint(rng, params, data, mask):
        data, mask = jnp.asarray(data), jnp.asarray(mask)
        if tuple(data.shape) != shape:
            raise ValueError(f"data has shape {tuple(data.shape)}; the inpainter expects {shape}.")
        try:
            broadcast = np.broadcast_shapes(mask.shape, shape)
        except ValueError:
            broadcast = None
        if broadcast != shape:
            raise ValueError(
                f"mask of shape {tuple(mask.shape)} does not broadcast to the data shape {shape}."
            )
        _check_binary("mask", mask)
        return run(rng, params, data, mask.astype(bool))

    return inpaint


def get_pc_colorizer(
    sde: sde_lib.SDE,
    score_fn,
    shape,
    predictor: str,
    corrector: str,
    snr: float,
    n_steps: int = 1,
    probability_flow: bool = False,
    denoise: bool = True,
    eps: float | None = None,
):
    """PC colorization: inpainting of the colour channels in the decoupled space (App. I.3).

    Each pixel's colour is rotated by the original's orthonormal matrix (`COLOR_DECOUPLING`) so
    that channel 0 carries the gray level; that channel is known, the two colour channels are
    filled in as in `get_pc_inpainter` (same fixes).

    Args:
      sde, score_fn, predictor, corrector, snr, n_steps, probability_flow, denoise, eps: as in
        `get_pc_inpainter`.
      shape: the colour images' shape [B, H, W, 3] (channels last).

    Returns:
      ``colorize(rng, params, gray) -> x``: ``gray`` [B, H, W, 1] gray levels, or [B, H, W, 3]
      whose channel mean is taken (the original's input, gray replicated in RGB), in the model's
      data space. The channel mean of ``x`` equals the gray level up to float rounding.
    """
    shape, eps, updates = _pc_setup(
        sde, score_fn, shape, predictor, corrector, snr, n_steps, probability_flow, eps
    )
    if len(shape) != 4 or shape[-1] != 3:
        raise ValueError(f"The colorizer needs RGB images [B, H, W, 3], got shape {shape}.")
    run = _get_imputation_sampler(sde, shape, eps, updates, denoise, decouple_colors, couple_colors)
    mask = jnp.array([True, False, False])

    def colorize(rng, params, gray):
        gray = jnp.asarray(gray)
        if gray.shape[:-1] != shape[:-1] or gray.shape[-1] not in (1, 3):
            raise ValueError(
                f"gray has shape {tuple(gray.shape)}; expected {shape[:-1] + (1,)} or {shape}."
            )
        level = jnp.mean(gray, axis=-1, keepdims=True)
        # Decoupled channel 0 of a gray pixel (g, g, g) is √3 g; the colour channels are unknown.
        known = jnp.pad(math.sqrt(3.0) * level, [(0, 0)] * 3 + [(0, 2)])
        return run(rng, params, known, mask)

    return colorize


# ----------------------------------------------------------------------------------------------
# Class-conditional sampling.
# ----------------------------------------------------------------------------------------------


def get_guided_score_fn(score_fn, classifier_fn, guidance_scale: float = 1.0):
    """Score of p_t(x | y) by Bayes' rule: s(x, t) + w ∇ₓ log softmax(logits(x, t))[y] (Eq. 14).

    Args:
      score_fn: the unconditional ``score_fn(params, x, t) -> score``.
      classifier_fn: ``classifier_fn(classifier_params, x, t) -> logits [B, classes]``, the
        noise-conditional classifier p_t(y | x(t)). It receives the SDE time; a classifier
        trained on other noise labels maps t itself (e.g. the WRN's
        `score_sde_jax.models.wideresnet.get_classifier_fn`).
      guidance_scale: w; 1 is Bayes' rule, larger values sharpen the class (classifier
        guidance), 0 ignores the classifier.

    Returns:
      ``guided(params, x, t, rng=None)`` with ``params = (score_params, classifier_params,
      labels)``, ``labels`` [B] integers; usable wherever a score function is (PC or ODE
      samplers).
    """
    guidance_scale = float(guidance_scale)

    def log_likelihood(x, classifier_params, t, labels):
        log_p = jax.nn.log_softmax(classifier_fn(classifier_params, x, t), axis=-1)
        # A sum over the batch: each row of its gradient is that sample's own gradient.
        return jnp.sum(jnp.take_along_axis(log_p, labels[:, None], axis=-1))

    def guided(params, x, t, rng=None):
        score_params, classifier_params, labels = params
        # rng (a dropout key) is forwarded only when given: exact scores may not take one.
        score = score_fn(score_params, x, t) if rng is None else score_fn(score_params, x, t, rng)
        grad = jax.grad(log_likelihood)(x, classifier_params, t, labels)
        return score + guidance_scale * grad

    return guided


def _check_labels(classifier_fn, classifier_params, labels, shape):
    """``labels``, after checking that they are one class index of ``classifier_fn`` per sample."""
    if labels.shape != (shape[0],) or not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(
            f"labels must be {shape[0]} integer class indices (one per sample), got "
            f"{labels.dtype} of shape {tuple(labels.shape)}."
        )
    logits = jax.eval_shape(
        classifier_fn,
        classifier_params,
        jax.ShapeDtypeStruct(shape, jnp.float32),
        jax.ShapeDtypeStruct((shape[0],), jnp.float32),
    )
    if len(logits.shape) != 2 or logits.shape[0] != shape[0]:
        raise ValueError(
            f"classifier_fn must return logits [{shape[0]}, classes], got {logits.shape}."
        )
    if not isinstance(labels, jax.core.Tracer):
        num_classes = logits.shape[1]
        if not bool(jnp.all((labels >= 0) & (labels < num_classes))):
            raise ValueError(f"labels must lie in [0, {num_classes}) (the classifier's classes).")
    return labels


def get_pc_conditional_sampler(
    sde: sde_lib.SDE,
    score_fn,
    classifier_fn,
    shape,
    predictor: str,
    corrector: str,
    snr: float,
    n_steps: int = 1,
    probability_flow: bool = False,
    denoise: bool = True,
    eps: float | None = None,
    guidance_scale: float = 1.0,
):
    """PC sampler of p(x | y) with a noise-conditional classifier (App. I.1).

    Predictor and corrector both use the guided score of `get_guided_score_fn` (so a Langevin
    corrector's step size comes from the norm of the total score, as in the original).

    Args:
      sde, score_fn, shape, predictor, corrector, snr, n_steps, probability_flow, denoise, eps:
        as in `score_sde_jax.sampling.get_pc_sampler`.
      classifier_fn: ``classifier_fn(classifier_params, x, t) -> logits [B, classes]``.
      guidance_scale: weight of the classifier gradient (1 = Bayes' rule).

    Returns:
      ``sample(rng, params, classifier_params, labels) -> x``; ``labels`` [B] class indices,
      ``rng`` one key or B per-sample keys.
    """
    guided = get_guided_score_fn(score_fn, classifier_fn, guidance_scale)
    shape, eps, (predictor_update, corrector_update) = _pc_setup(
        sde, guided, shape, predictor, corrector, snr, n_steps, probability_flow, eps
    )

    @jax.jit
    def run(rng, params, classifier_params, labels):
        prior_keys, loop_keys = split_per_sample(per_sample_keys(rng, shape[0]), 2)
        return pc_loop(
            loop_keys,
            (params, classifier_params, labels),
            prior_sample(sde, prior_keys, shape),
            sde=sde,
            predictor_update=predictor_update,
            corrector_update=corrector_update,
            eps=eps,
            denoise=denoise,
        )

    def sample(rng, params, classifier_params, labels):
        labels = _check_labels(classifier_fn, classifier_params, jnp.asarray(labels), shape)
        return run(rng, params, classifier_params, labels)

    return sample


# ----------------------------------------------------------------------------------------------
# Latent codes through the probability-flow ODE.
# ----------------------------------------------------------------------------------------------


def _batched(solve, t0, t1):
    """``fn(params, x) -> (x(t1), nfe)`` of a probability-flow ``solve`` for each sample of x."""
    return jax.jit(jax.vmap(lambda params, x: solve(params, x, t0, t1), in_axes=(None, 0)))


def get_encoder(
    sde: sde_lib.SDE,
    score_fn,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    method: str = solvers.DEFAULT_ODE_METHOD,
    eps: float = 1e-5,
    max_steps: int = 4096,
    num_steps: int | None = None,
):
    """Latent code z = x(T) of data x = x(eps) through the probability-flow ODE (Eq. 13, §4.3).

    The map is deterministic and, for a given score, identifiable (no learned encoder); its
    inverse is `get_decoder` with the same arguments.

    Args:
      sde: the forward SDE.
      score_fn: ``score_fn(params, x, t) -> score``.
      rtol, atol: tolerances of the adaptive (PID) step-size controller.
      method: a diffrax solver of `solvers.ODE_SOLVERS` (as for `get_ode_sampler`).
      eps: the time at which data sit (the original's likelihood start time 1e-5).
      max_steps: the most steps a solve may take.
      num_steps: fixed number of equal steps instead of adaptive ones ('euler' needs it).

    Returns:
      ``encode(params, x) -> (z, nfe)``: codes [B, ...] and each sample's score evaluations [B].
    """
    eps = resolve_eps(sde, eps)
    solve = solvers.get_probability_flow_solve(
        sde, score_fn, method, rtol, atol, num_steps, max_steps
    )
    return _batched(solve, eps, sde.T)


def get_decoder(
    sde: sde_lib.SDE,
    score_fn,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    method: str = solvers.DEFAULT_ODE_METHOD,
    eps: float = 1e-5,
    max_steps: int = 4096,
    num_steps: int | None = None,
):
    """Data x(eps) of latent codes z = x(T) through the probability-flow ODE (inverse of `get_encoder`).

    Args: as in `get_encoder`.

    Returns:
      ``decode(params, z) -> (x, nfe)``; no final denoising step, so that decoding inverts
      encoding.
    """
    eps = resolve_eps(sde, eps)
    solve = solvers.get_probability_flow_solve(
        sde, score_fn, method, rtol, atol, num_steps, max_steps
    )
    return _batched(solve, sde.T, eps)


def interpolate(z0, z1, alphas):
    """Spherical interpolation between latent codes z0 and z1 [B, ...] (per sample).

    Codes of a Gaussian prior concentrate on a sphere; the straight line between two of them
    passes through low-norm, atypical codes (its midpoint has about 1/√2 of the norm), whereas
    slerp, z(α) = [sin((1-α)θ) z0 + sin(αθ) z1] / sin θ with θ the angle between z0 and z1,
    stays at typical norms. For independent codes (θ ≈ π/2) this is z0 cos(απ/2) + z1
    sin(απ/2), which is again distributed as the prior for every α. Nearly parallel codes fall
    back to the straight line.

    Args:
      z0, z1: codes of equal shape [B, ...].
      alphas: interpolation weights [A] (0 gives z0, 1 gives z1).

    Returns:
      Codes [A, B, ...].
    """
    z0, z1 = jnp.asarray(z0), jnp.asarray(z1)
    alphas = jnp.asarray(alphas, z0.dtype)
    if z0.shape != z1.shape or z0.ndim < 2:
        raise ValueError(
            f"z0 and z1 must be batches [B, ...] of equal shape, got {z0.shape} and {z1.shape}."
        )
    if alphas.ndim != 1:
        raise ValueError(f"alphas must be a 1-D array of weights, got shape {alphas.shape}.")
    flat0, flat1 = z0.reshape(z0.shape[0], -1), z1.reshape(z1.shape[0], -1)
    norms = jnp.linalg.norm(flat0, axis=-1) * jnp.linalg.norm(flat1, axis=-1)
    cos = jnp.clip(jnp.sum(flat0 * flat1, axis=-1) / norms, -1.0, 1.0)
    theta = jnp.arccos(cos)[None, :]  # [1, B]
    a = alphas[:, None]  # [A, 1]
    parallel = jnp.sin(theta) < 1e-4
    safe_sin = jnp.where(parallel, 1.0, jnp.sin(theta))
    w0 = jnp.where(parallel, 1.0 - a, jnp.sin((1.0 - a) * theta) / safe_sin)
    w1 = jnp.where(parallel, a, jnp.sin(a * theta) / safe_sin)
    expand = (Ellipsis,) + (None,) * (z0.ndim - 1)
    return w0[expand] * z0[None] + w1[expand] * z1[None]
