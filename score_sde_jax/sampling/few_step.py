"""Few-step deterministic samplers of the probability-flow ODE (beyond the paper).

`get_heun_sampler`: EDM's Heun sampler (Karras et al. 2022, Algorithm 1 with S_churn = 0);
`get_dpm_solver_sampler`: singlestep DPM-Solver-2/3 (Lu et al. 2022, Algorithms 1 and 2) for VP
and sub-VP. Both step over a grid of times (`time_grid`, one of `SCHEDULES`) expressed through the
noise-to-signal ratio σ̂_t = σ_t/α_t or the log-SNR λ_t = -log σ̂_t. Grids and defaults:
docs/sampling.md#the-samplers.
"""

import jax
import jax.numpy as jnp

from score_sde_jax import progress, sde_lib
from score_sde_jax.sampling.common import (
    check_positive_int,
    check_prior_sample,
    check_shape,
    per_sample_keys,
    prior_sample,
    resolve_eps,
)

SCHEDULES = ("karras", "time_uniform", "time_quadratic", "log_snr")


def _check_args(sde, num_steps, eps):
    """``(num_steps, eps)`` validated, ``eps=None`` resolved to the SDE's default."""
    return check_positive_int("num_steps", num_steps), resolve_eps(sde, eps)


def _check_schedule(schedule):
    if schedule not in SCHEDULES:
        raise ValueError(f"Unknown schedule {schedule!r}; valid names: {list(SCHEDULES)}.")


def alpha_sigma(sde, t):
    """α_t and σ_t of the kernel x(t) = α_t x(0) + σ_t z at scalar or [n] times -> ([n], [n])."""
    t = jnp.atleast_1d(jnp.asarray(t, jnp.float32))
    mean_coeff, std = sde.marginal_prob(jnp.ones((t.shape[0], 1)), t)
    return mean_coeff[:, 0], std


def noise_to_signal(sde, t):
    """σ̂_t = σ_t/α_t, the noise level of the rescaled sample x/α_t (EDM Eq. 4)."""
    alpha, sigma = alpha_sigma(sde, t)
    return sigma / alpha


def log_snr(sde, t):
    """λ_t = log α_t - log σ_t, the log signal-to-noise ratio (Lu et al. Sec. 3.1)."""
    alpha, sigma = alpha_sigma(sde, t)
    return jnp.log(alpha) - jnp.log(sigma)


def _time_of_log_mean_coeff(sde, log_mean_coeff):
    """Solves ¼Δβ t² + ½β_min t = -L for t ≥ 0 (VP and sub-VP share L(t) = log α_t)."""
    a = 0.25 * (sde.beta_max - sde.beta_min)
    b = 0.5 * sde.beta_min
    if a == 0:
        return -log_mean_coeff / b
    # Rationalised root: no cancellation in float32 when a t² ≪ b t (small t).
    return -2.0 * log_mean_coeff / (b + jnp.sqrt(b**2 - 4.0 * a * log_mean_coeff))


def time_of_sigma(sde, sigma):
    """The time t with σ̂_t = ``sigma``: the inverse of `noise_to_signal`."""
    if isinstance(sde, sde_lib.VESDE):
        return jnp.log(sigma / sde.sigma_min) / jnp.log(sde.sigma_max / sde.sigma_min)
    if isinstance(sde, sde_lib.VPSDE):
        # σ̂² = e^{-2L} - 1.
        return _time_of_log_mean_coeff(sde, -0.5 * jnp.log1p(sigma**2))
    if isinstance(sde, sde_lib.subVPSDE):
        # σ̂ = (1 - e^{2L})/e^{L} = 2 sinh(-L).
        return _time_of_log_mean_coeff(sde, -jnp.arcsinh(0.5 * sigma))
    raise ValueError(
        f"No noise-level inverse for SDE {type(sde).__name__}; use VESDE, VPSDE or subVPSDE."
    )


def time_of_log_snr(sde, lam):
    """The time t with λ_t = ``lam``: the inverse of `log_snr`."""
    return time_of_sigma(sde, jnp.exp(-lam))


def karras_sigmas(sigma_max, sigma_min, num, rho=7.0):
    """σ_i = (σ_max^{1/ρ} + i/(n-1) (σ_min^{1/ρ} - σ_max^{1/ρ}))^ρ, i = 0..n-1 (EDM Eq. 5)."""
    ramp = jnp.linspace(0.0, 1.0, num)
    inv = sigma_max ** (1.0 / rho) + ramp * (sigma_min ** (1.0 / rho) - sigma_max ** (1.0 / rho))
    return inv**rho


def time_grid(sde, num_steps, eps, schedule, rho=7.0):
    """Times t_0 = T > t_1 > ... > t_n = eps of an n = ``num_steps`` step solve, shape [n + 1].

    Args:
      sde: a `sde_lib.VESDE`, `sde_lib.VPSDE` or `sde_lib.subVPSDE`.
      num_steps: n.
      eps: the last time; ``None`` selects the SDE's sampling eps (`sde_lib.default_sampling_eps`).
      schedule: 'karras' (EDM Eq. 5 on σ̂), 'time_uniform' (EDM Table 1, VP),
        'time_quadratic' (DDIM App. D.2) or 'log_snr' (uniform in λ, Lu et al. Sec. 3.3).
      rho: ρ of the 'karras' grid.
    """
    num_steps, eps = _check_args(sde, num_steps, eps)
    _check_schedule(schedule)
    if schedule == "time_uniform":
        return jnp.linspace(sde.T, eps, num_steps + 1)
    if schedule == "time_quadratic":
        return jnp.linspace(sde.T**0.5, eps**0.5, num_steps + 1) ** 2
    if schedule == "karras":
        hi, lo = noise_to_signal(sde, jnp.array([sde.T, eps]))
        times = time_of_sigma(sde, karras_sigmas(hi, lo, num_steps + 1, rho))
    else:
        hi, lo = log_snr(sde, jnp.array([sde.T, eps]))
        times = time_of_log_snr(sde, jnp.linspace(hi, lo, num_steps + 1))
    # The inverses round in float32; pin the ends so the solve covers exactly [eps, T].
    return times.at[0].set(sde.T).at[-1].set(eps)


def _initial(sde, rng, shape, z):
    check_prior_sample(z, shape)
    return prior_sample(sde, per_sample_keys(rng, shape[0]), shape) if z is None else z


def get_heun_sampler(
    sde, score_fn, shape, num_steps, eps=None, schedule=None, rho=7.0, denoise=True
):
    """EDM's deterministic Heun sampler (EDM Algorithm 1, S_churn = 0) for VE, VP and sub-VP.

    Steps dx̂/dσ̂ = -σ̂ α_t s_θ(α_t x̂, t) in x̂ = x/α_t (EDM Eq. 4 with s(t) = α_t) by Heun's
    method between the σ̂ of consecutive grid times. With ``denoise`` a last Euler step goes to
    σ̂ = 0, as EDM Algorithm 1's last step does: Tweedie's formula x̂ + σ̂² ∇_x̂ log p.

    Args:
      sde: a `sde_lib.VESDE`, `sde_lib.VPSDE` or `sde_lib.subVPSDE`.
      score_fn: ``score_fn(params, x, t)``.
      shape: ``[B, ...]`` of the samples.
      num_steps: Heun steps between T and eps; each costs 2 score evaluations.
      eps: end time (default: the SDE's sampling eps, `sde_lib.default_sampling_eps`).
      schedule: time grid, one of `SCHEDULES`. Default: 'karras' (EDM's ρ = 7) for VE and
        'time_uniform' for VP and sub-VP, whose σ̂_T ≈ 150 puts ~40 % of a ρ = 7 grid above
        σ̂ = 10 where the ODE is nearly linear; on the exact-score mixture the uniform grid has
        2-3x smaller error at 24 steps.
      rho: ρ of the 'karras' grid (EDM Eq. 5).
      denoise: finish with the Tweedie step, +1 score evaluation.

    Returns:
      ``sample(rng, params, z=None) -> (x, nfe)``: ``rng`` is one key or B per-sample keys and
      only draws x(T); ``z`` replaces that prior draw.
    """
    shape = check_shape(shape)
    num_steps, eps = _check_args(sde, num_steps, eps)
    if schedule is None:
        schedule = "karras" if isinstance(sde, sde_lib.VESDE) else "time_uniform"
    _check_schedule(schedule)
    batch = shape[0]

    def sample(rng, params, z=None):
        # Built inside the traced function: eagerly, each grid size costs dozens of tiny compiles.
        times = time_grid(sde, num_steps, eps, schedule, rho)
        alphas, sigmas = alpha_sigma(sde, times)
        # σ̂ of the times the score is evaluated at, so step sizes and scores agree.
        sigma_hats = sigmas / alphas

        def d_dsigma(x_hat, i):
            t = jnp.full((batch,), times[i])
            return -sigma_hats[i] * alphas[i] * score_fn(params, alphas[i] * x_hat, t)

        def step(x_hat, i):
            h = sigma_hats[i + 1] - sigma_hats[i]
            d = d_dsigma(x_hat, i)
            progress.tick(i, num_steps)
            return x_hat + 0.5 * h * (d + d_dsigma(x_hat + h * d, i + 1)), None

        x_hat = _initial(sde, rng, shape, z) / alphas[0]
        x_hat, _ = jax.lax.scan(step, x_hat, jnp.arange(num_steps))
        if denoise:
            return x_hat - sigma_hats[-1] * d_dsigma(x_hat, num_steps), 2 * num_steps + 1
        return alphas[-1] * x_hat, 2 * num_steps

    return sample


def get_dpm_solver_sampler(
    sde, score_fn, shape, num_steps, order=2, eps=None, schedule=None, denoise=True
):
    """Singlestep DPM-Solver-2/3 (Lu et al. 2022, Algorithms 1 and 2) for VP and sub-VP SDEs.

    With ε_θ = -σ_t s_θ and h = λ_t - λ_s, a step from s to t starts from DPM-Solver-1,
    x_t = (α_t/α_s) x_s - σ_t (e^h - 1) ε_θ(x_s, s) (Lu et al. Eq. 3.7), and corrects it with
    ε_θ at the intermediate log-SNRs λ_s + r h (r₁ = ½ for order 2; r₁ = ⅓, r₂ = ⅔ for order 3).

    Args:
      sde: a `sde_lib.VPSDE` or `sde_lib.subVPSDE`.
      score_fn: ``score_fn(params, x, t)``.
      shape: ``[B, ...]`` of the samples.
      num_steps: solver steps; each costs ``order`` score evaluations.
      order: 2 or 3.
      eps: end time (default: the SDE's sampling eps, `sde_lib.default_sampling_eps`).
      schedule: time grid, one of `SCHEDULES`; default 'time_quadratic', which has the smallest
        error on the exact-score mixture for both SDEs and orders (2-6x below 'log_snr'; sub-VP's
        σ̂(eps) ≈ 1e-4 puts a third of a 'log_snr' grid where the ODE is nearly linear).
      denoise: finish with the data prediction x̂₀ = (x - σ_eps ε_θ)/α_eps (Tweedie), +1
        score evaluation.

    Returns:
      ``sample(rng, params, z=None) -> (x, nfe)``: ``rng`` is one key or B per-sample keys and
      only draws x(T); ``z`` replaces that prior draw.
    """
    if not isinstance(sde, (sde_lib.VPSDE, sde_lib.subVPSDE)):
        raise ValueError(
            f"DPM-Solver needs a VP or sub-VP SDE, got {type(sde).__name__}; use "
            "get_heun_sampler for VE."
        )
    if order not in (2, 3):
        raise ValueError(f"DPM-Solver order must be 2 or 3, got {order}.")
    shape = check_shape(shape)
    num_steps, eps = _check_args(sde, num_steps, eps)
    schedule = "time_quadratic" if schedule is None else schedule
    _check_schedule(schedule)
    fractions = (0.5,) if order == 2 else (1.0 / 3.0, 2.0 / 3.0)
    batch = shape[0]

    def node(t):
        alpha, sigma = alpha_sigma(sde, t)
        return t, alpha[0], sigma[0], jnp.log(alpha[0]) - jnp.log(sigma[0])

    def eps_theta(params, x, node_):
        return -node_[2] * score_fn(params, x, jnp.full((batch,), node_[0]))

    def first_order(x, s, t, e):
        # x_t = (α_t/α_s) x_s - σ_t (e^h - 1) ε (Lu et al. Eq. 3.7).
        return (t[1] / s[1]) * x - t[2] * jnp.expm1(t[3] - s[3]) * e

    def step2(params, x, s, t, m):
        u = first_order(x, s, m, eps_theta(params, x, s))
        # Algorithm 1 with r₁ = ½: the correction folds into ε_θ at the midpoint.
        return first_order(x, s, t, eps_theta(params, u, m))

    def step3(params, x, s, t, m1, m2):
        h, h1, h2 = t[3] - s[3], m1[3] - s[3], m2[3] - s[3]
        r1, r2 = h1 / h, h2 / h
        e0 = eps_theta(params, x, s)
        u1 = first_order(x, s, m1, e0)
        d1 = eps_theta(params, u1, m1) - e0
        u2 = first_order(x, s, m2, e0) - m2[2] * (r2 / r1) * (jnp.expm1(h2) / h2 - 1.0) * d1
        d2 = eps_theta(params, u2, m2) - e0
        return first_order(x, s, t, e0) - t[2] / r2 * (jnp.expm1(h) / h - 1.0) * d2

    update = step2 if order == 2 else step3

    def sample(rng, params, z=None):
        # Built inside the traced function: eagerly, each grid size costs dozens of tiny compiles.
        times = time_grid(sde, num_steps, eps, schedule)
        lambdas = log_snr(sde, times)
        # Intermediate times at λ_s + r h. Every (α, σ, λ) is then recomputed from the times
        # themselves, so the exact linear part sees one consistent set after float32 round trips.
        mids = [time_of_log_snr(sde, lambdas[:-1] + r * jnp.diff(lambdas)) for r in fractions]

        def step(x, i):
            nodes = [node(times[i]), node(times[i + 1])] + [node(m[i]) for m in mids]
            progress.tick(i, num_steps)
            return update(params, x, *nodes), None

        x = _initial(sde, rng, shape, z)
        x, _ = jax.lax.scan(step, x, jnp.arange(num_steps))
        if denoise:
            end = node(times[-1])
            return (x - end[2] * eps_theta(params, x, end)) / end[1], order * num_steps + 1
        return x, order * num_steps

    return sample
