"""Samplers of Song et al. (2021) and beyond, each ``sample(rng, params, ...) -> (x, nfe)``.

`pc` (Algorithm 1), `ode` (probability-flow ODE and reverse SDE on the diffrax layer `solvers`),
`few_step` (Heun, DPM-Solver), `controllable` (App. I), shared helpers in `common`, samplers by
name in `registry`, the sampling driver in `generation`. See docs/sampling.md.
"""

from score_sde_jax.sampling.common import per_sample_keys, tweedie_denoise
from score_sde_jax.sampling.few_step import get_dpm_solver_sampler, get_heun_sampler
from score_sde_jax.sampling.ode import get_ode_sampler, get_sde_sampler
from score_sde_jax.sampling.pc import (
    corrector_names,
    get_corrector,
    get_pc_sampler,
    get_predictor,
    langevin_alpha,
    pc_loop,
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
