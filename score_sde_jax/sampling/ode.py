"""diffrax samplers: the probability-flow ODE (Eq. 13) and the reverse SDE (Eq. 6).

Each sample is solved on its own (``vmap`` over the batch), so adaptive step sizes, Brownian
paths and the reported NFE are per sample and no sample depends on its batch-mates. The solves
run on flattened samples and hand the score function batches of one.
"""

import diffrax
import jax
import jax.numpy as jnp
import lineax

from score_sde_jax import sde_lib
from score_sde_jax.sampling.pc import (
    check_prior_sample,
    check_shape,
    per_sample_keys,
    prior_sample,
    resolve_eps,
    split_per_sample,
)

# name: (solver, has an error estimate for adaptive steps)
_ODE_SOLVERS = {
    "tsit5": (diffrax.Tsit5, True),
    "dopri5": (diffrax.Dopri5, True),
    "dopri8": (diffrax.Dopri8, True),
    "bosh3": (diffrax.Bosh3, True),
    "heun": (diffrax.Heun, True),
    "midpoint": (diffrax.Midpoint, True),
    "ralston": (diffrax.Ralston, True),
    "euler": (diffrax.Euler, False),
}

# Only these are correct backward in time in diffrax 0.7.2 (its SRK solvers are not, issue #598).
_SDE_SOLVERS = {"euler": diffrax.Euler, "heun": diffrax.Heun}


def _solver_entry(table, method, kind):
    key = str(method).lower()
    if key not in table:
        raise ValueError(f"Unknown {kind} method {method!r}; valid names: {sorted(table)}.")
    return table[key]


def _evaluations(solver):
    """Vector-field evaluations (per step, at the start) of a diffrax solver.

    An explicit Runge–Kutta step evaluates each stage once; a first-same-as-last (FSAL)
    tableau reuses the previous step's last stage, paid once at the start (also after a
    rejected step, which keeps its first stage). tests/test_sampling.py checks these counts
    against actual calls.
    """
    tableau = getattr(solver, "tableau", None)
    if tableau is None:  # Euler
        return 1, 0
    return tableau.num_stages - int(tableau.fsal), int(tableau.fsal)


def _check_num_steps(num_steps):
    if int(num_steps) != num_steps or num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps}.")
    return int(num_steps)


def tweedie_denoise(sde: sde_lib.SDE, score_fn, params, x, t):
    """E[x(0) | x(t)] = (x + σ_t² ∇log p_t(x)) / m_t for x(t) = m_t x(0) + σ_t z (Tweedie).

    Exact for every linear SDE and independent of N. For VE at t = eps it is the original's final
    reverse-diffusion step x + σ_min² s (docs/original_code.md#samplers), as σ(eps) ≈ σ_min; for VP
    that step, (2 - sqrt(1 - β_1)) x + β_1 s, matches it only while β_1 ≈ σ_eps² (N = 1000,
    eps = 1e-3).
    """
    mean_coeff = sde.marginal_prob(jnp.ones_like(x), t)[0]
    std = sde.marginal_prob(x, t)[1]
    return (x + sde_lib.batch_mul(std**2, score_fn(params, x, t))) / mean_coeff


def _flat_drift_and_diffusion(sde, score_fn, shape, probability_flow):
    """Reverse-SDE drift and diffusion on one flattened sample, in diffrax's (t, y, args) form."""
    rsde = sde_lib.reverse(sde, score_fn, probability_flow)

    def drift(t, y, params):
        x = y.reshape((1,) + shape[1:])
        return rsde.sde(params, x, jnp.full((1,), t))[0].reshape(y.shape)

    def diffusion(t, y, params):
        g = sde.sde(y.reshape((1,) + shape[1:]), jnp.full((1,), t))[1][0]
        return lineax.DiagonalLinearOperator(g * jnp.ones_like(y))

    return drift, diffusion


def get_ode_sampler(
    sde: sde_lib.SDE,
    score_fn,
    shape,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    method: str = "tsit5",
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
      method: 'tsit5', 'dopri5', 'dopri8', 'bosh3', 'heun', 'midpoint', 'ralston' or 'euler'.
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
    solver_cls, adaptive = _solver_entry(_ODE_SOLVERS, method, "ODE")
    solver = solver_cls()
    per_step, at_start = _evaluations(solver)
    if num_steps is None:
        if not adaptive:
            raise ValueError(f"Method {method!r} has no error estimate; pass num_steps.")
        # An explicit first step (1/100 of the interval) rather than diffrax's guess, whose cost
        # in evaluations depends on the integration direction.
        controller = diffrax.PIDController(rtol=rtol, atol=atol)
        dt0 = -(sde.T - eps) / 100
    else:
        num_steps = _check_num_steps(num_steps)
        controller, dt0 = diffrax.ConstantStepSize(), -(sde.T - eps) / num_steps
    drift, _ = _flat_drift_and_diffusion(sde, score_fn, shape, probability_flow=True)
    term = diffrax.ODETerm(drift)

    def solve(params, y0):
        sol = diffrax.diffeqsolve(
            term,
            solver,
            t0=sde.T,
            t1=eps,
            dt0=dt0,
            y0=y0,
            args=params,
            stepsize_controller=controller,
            saveat=diffrax.SaveAt(t1=True),
            max_steps=max_steps,
        )
        return sol.ys[-1], sol.stats["num_steps"] * per_step + at_start

    @jax.jit
    def run(rng, params, z):
        if z is None:
            z = prior_sample(sde, per_sample_keys(rng, shape[0]), shape)
        y, nfe = jax.vmap(solve, in_axes=(None, 0))(params, z.reshape(shape[0], -1))
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
    solver = _solver_entry(_SDE_SOLVERS, method, "SDE")()
    per_step, at_start = _evaluations(solver)
    num_steps = _check_num_steps(sde.N if num_steps is None else num_steps)
    dt = (sde.T - eps) / num_steps
    drift, diffusion = _flat_drift_and_diffusion(sde, score_fn, shape, probability_flow=False)
    dim = 1
    for s in shape[1:]:
        dim *= s

    def solve(params, y0, key):
        brownian = diffrax.VirtualBrownianTree(eps, sde.T, tol=dt / 8, shape=(dim,), key=key)
        terms = diffrax.MultiTerm(diffrax.ODETerm(drift), diffrax.ControlTerm(diffusion, brownian))
        sol = diffrax.diffeqsolve(
            terms,
            solver,
            t0=sde.T,
            t1=eps,
            dt0=-dt,
            y0=y0,
            args=params,
            saveat=diffrax.SaveAt(t1=True),
            max_steps=num_steps,
        )
        return sol.ys[-1]

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

    nfe = num_steps * per_step + at_start + int(denoise)

    def sample(rng, params, z=None):
        check_prior_sample(z, shape)
        return run(rng, params, z), nfe

    return sample
