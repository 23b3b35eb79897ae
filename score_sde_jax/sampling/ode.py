"""diffrax samplers: the probability-flow ODE (Eq. 13) and the reverse SDE (Eq. 6).

Each sample is solved on its own (``vmap`` over `score_sde_jax.sampling.solvers` solves), so
adaptive step sizes, Brownian paths and the reported NFE are per sample and no sample depends on
its batch-mates. The solves run on flattened samples and hand the score function batches of one.
"""

import jax
import jax.numpy as jnp

from score_sde_jax import sde_lib
from score_sde_jax.sampling import solvers
from score_sde_jax.sampling.common import (
    check_prior_sample,
    check_shape,
    per_sample_keys,
    prior_sample,
    resolve_eps,
    split_per_sample,
    tweedie_denoise,
)


def get_ode_sampler(
    sde: sde_lib.SDE,
    score_fn,
    shape,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    method: str = solvers.DEFAULT_ODE_METHOD,
    eps: float | None = None,
    denoise: bool = False,
    num_steps: int | None = None,
    max_steps: int = 4096,
):
    """Probability-flow ODE sampler: dx/dt = f - ½g²s solved from T down to eps (Eq. 13).

    Args:
      sde: the forward SDE.
      score_fn: ``score_fn(params, x, t) -> score``.
      shape: sample shape [B, ...].
      rtol, atol: tolerances of the adaptive (PID) step-size controller.
      method: a name of `solvers.ODE_SOLVERS` (default dopri5).
      eps: end time; ``None`` selects 1e-5 for VE and 1e-3 for VP/sub-VP.
      denoise: finish with Tweedie's formula at eps (`tweedie_denoise`, one more evaluation).
        The original takes a reverse-diffusion step there, which is the same for VE.
      num_steps: fixed number of equal steps instead of adaptive ones ('euler' needs it).
      max_steps: the most steps a solve may take.

    Returns:
      ``sample(rng, params, z=None) -> (x, nfe)``; ``rng`` is one key or B per-sample keys and
      only draws x(T) when ``z`` is not given. ``nfe`` [B] holds each sample's score evaluations
      (under ``vmap`` the batch runs until its slowest sample is done).
    """
    shape = check_shape(shape)
    eps = resolve_eps(sde, eps)
    solve = solvers.get_probability_flow_solve(
        sde, score_fn, method, rtol, atol, num_steps, max_steps, sample_shape=shape[1:]
    )

    @jax.jit
    def run(rng, params, z):
        if z is None:
            z = prior_sample(sde, per_sample_keys(rng, shape[0]), shape)
        flat = z.reshape(shape[0], -1)
        y, nfe = jax.vmap(lambda y0: solve(params, y0, sde.T, eps))(flat)
        x = y.reshape(shape)
        if denoise:
            x = tweedie_denoise(sde, score_fn, params, x, jnp.full((shape[0],), eps))
            nfe = nfe + 1
        return x, nfe

    def sample(rng, params, z=None):
        check_prior_sample(z, shape)
        return run(rng, params, z)

    return sample


def get_sde_sampler(
    sde: sde_lib.SDE,
    score_fn,
    shape,
    method: str = "euler",
    num_steps: int | None = None,
    eps: float | None = None,
    denoise: bool = True,
):
    """Reverse-SDE sampler on diffrax: Euler–Maruyama or Heun steps from T down to eps.

    Each sample follows its own `diffrax.VirtualBrownianTree`, keyed by its per-sample key.
    Only Euler and Heun are offered: diffrax 0.7.2's stochastic Runge–Kutta solvers are wrong
    backward in time (its issue #598). The score-SDE noise is additive, so Heun's Stratonovich
    solution is the Itô one.

    Args:
      sde: the forward SDE.
      score_fn: ``score_fn(params, x, t) -> score``.
      shape: sample shape [B, ...].
      method: 'euler' or 'heun'.
      num_steps: number of equal steps; ``None`` uses ``sde.N``.
      eps: end time; ``None`` selects 1e-5 for VE and 1e-3 for VP/sub-VP.
      denoise: finish with Tweedie's formula at eps (`tweedie_denoise`), removing the noise
        the last step injected (one more evaluation).

    Returns:
      ``sample(rng, params, z=None) -> (x, nfe)``; ``rng`` is one key or B per-sample keys;
      ``nfe`` is the number of score evaluations per sample (an int).
    """
    shape = check_shape(shape)
    eps = resolve_eps(sde, eps)
    num_steps = sde.N if num_steps is None else num_steps
    solve, nfe = solvers.get_reverse_sde_solve(
        sde, score_fn, shape[1:], t1=eps, method=method, num_steps=num_steps
    )

    @jax.jit
    def run(rng, params, z):
        prior_keys, path_keys = split_per_sample(per_sample_keys(rng, shape[0]), 2)
        if z is None:
            z = prior_sample(sde, prior_keys, shape)
        y = jax.vmap(solve, in_axes=(None, 0, 0))(params, z.reshape(shape[0], -1), path_keys)
        x = y.reshape(shape)
        if denoise:
            x = tweedie_denoise(sde, score_fn, params, x, jnp.full((shape[0],), eps))
        return x

    nfe = nfe + int(denoise)

    def sample(rng, params, z=None):
        check_prior_sample(z, shape)
        return run(rng, params, z), nfe

    return sample
