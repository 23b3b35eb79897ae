"""Few-step deterministic samplers of the probability-flow ODE (beyond the paper).

* `get_heun_sampler`: Heun's second-order method on the noise-level grid of Karras et al. (2022,
  "EDM", Algorithm 1 with S_churn = 0, ρ = 7), written for any SDE through its marginal
  x(t) = m(t) x(0) + s(t) z: in x̂ = x/m and σ = s/m the probability-flow ODE (Eq. 13) becomes
  dx̂/dσ = -σ ∇_x̂ log p_σ(x̂) = -σ m s_θ(m x̂, t(σ)).
* `get_dpm_solver_sampler`: DPM-Solver-2 and -3 (Lu et al. 2022, Algorithms 1 and 2, singlestep,
  r₁ = ½ resp. r₁ = ⅓, r₂ = ⅔) on a grid uniform in λ = log(α/σ). It solves the same ODE
  exactly in its linear part, using the noise prediction ε = -σ s_θ; valid for VP and sub-VP,
  whose kernels are x(t) = α_t x(0) + σ_t ε (for sub-VP: α = e^L, σ = 1 - e^{2L}).

Both return ``sample(rng, params, z=None) -> (x, nfe)`` like the other samplers; the prior draw of
sample b comes from its own key, so a sample does not depend on its batch-mates.
"""

import jax
import jax.numpy as jnp

from score_sde_jax import sde_lib


def _check_eps(sde, eps):
    if not 0.0 < eps < sde.T:
        raise ValueError(f"eps must lie in (0, T={sde.T}), got {eps}.")


def _check_steps(num_steps):
    if int(num_steps) < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps}.")


def _initial(sde, rng, shape, z):
    """The prior sample: ``z`` if given, else sample b drawn from the b-th split of ``rng``."""
    if z is not None:
        if tuple(z.shape) != tuple(shape):
            raise ValueError(f"z has shape {tuple(z.shape)}, expected {tuple(shape)}.")
        return z
    keys = jax.random.split(rng, shape[0])
    return jax.vmap(lambda k: sde.prior_sampling(k, shape[1:]))(keys)


def _scale_and_sigma(sde, t):
    """m(t) and the noise-to-signal ratio σ(t) = s(t)/m(t) for scalar or [n] times."""
    t = jnp.atleast_1d(t)
    m, s = sde.marginal_prob(jnp.ones((t.shape[0], 1)), t)
    return m[:, 0], s / m[:, 0]


def _time_of_log_mean_coeff(sde, L):
    """Solves ¼Δβ t² + ½β_min t = -L for t ≥ 0 (VP and sub-VP share L(t))."""
    a = 0.25 * (sde.beta_max - sde.beta_min)
    b = 0.5 * sde.beta_min
    if a == 0:
        return -L / b
    # Rationalised root: stable when a t² ≪ b t.
    return 2.0 * -L / (b + jnp.sqrt(b**2 + 4.0 * a * -L))


def time_of_sigma(sde, sigma):
    """Inverse of the noise-to-signal ratio σ(t) = s(t)/m(t) for each SDE."""
    if isinstance(sde, sde_lib.VESDE):
        return jnp.log(sigma / sde.sigma_min) / jnp.log(sde.sigma_max / sde.sigma_min)
    if isinstance(sde, sde_lib.VPSDE):
        # σ² = e^{-2L} - 1.
        return _time_of_log_mean_coeff(sde, -0.5 * jnp.log1p(sigma**2))
    if isinstance(sde, sde_lib.subVPSDE):
        # σ = e^{-L} - e^{L} = 2 sinh(-L).
        return _time_of_log_mean_coeff(sde, -jnp.arcsinh(0.5 * sigma))
    raise ValueError(f"No noise-level inverse for SDE {type(sde).__name__}.")


def karras_sigmas(sigma_max, sigma_min, num_steps, rho=7.0):
    """σ_i = (σ_max^{1/ρ} + i/(n-1) (σ_min^{1/ρ} - σ_max^{1/ρ}))^ρ, i = 0..n-1 (EDM Eq. 5)."""
    ramp = jnp.linspace(0.0, 1.0, num_steps)
    inv = sigma_max ** (1.0 / rho) + ramp * (sigma_min ** (1.0 / rho) - sigma_max ** (1.0 / rho))
    return inv**rho


def get_heun_sampler(sde, score_fn, shape, num_steps, eps=None, rho=7.0, denoise=True):
    """EDM-style deterministic Heun sampler for any SDE.

    Args:
      sde: a `sde_lib.SDE`.
      score_fn: ``score_fn(params, x, t)``.
      shape: ``[B, ...]`` of the samples.
      num_steps: number of Heun steps between σ(T) and σ(eps); each costs 2 score evaluations.
      eps: end time (default: the SDE's sampling eps, facts §1.6).
      rho: exponent of the Karras noise grid.
      denoise: finish with the Tweedie step x̂ + σ² ∇ log p (EDM's Euler step to σ = 0), +1 NFE.

    Returns:
      ``sample(rng, params, z=None) -> (x, nfe)``; ``z`` replaces the prior draw.
    """
    eps = sde_lib.default_sampling_eps(sde) if eps is None else float(eps)
    _check_eps(sde, eps)
    _check_steps(num_steps)
    _, sigma_hi = _scale_and_sigma(sde, sde.T)
    _, sigma_lo = _scale_and_sigma(sde, eps)
    sigmas = karras_sigmas(sigma_hi[0], sigma_lo[0], num_steps + 1, rho)
    times = time_of_sigma(sde, sigmas).at[0].set(sde.T).at[-1].set(eps)
    scales, _ = _scale_and_sigma(sde, times)
    batch = shape[0]

    def d_dsigma(params, x_hat, i):
        # dx̂/dσ = -σ m s(m x̂, t).
        t = jnp.full((batch,), times[i])
        return -sigmas[i] * scales[i] * score_fn(params, scales[i] * x_hat, t)

    def sample(rng, params, z=None):
        x_hat = _initial(sde, rng, shape, z) / scales[0]

        def step(x_hat, i):
            d = d_dsigma(params, x_hat, i)
            x_euler = x_hat + (sigmas[i + 1] - sigmas[i]) * d
            d_next = d_dsigma(params, x_euler, i + 1)
            return x_hat + (sigmas[i + 1] - sigmas[i]) * 0.5 * (d + d_next), None

        x_hat, _ = jax.lax.scan(step, x_hat, jnp.arange(num_steps))
        nfe = 2 * num_steps
        if denoise:
            x_hat = x_hat - sigmas[-1] * d_dsigma(params, x_hat, num_steps)
            nfe += 1
        return (x_hat if denoise else scales[-1] * x_hat), nfe

    return sample


def _alpha_sigma(sde, t):
    m, s = sde.marginal_prob(jnp.ones((jnp.atleast_1d(t).shape[0], 1)), jnp.atleast_1d(t))
    return m[:, 0], s


def _time_of_lambda(sde, lam):
    """Inverse of λ(t) = log α_t - log σ_t for VP and sub-VP."""
    if isinstance(sde, sde_lib.VPSDE):
        # e^{2L} / (1 - e^{2L}) = e^{2λ}  ⇒  L = -½ log(1 + e^{-2λ}).
        return _time_of_log_mean_coeff(sde, -0.5 * jnp.logaddexp(0.0, -2.0 * lam))
    # sub-VP: a/(1 - a²) = c with a = e^L, c = e^λ  ⇒  a = 2c / (1 + sqrt(1 + 4c²)).
    c = jnp.exp(lam)
    return _time_of_log_mean_coeff(sde, jnp.log(2.0 * c / (1.0 + jnp.sqrt(1.0 + 4.0 * c**2))))


def get_dpm_solver_sampler(sde, score_fn, shape, num_steps, order=2, eps=None, denoise=True):
    """DPM-Solver-2/3 (Lu et al. 2022) for VP and sub-VP SDEs.

    Args:
      sde: a `sde_lib.VPSDE` or `sde_lib.subVPSDE`.
      score_fn: ``score_fn(params, x, t)``.
      shape: ``[B, ...]`` of the samples.
      num_steps: number of solver steps, uniform in λ = log(α/σ); each costs ``order`` NFE.
      order: 2 or 3.
      eps: end time (default: the SDE's sampling eps, facts §1.6).
      denoise: finish with the data prediction x̂₀ = (x - σ ε)/α at eps, +1 NFE.

    Returns:
      ``sample(rng, params, z=None) -> (x, nfe)``; ``z`` replaces the prior draw.
    """
    if not isinstance(sde, (sde_lib.VPSDE, sde_lib.subVPSDE)):
        raise ValueError(
            f"DPM-Solver needs a VP or sub-VP SDE, got {type(sde).__name__}; use "
            "get_heun_sampler for VE."
        )
    if order not in (2, 3):
        raise ValueError(f"DPM-Solver order must be 2 or 3, got {order}.")
    eps = sde_lib.default_sampling_eps(sde) if eps is None else float(eps)
    _check_eps(sde, eps)
    _check_steps(num_steps)
    batch = shape[0]

    def lam(t):
        a, s = _alpha_sigma(sde, t)
        return jnp.log(a) - jnp.log(s)

    lambdas = jnp.linspace(lam(sde.T)[0], lam(eps)[0], num_steps + 1)
    times = _time_of_lambda(sde, lambdas).at[0].set(sde.T).at[-1].set(eps)

    def noise(params, x, t):
        # ε = -σ_t s_θ(x, t).
        _, s = _alpha_sigma(sde, t)
        return -s[0] * score_fn(params, x, jnp.full((batch,), t))

    def transfer(x, t_from, t_to, h, e):
        """First-order exact update x_to = (α_to/α_from) x - σ_to (e^h - 1) ε."""
        a_from, _ = _alpha_sigma(sde, t_from)
        a_to, s_to = _alpha_sigma(sde, t_to)
        return (a_to / a_from)[0] * x - (s_to * jnp.expm1(h))[0] * e

    def step2(params, x, i):
        t0, t1 = times[i], times[i + 1]
        h = lambdas[i + 1] - lambdas[i]
        s = _time_of_lambda(sde, lambdas[i] + 0.5 * h)
        u = transfer(x, t0, s, 0.5 * h, noise(params, x, t0))
        return transfer(x, t0, t1, h, noise(params, u, s))

    def step3(params, x, i):
        r1, r2 = 1.0 / 3.0, 2.0 / 3.0
        t0, t1 = times[i], times[i + 1]
        h = lambdas[i + 1] - lambdas[i]
        s1 = _time_of_lambda(sde, lambdas[i] + r1 * h)
        s2 = _time_of_lambda(sde, lambdas[i] + r2 * h)
        e0 = noise(params, x, t0)
        u1 = transfer(x, t0, s1, r1 * h, e0)
        d1 = noise(params, u1, s1) - e0
        _, sig_s2 = _alpha_sigma(sde, s2)
        u2 = (
            transfer(x, t0, s2, r2 * h, e0)
            - (sig_s2[0] * (r2 / r1) * (jnp.expm1(r2 * h) / (r2 * h) - 1.0)) * d1
        )
        d2 = noise(params, u2, s2) - e0
        _, sig_t1 = _alpha_sigma(sde, t1)
        return transfer(x, t0, t1, h, e0) - (sig_t1[0] / r2 * (jnp.expm1(h) / h - 1.0)) * d2

    update = step2 if order == 2 else step3

    def sample(rng, params, z=None):
        x = _initial(sde, rng, shape, z)
        x, _ = jax.lax.scan(lambda x, i: (update(params, x, i), None), x, jnp.arange(num_steps))
        nfe = order * num_steps
        if denoise:
            a, s = _alpha_sigma(sde, eps)
            x = (x - s[0] * noise(params, x, eps)) / a[0]
            nfe += 1
        return x, nfe

    return sample
