"""Samplers of Song et al. (2021): predictor–corrector, probability-flow ODE, reverse SDE.

* `get_pc_sampler`: Algorithm 1 with registered predictors ('euler_maruyama',
  'reverse_diffusion', 'ancestral_sampling', 'none') and correctors ('langevin', 'ald', 'none');
  implemented in `score_sde_jax.sampling.pc`, which also holds the single-step updates and the
  generic `pc_loop` that controllable generation reuses.
* `get_ode_sampler`: the probability-flow ODE on diffrax with per-sample adaptive steps.
* `get_sde_sampler`: the reverse SDE on diffrax (Euler or Heun on a Brownian path).
* `get_heun_sampler`, `get_dpm_solver_sampler`: few-step deterministic samplers (beyond the
  paper; `score_sde_jax.sampling.few_step`).

Every sampler returns ``sample(rng, params, ...) -> (x, nfe)``; noise of sample b comes from its
own key, so samples do not depend on their batch-mates unless asked to reproduce the original.
"""

from score_sde_jax.sampling.few_step import get_dpm_solver_sampler, get_heun_sampler
from score_sde_jax.sampling.ode import get_ode_sampler, get_sde_sampler, tweedie_denoise
from score_sde_jax.sampling.pc import (
    corrector_names,
    get_corrector,
    get_pc_sampler,
    get_predictor,
    langevin_alpha,
    pc_loop,
    per_sample_keys,
    predictor_names,
    register_corrector,
    register_predictor,
)

__all__ = [
    "corrector_names",
    "get_corrector",
    "get_dpm_solver_sampler",
    "get_heun_sampler",
    "get_ode_sampler",
    "get_pc_sampler",
    "get_predictor",
    "get_sde_sampler",
    "langevin_alpha",
    "pc_loop",
    "per_sample_keys",
    "predictor_names",
    "register_corrector",
    "register_predictor",
    "tweedie_denoise",
]
