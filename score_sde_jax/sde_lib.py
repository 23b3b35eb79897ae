"""Forward SDEs of Song et al. (2021): VE, VP and sub-VP (Eqs. (9), (11), (12); App. B).

Each SDE is a small immutable pytree whose methods are the paper's equations. Time runs on
[0, T] with T = 1; ``x`` has shape ``[B, ...]`` and ``t`` shape ``[B]``. Per-sample scalars
(diffusion, std, G) are returned with shape ``[B]`` and broadcast with `batch_mul`. The original
code's discretizations and end times: docs/original_code.md#sdes-and-time-conditioning.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp


def batch_mul(a, x):
    """Multiplies per-sample scalars ``a`` [B] into ``x`` [B, ...]."""
    return a.reshape(a.shape + (1,) * (x.ndim - a.ndim)) * x


def _sum_except_batch(x):
    return jnp.sum(x.reshape(x.shape[0], -1), axis=-1)


def _check_n(n):
    if int(n) <= 0:
        raise ValueError(f"N (number of discretization steps) must be positive, got {n}.")


def _pytree_dataclass(cls):
    """A frozen dataclass registered as a pytree; the discretization size ``N`` is static."""
    cls = dataclasses.dataclass(frozen=True)(cls)
    data = [f.name for f in dataclasses.fields(cls) if f.name != "N"]
    return jax.tree_util.register_dataclass(cls, data_fields=data, meta_fields=["N"])


class SDE:
    """Interface shared by the three SDEs; subclasses implement the equations."""

    N: int

    @property
    def T(self):
        return 1.0

    def sde(self, x, t):
        """Drift f(x, t) [B, ...] and diffusion g(t) [B] of dx = f dt + g dw (Eq. 5)."""
        raise NotImplementedError

    def marginal_prob(self, x, t):
        """Mean [B, ...] and std [B] of the perturbation kernel p_0t(x(t) | x(0) = x)."""
        raise NotImplementedError

    def prior_sampling(self, rng, shape):
        """A sample of p_T, shape ``shape``."""
        raise NotImplementedError

    def prior_logp(self, z):
        """log p_T(z) per sample [B]."""
        raise NotImplementedError

    def discretize(self, x, t):
        """Euler–Maruyama discretization x_{i+1} = x_i + f_i + G_i z_i with Δt = T/N."""
        dt = 1.0 / self.N
        drift, diffusion = self.sde(x, t)
        return drift * dt, diffusion * math.sqrt(dt)

    def std_prior_logp(self, z, sigma):
        d = math.prod(z.shape[1:])
        return -d / 2.0 * jnp.log(2 * jnp.pi * sigma**2) - _sum_except_batch(z**2) / (
            2.0 * sigma**2
        )


@_pytree_dataclass
class VPSDE(SDE):
    """Variance-preserving SDE dx = -½β(t)x dt + sqrt(β(t)) dw, β(t) = β_min + t(β_max - β_min)."""

    beta_min: float = 0.1
    beta_max: float = 20.0
    N: int = 1000

    def __post_init__(self):
        _check_n(self.N)

    def beta(self, t):
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def log_mean_coeff(self, t):
        """L(t) = -½∫₀ᵗβ(s)ds."""
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def sde(self, x, t):
        beta_t = self.beta(t)
        return batch_mul(-0.5 * beta_t, x), jnp.sqrt(beta_t)

    def marginal_prob(self, x, t):
        log_mean_coeff = self.log_mean_coeff(t)
        mean = batch_mul(jnp.exp(log_mean_coeff), x)
        # expm1 keeps the small-t std accurate in float32 (1 - e^{2L} cancels).
        std = jnp.sqrt(-jnp.expm1(2.0 * log_mean_coeff))
        return mean, std

    def prior_sampling(self, rng, shape):
        return jax.random.normal(rng, shape)

    def prior_logp(self, z):
        return self.std_prior_logp(z, 1.0)

    @property
    def discrete_betas(self):
        """β_i = linspace(β_min/N, β_max/N, N): the DDPM noise schedule."""
        return jnp.linspace(self.beta_min / self.N, self.beta_max / self.N, self.N)

    @property
    def alphas(self):
        return 1.0 - self.discrete_betas

    @property
    def alphas_cumprod(self):
        return jnp.cumprod(self.alphas)

    @property
    def sqrt_1m_alphas_cumprod(self):
        return jnp.sqrt(1.0 - self.alphas_cumprod)

    def discrete_index(self, t):
        """i = floor(t (N-1) / T), the DDPM level used at time t."""
        return (t * (self.N - 1) / self.T).astype(jnp.int32)

    def discretize(self, x, t):
        """DDPM discretization: f_i = (sqrt(α_i) - 1) x, G_i = sqrt(β_i).

        See docs/original_code.md#sdes-and-time-conditioning.
        """
        i = self.discrete_index(t)
        beta = self.discrete_betas[i]
        alpha = self.alphas[i]
        f = batch_mul(jnp.sqrt(alpha), x) - x
        return f, jnp.sqrt(beta)


@_pytree_dataclass
class subVPSDE(SDE):
    """sub-VP SDE: VP drift with g(t)² = β(t)(1 - e^{-2∫₀ᵗβ}) (Eq. 11); Euler–Maruyama discretization."""

    beta_min: float = 0.1
    beta_max: float = 20.0
    N: int = 1000

    def __post_init__(self):
        _check_n(self.N)

    def beta(self, t):
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def log_mean_coeff(self, t):
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def sde(self, x, t):
        beta_t = self.beta(t)
        discount = -jnp.expm1(-2 * self.beta_min * t - (self.beta_max - self.beta_min) * t**2)
        return batch_mul(-0.5 * beta_t, x), jnp.sqrt(beta_t * discount)

    def marginal_prob(self, x, t):
        log_mean_coeff = self.log_mean_coeff(t)
        mean = batch_mul(jnp.exp(log_mean_coeff), x)
        # The variance is (1 - e^{2L})², so the std has no square root.
        std = -jnp.expm1(2.0 * log_mean_coeff)
        return mean, std

    def prior_sampling(self, rng, shape):
        return jax.random.normal(rng, shape)

    def prior_logp(self, z):
        return self.std_prior_logp(z, 1.0)


@_pytree_dataclass
class VESDE(SDE):
    """Variance-exploding SDE dx = sqrt(d[σ²(t)]/dt) dw, σ(t) = σ_min (σ_max/σ_min)^t (Eq. 9)."""

    sigma_min: float = 0.01
    sigma_max: float = 50.0
    N: int = 1000

    def __post_init__(self):
        _check_n(self.N)

    def sigma(self, t):
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def sde(self, x, t):
        diffusion = self.sigma(t) * jnp.sqrt(
            2 * (jnp.log(self.sigma_max) - jnp.log(self.sigma_min))
        )
        return jnp.zeros_like(x), diffusion

    def marginal_prob(self, x, t):
        return x, self.sigma(t)

    def prior_sampling(self, rng, shape):
        return jax.random.normal(rng, shape) * self.sigma_max

    def prior_logp(self, z):
        return self.std_prior_logp(z, self.sigma_max)

    @property
    def discrete_sigmas(self):
        """σ_i = exp(linspace(log σ_min, log σ_max, N)), ascending (index 0 = σ_min)."""
        return jnp.exp(jnp.linspace(jnp.log(self.sigma_min), jnp.log(self.sigma_max), self.N))

    def discrete_index(self, t):
        return (t * (self.N - 1) / self.T).astype(jnp.int32)

    def discretize(self, x, t):
        """SMLD discretization: f_i = 0, G_i = sqrt(σ_i² - σ_{i-1}²) with σ_{-1} = 0."""
        i = self.discrete_index(t)
        sigma = self.discrete_sigmas[i]
        adjacent_sigma = jnp.where(i == 0, 0.0, self.discrete_sigmas[jnp.maximum(i - 1, 0)])
        return jnp.zeros_like(x), jnp.sqrt(sigma**2 - adjacent_sigma**2)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ReverseSDE:
    """Reverse-time SDE (Eq. 6) or probability-flow ODE (Eq. 13) of ``forward`` given a score.

    Its methods take the score function's ``params`` as their first argument, so the same
    object serves a network and an analytic score.
    """

    forward: SDE
    score_fn: object = dataclasses.field(metadata=dict(static=True))
    probability_flow: bool = dataclasses.field(default=False, metadata=dict(static=True))

    @property
    def N(self):
        return self.forward.N

    @property
    def T(self):
        return self.forward.T

    @property
    def _g2_scale(self):
        return 0.5 if self.probability_flow else 1.0

    def sde(self, params, x, t):
        """Drift f - g² s (× ½ for the ODE) and diffusion g (0 for the ODE), in forward time."""
        drift, diffusion = self.forward.sde(x, t)
        score = self.score_fn(params, x, t)
        drift = drift - batch_mul(diffusion**2 * self._g2_scale, score)
        diffusion = jnp.zeros_like(diffusion) if self.probability_flow else diffusion
        return drift, diffusion

    def discretize(self, params, x, t):
        """rev_f = f_i - G_i² s (× ½ for the ODE), rev_G = G_i (0 for the ODE); x ← x - rev_f + rev_G z."""
        f, G = self.forward.discretize(x, t)
        rev_f = f - batch_mul(G**2 * self._g2_scale, self.score_fn(params, x, t))
        rev_G = jnp.zeros_like(G) if self.probability_flow else G
        return rev_f, rev_G


def reverse(sde: SDE, score_fn, probability_flow: bool = False) -> ReverseSDE:
    """The reverse-time SDE of ``sde`` driven by ``score_fn(params, x, t)``."""
    return ReverseSDE(sde, score_fn, probability_flow)


SDES = {"vesde": VESDE, "vpsde": VPSDE, "subvpsde": subVPSDE}


def get_sde(config) -> SDE:
    """Builds the SDE named by ``config.training.sde`` from ``config.model`` (docs/configs.md)."""
    name = config.training.sde.lower()
    if name not in SDES:
        raise ValueError(f"Unknown SDE {config.training.sde!r}; valid names: {sorted(SDES)}.")
    m = config.model
    if name == "vesde":
        return VESDE(float(m.sigma_min), float(m.sigma_max), int(m.num_scales))
    return SDES[name](float(m.beta_min), float(m.beta_max), int(m.num_scales))


def default_sampling_eps(sde: SDE) -> float:
    """End time of sampling used by the original code for this SDE.

    See docs/original_code.md#sdes-and-time-conditioning.
    """
    return 1e-5 if isinstance(sde, VESDE) else 1e-3


def get_sampling_eps(config) -> float:
    """Sampling end time for ``config.training.sde`` (``config.sampling.eps`` overrides it if set)."""
    eps = config.sampling.get("eps", None) if "sampling" in config else None
    if eps is not None:
        return float(eps)
    return default_sampling_eps(get_sde(config))
