"""Predictor–corrector samplers of Song et al. (2021), Algorithm 1 and App. G.

Predictors and correctors are single-step updates built by name from two registries, so the
same updates serve unconditional sampling here and the controllable-generation samplers:

* predictor: ``get_predictor(name)(sde, score_fn, probability_flow)`` returns
  ``update(rng, params, x, t, dt) -> (x, x_mean)``: one step of the reverse process from time
  ``t`` [B] to ``t - dt`` (``dt`` > 0, a scalar); ``x_mean`` is the step without its noise.
* corrector: ``get_corrector(name)(sde, score_fn, snr, n_steps, batch_pooled=False)`` returns
  ``update(rng, params, x, t) -> (x, x_mean)``: ``n_steps`` MCMC steps targeting p_t.

``rng`` in an update is a batch of per-sample keys (shape [B] for typed keys, [B, 2] for raw
ones): all noise of sample b comes from key b, so a sample never depends on its batch-mates.
"""

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from score_sde_jax import progress, sde_lib
from score_sde_jax.sampling.common import (
    check_positive_int,
    check_prior_sample,
    check_shape,
    fold_in_per_sample,
    normal_like,
    per_sample_keys,
    prior_sample,
    resolve_eps,
    split_per_sample,
)
from score_sde_jax.sde_lib import batch_mul


def _norm_per_sample(x):
    return jnp.linalg.norm(x.reshape(x.shape[0], -1), axis=-1)


# ----------------------------------------------------------------------------------------------
# Registries.
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Entry:
    builder: Callable
    nfe: int  # score evaluations per predictor update / per corrector inner step


_PREDICTORS: dict[str, _Entry] = {}
_CORRECTORS: dict[str, _Entry] = {}


def register_predictor(name: str, nfe: int = 1):
    """Registers ``builder(sde, score_fn, probability_flow) -> update`` under ``name``.

    ``update(rng, params, x, t, dt) -> (x, x_mean)`` must evaluate the score ``nfe`` times; that
    number is what samplers report as the predictor's cost per step.
    """

    def decorator(builder):
        _PREDICTORS[name.lower()] = _Entry(builder, nfe)
        return builder

    return decorator


def register_corrector(name: str, nfe: int = 1):
    """Registers ``builder(sde, score_fn, snr, n_steps, batch_pooled=False) -> update``.

    ``update(rng, params, x, t) -> (x, x_mean)`` runs ``n_steps`` inner steps of ``nfe`` score
    evaluations each. ``batch_pooled=True`` asks for the original's batch-shared step sizes
    (builders whose steps never depend on the batch may ignore it).
    """

    def decorator(builder):
        _CORRECTORS[name.lower()] = _Entry(builder, nfe)
        return builder

    return decorator


def _lookup(registry, kind, name):
    key = str(name).lower()
    if key not in registry:
        raise ValueError(f"Unknown {kind} {name!r}; valid names: {sorted(registry)}.")
    return registry[key]


def get_predictor(name: str) -> Callable:
    """The predictor builder registered as ``name`` (case-insensitive)."""
    return _lookup(_PREDICTORS, "predictor", name).builder


def get_corrector(name: str) -> Callable:
    """The corrector builder registered as ``name`` (case-insensitive)."""
    return _lookup(_CORRECTORS, "corrector", name).builder


def predictor_names() -> list[str]:
    """Names of the registered predictors."""
    return sorted(_PREDICTORS)


def corrector_names() -> list[str]:
    """Names of the registered correctors."""
    return sorted(_CORRECTORS)


def predictor_nfe(name: str) -> int:
    """Score evaluations per update of predictor ``name``."""
    return _lookup(_PREDICTORS, "predictor", name).nfe


def corrector_nfe(name: str, n_steps: int) -> int:
    """Score evaluations per update of corrector ``name`` with ``n_steps`` inner steps."""
    return _lookup(_CORRECTORS, "corrector", name).nfe * n_steps


# ----------------------------------------------------------------------------------------------
# Predictors (docs/original_code.md#samplers).
# ----------------------------------------------------------------------------------------------


@register_predictor("euler_maruyama")
def euler_maruyama_predictor(sde, score_fn, probability_flow=False):
    """Euler–Maruyama step of the reverse SDE (Eq. 6) or probability-flow ODE (Eq. 13).

    x_mean = x - [f - g² s] dt, x = x_mean + g sqrt(dt) z (the ODE: ½g² and no noise).
    """
    rsde = sde_lib.reverse(sde, score_fn, probability_flow)

    def update(rng, params, x, t, dt):
        drift, diffusion = rsde.sde(params, x, t)
        x_mean = x - drift * dt
        return x_mean + batch_mul(diffusion * jnp.sqrt(dt), normal_like(rng, x)), x_mean

    return update


@register_predictor("reverse_diffusion")
def reverse_diffusion_predictor(sde, score_fn, probability_flow=False):
    """Reverse diffusion (Eq. 47): x_mean = x - f_i + G_i² s, x = x_mean + G_i z.

    Uses the SDE's own discretization: SMLD for VE, DDPM for VP, Euler–Maruyama for sub-VP.
    The step always goes to the next discrete level, so ``dt`` is unused.
    """
    if isinstance(sde, sde_lib.VPSDE):
        check_ddpm_levels(sde, "reverse_diffusion")
    rsde = sde_lib.reverse(sde, score_fn, probability_flow)

    def update(rng, params, x, t, dt):
        del dt
        rev_f, rev_G = rsde.discretize(params, x, t)
        x_mean = x - rev_f
        return x_mean + batch_mul(rev_G, normal_like(rng, x)), x_mean

    return update


@register_predictor("ancestral_sampling")
def ancestral_sampling_predictor(sde, score_fn, probability_flow=False):
    """Ancestral sampling of the discrete SMLD (VE, Eq. 45) or DDPM (VP, Eq. 46) Markov chain.

    sub-VP has no discrete Markov chain whose ancestral step we could take (the original raises
    NotImplementedError, docs/original_code.md, D19); use 'reverse_diffusion' or 'euler_maruyama'
    there.
    """
    if probability_flow:
        raise ValueError(
            "ancestral_sampling has no probability-flow form; use 'reverse_diffusion' or "
            "'euler_maruyama' with probability_flow=True."
        )
    if isinstance(sde, sde_lib.VESDE):

        def update(rng, params, x, t, dt):
            del dt
            i = sde.discrete_index(t)
            sigma = sde.discrete_sigmas[i]
            adjacent = jnp.where(i == 0, 0.0, sde.discrete_sigmas[jnp.maximum(i - 1, 0)])
            x_mean = x + batch_mul(sigma**2 - adjacent**2, score_fn(params, x, t))
            std = jnp.sqrt(adjacent**2 * (sigma**2 - adjacent**2) / sigma**2)
            return x_mean + batch_mul(std, normal_like(rng, x)), x_mean

    elif isinstance(sde, sde_lib.VPSDE):
        check_ddpm_levels(sde, "ancestral_sampling")

        def update(rng, params, x, t, dt):
            del dt
            beta = sde.discrete_betas[sde.discrete_index(t)]
            x_mean = batch_mul(
                1.0 / jnp.sqrt(1.0 - beta), x + batch_mul(beta, score_fn(params, x, t))
            )
            return x_mean + batch_mul(jnp.sqrt(beta), normal_like(rng, x)), x_mean

    else:
        raise ValueError(
            f"ancestral_sampling supports VESDE and VPSDE only, not {type(sde).__name__}; "
            "use 'reverse_diffusion' or 'euler_maruyama'."
        )
    return update


@register_predictor("none", nfe=0)
def none_predictor(sde, score_fn, probability_flow=False):
    """No predictor: returns (x, x)."""
    del sde, score_fn, probability_flow
    return lambda rng, params, x, t, dt: (x, x)


# ----------------------------------------------------------------------------------------------
# Correctors (docs/original_code.md#samplers).
# ----------------------------------------------------------------------------------------------


def check_ddpm_levels(sde: sde_lib.SDE, user: str) -> None:
    """Raises ValueError unless VP's DDPM chain exists at this N: every β_i ≤ β_max/N < 1.

    The chain (Eq. 46) has α_i = 1 - β_i; at N ≤ β_max some α_i ≤ 0 and ``user`` (a predictor
    or the Langevin step size of VP and sub-VP) would return NaN.
    """
    if isinstance(sde, sde_lib.VPSDE | sde_lib.subVPSDE) and sde.beta_max >= sde.N:
        raise ValueError(
            f"{user} steps the DDPM chain, whose β_i = β_max/N reaches "
            f"{sde.beta_max / sde.N:g} ≥ 1 at N = {sde.N} (β_max = {sde.beta_max:g}); "
            f"use N ≥ {int(sde.beta_max) + 1} levels (--num_steps / model.num_scales) or "
            "--sampler=sde/ode/heun, which take any number of steps"
        )


def langevin_alpha(sde: sde_lib.SDE, t):
    """The α of the corrector step size 2α(...)² at time ``t`` [B] (docs/original_code.md, D2).

    VE: 1. VP: the per-step DDPM α_i = 1 - β_i (the original's choice). sub-VP: the same α_i,
    since sub-VP shares VP's β(t); this keeps a given snr meaning the same step for VP and
    sub-VP (the original crashes here, docs/original_code.md, D1). Other SDEs: 1.
    """
    if isinstance(sde, sde_lib.VPSDE):
        return sde.alphas[sde.discrete_index(t)]
    if isinstance(sde, sde_lib.subVPSDE):
        vp = sde_lib.VPSDE(sde.beta_min, sde.beta_max, sde.N)
        return vp.alphas[vp.discrete_index(t)]
    return jnp.ones_like(t)


def _check_corrector_args(snr, n_steps):
    if not float(snr) > 0:
        raise ValueError(f"snr must be positive, got {snr}.")
    check_positive_int("n_steps", n_steps)


def _langevin_loop(step_size_fn, score_fn, n_steps):
    """``n_steps`` of x_mean = x + ε s(x, t), x = x_mean + sqrt(2ε) z (Algorithm 4/5)."""

    def update(rng, params, x, t):
        def body(j, carry):
            x, _ = carry
            grad = score_fn(params, x, t)
            z = normal_like(rng if n_steps == 1 else fold_in_per_sample(rng, j), x)
            step = step_size_fn(x, t, grad, z)
            x_mean = x + batch_mul(step, grad)
            return x_mean + batch_mul(jnp.sqrt(2.0 * step), z), x_mean

        return jax.lax.fori_loop(0, n_steps, body, (x, x))

    return update


@register_corrector("langevin")
def langevin_corrector(sde, score_fn, snr, n_steps=1, batch_pooled=False):
    """Langevin corrector with step ε = 2α (snr ‖z‖ / ‖s‖)² (Algorithms 4–5).

    By default the norms (hence ε) are per sample. ``batch_pooled=True`` uses the original's
    rule: ‖z‖ and ‖s‖ averaged over the batch, one ε for all samples (docs/original_code.md, D25),
    which makes each sample depend on its batch-mates.
    """
    _check_corrector_args(snr, n_steps)
    check_ddpm_levels(sde, "the langevin corrector")

    def step_size(x, t, grad, z):
        grad_norm, noise_norm = _norm_per_sample(grad), _norm_per_sample(z)
        if batch_pooled:
            grad_norm, noise_norm = jnp.mean(grad_norm), jnp.mean(noise_norm)
        return 2.0 * langevin_alpha(sde, t) * (snr * noise_norm / grad_norm) ** 2

    return _langevin_loop(step_size, score_fn, n_steps)


@register_corrector("ald")
def annealed_langevin_corrector(sde, score_fn, snr, n_steps=1, batch_pooled=False):
    """Annealed Langevin dynamics of NCSN: ε = 2α (snr σ_t)², σ_t the marginal std.

    The step never depends on the batch, so ``batch_pooled`` has no effect. See
    docs/original_code.md#samplers.
    """
    del batch_pooled
    _check_corrector_args(snr, n_steps)
    check_ddpm_levels(sde, "the ald corrector")

    def step_size(x, t, grad, z):
        std = sde.marginal_prob(x, t)[1]
        return 2.0 * langevin_alpha(sde, t) * (snr * std) ** 2

    return _langevin_loop(step_size, score_fn, n_steps)


@register_corrector("none", nfe=0)
def none_corrector(sde, score_fn, snr, n_steps=1, batch_pooled=False):
    """No corrector: returns (x, x)."""
    del sde, score_fn, snr, n_steps, batch_pooled
    return lambda rng, params, x, t: (x, x)


# ----------------------------------------------------------------------------------------------
# The PC loop.
# ----------------------------------------------------------------------------------------------


def pc_loop(
    keys,
    params,
    x,
    *,
    sde,
    predictor_update,
    corrector_update,
    eps,
    dt=None,
    denoise=True,
    corrector_first=False,
    projection=None,
):
    """Runs N predictor–corrector iterations on the grid t_i = linspace(T, eps, N) (Algorithm 1).

    Default order (paper Algorithm 1): the predictor moves x from t_i to t_{i+1}, then the
    corrector runs at t_{i+1}; no corrector acts on the prior sample or after the last
    predictor step. ``corrector_first=True`` is the original's order: corrector then predictor
    at every t_i, including t_0 = T. The two differ only at the ends.

    Args:
      keys: per-sample keys [B]; iteration i uses fold_in(key_b, i).
      params: the score function's parameters.
      x: the starting sample x(T) [B, ...].
      sde: the forward SDE (gives N and T).
      predictor_update: ``update(rng, params, x, t, dt)`` from `get_predictor`.
      corrector_update: ``update(rng, params, x, t)`` from `get_corrector`.
      eps: the last grid time.
      dt: the predictor's step (Euler–Maruyama only); default the grid spacing (T - eps)/(N - 1).
      denoise: return the last predictor step's x_mean (no final noise) instead of x.
      corrector_first: the original's corrector-then-predictor order.
      projection: optional ``projection(rng, x, x_mean, t) -> (x, x_mean)`` applied after every
        predictor and corrector update, with ``t`` [B] the time the state has reached (the hook
        for inpainting-style constraints); ``rng`` are per-sample keys.

    Returns:
      The final sample [B, ...].
    """
    n, batch = sde.N, x.shape[0]
    if dt is None:
        dt = (sde.T - eps) / max(n - 1, 1)

    def body(carry, inputs):
        x, x_mean = carry
        i, t = inputs
        # Keys of iteration i: fold_in(key_b, 4i + c), c = 0..3 (predictor, corrector and their
        # projections); folding in is cheaper to compile than splitting.
        pred_key, corr_key = fold_in_per_sample(keys, 4 * i), fold_in_per_sample(keys, 4 * i + 1)
        if projection is not None:
            pred_proj_key = fold_in_per_sample(keys, 4 * i + 2)
            corr_proj_key = fold_in_per_sample(keys, 4 * i + 3)
        vec_t = jnp.full((batch,), t)

        def correct(state):
            x, x_mean = corrector_update(corr_key, params, state[0], vec_t)
            if projection is not None:
                x, x_mean = projection(corr_proj_key, x, x_mean, vec_t)
            return x, x_mean

        if corrector_first:
            x, x_mean = correct((x, x_mean))
        else:
            x, x_mean = jax.lax.cond(i > 0, correct, lambda state: state, (x, x_mean))
        x, x_mean = predictor_update(pred_key, params, x, vec_t, dt)
        if projection is not None:
            x, x_mean = projection(pred_proj_key, x, x_mean, jnp.maximum(vec_t - dt, 0.0))
        progress.tick(i, n)
        return (x, x_mean), None

    ts = jnp.linspace(sde.T, eps, n)
    (x, x_mean), _ = jax.lax.scan(body, (x, x), (jnp.arange(n), ts))
    return x_mean if denoise else x


def get_pc_sampler(
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
    reproduce_original: bool = False,
):
    """Predictor–corrector sampler (Algorithm 1), jit-compiled as one `lax.scan`.

    Args:
      sde: the forward SDE; its ``N`` is the number of PC iterations.
      score_fn: ``score_fn(params, x, t) -> score`` (a network adapter or an exact score).
      shape: sample shape [B, ...].
      predictor: 'euler_maruyama', 'reverse_diffusion', 'ancestral_sampling', 'none' or any
        name added with `register_predictor`.
      corrector: 'langevin', 'ald', 'none' or any name added with `register_corrector`.
      snr: corrector signal-to-noise ratio r (ignored by 'none').
      n_steps: corrector steps per iteration.
      probability_flow: predictors step the probability-flow ODE instead of the reverse SDE.
      denoise: return the last predictor step without its noise (docs/original_code.md#samplers).
      eps: last time of the grid; ``None`` selects 1e-5 for VE and 1e-3 for VP/sub-VP.
      reproduce_original: reproduces published numbers: the original's batch-pooled Langevin
        step size, its corrector-then-predictor order and its Euler–Maruyama step dt = T/N.
        Samples then depend on their batch-mates. By default step sizes are per sample, the
        order is predictor then corrector and dt is the grid spacing (T - eps)/(N - 1).

    Returns:
      ``sample(rng, params, z=None) -> (x, nfe)``. ``rng`` is one key (split into one key per
      sample) or a batch of B per-sample keys; ``z`` an optional prior sample of ``shape``.
      ``nfe`` is the number of score evaluations per sample actually made (an int).
    """
    shape = check_shape(shape)
    eps = resolve_eps(sde, eps)
    check_positive_int("n_steps", n_steps)
    predictor_update = get_predictor(predictor)(sde, score_fn, probability_flow)
    corrector_update = get_corrector(corrector)(
        sde, score_fn, snr, n_steps, batch_pooled=reproduce_original
    )
    n_correct = sde.N if reproduce_original else sde.N - 1
    nfe = predictor_nfe(predictor) * sde.N + corrector_nfe(corrector, n_steps) * n_correct

    @jax.jit
    def run(rng, params, z):
        keys = per_sample_keys(rng, shape[0])
        prior_keys, loop_keys = split_per_sample(keys, 2)
        x = prior_sample(sde, prior_keys, shape) if z is None else z
        return pc_loop(
            loop_keys,
            params,
            x,
            sde=sde,
            predictor_update=predictor_update,
            corrector_update=corrector_update,
            eps=eps,
            dt=sde.T / sde.N if reproduce_original else None,
            denoise=denoise,
            corrector_first=reproduce_original,
        )

    def sample(rng, params, z=None):
        check_prior_sample(z, shape)
        return run(rng, params, z), nfe

    return sample
