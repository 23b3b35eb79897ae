"""The diffrax layer: solver names, score-evaluation counts and the solves of one sample.

Solves the probability-flow ODE (Eq. 13), optionally with its divergence for likelihoods (App.
D.2), and the reverse SDE (Eq. 6) on a Brownian path. The only module that calls
`diffrax.diffeqsolve`; the ODE and SDE samplers, encode/decode and the likelihood build on it. A
solve handles one sample (callers ``vmap``), so step sizes and counts are per sample. See
docs/sampling.md#diffrax-solvers.
"""

import functools

import diffrax
import jax
import jax.numpy as jnp
import lineax

from score_sde_jax import sde_lib
from score_sde_jax.sampling.common import check_positive_int

# name: (solver, has an error estimate for adaptive steps)
ODE_SOLVERS = {
    "tsit5": (diffrax.Tsit5, True),
    "dopri5": (diffrax.Dopri5, True),
    "dopri8": (diffrax.Dopri8, True),
    "bosh3": (diffrax.Bosh3, True),
    "heun": (diffrax.Heun, True),
    "midpoint": (diffrax.Midpoint, True),
    "ralston": (diffrax.Ralston, True),
    "euler": (diffrax.Euler, False),
}

# The default ODE solver: Dormand–Prince 5(4), the pair of SciPy's RK45 that the paper's NFE
# figures use. At the same rtol/atol it takes fewer steps than tsit5 on trained score networks
# (docs/sampling.md#diffrax-solvers).
DEFAULT_ODE_METHOD = "dopri5"

# Only these are correct backward in time in diffrax 0.7.2 (its SRK solvers are not, issue #598).
SDE_SOLVERS = {"euler": diffrax.Euler, "heun": diffrax.Heun}


def _lookup(table, method, kind):
    key = str(method).lower()
    if key not in table:
        raise ValueError(f"Unknown {kind} method {method!r}; valid names: {sorted(table)}.")
    return table[key]


def score_evaluations(solver, num_steps, first_step_attempts=1):
    """Score evaluations of a diffrax 0.7.2 solve with ``num_steps`` attempted steps.

    Every attempted step, accepted or rejected, evaluates each Runge–Kutta stage once, except the
    first stage of a first-same-as-last (FSAL) tableau: it is the last stage of the previous
    accepted step, so diffrax evaluates it only while no step has been accepted, once per
    ``first_step_attempts``. Euler evaluates once per step. docs/sampling.md#score-evaluations.
    """
    tableau = getattr(solver, "tableau", None)
    if tableau is None:  # Euler
        return num_steps
    fsal = int(tableau.fsal)
    return num_steps * (tableau.num_stages - fsal) + fsal * first_step_attempts


class _CountFirstStepAttempts(diffrax.AbstractStepSizeController):
    """A step-size controller that also counts the attempts at the first step.

    The state is (controller state, a step was accepted, attempts at the first step).
    """

    controller: diffrax.AbstractStepSizeController

    def wrap(self, direction):
        return _CountFirstStepAttempts(self.controller.wrap(direction))

    def init(self, terms, t0, t1, y0, dt0, args, func, error_order):
        t1, state = self.controller.init(terms, t0, t1, y0, dt0, args, func, error_order)
        return t1, (state, jnp.array(False), jnp.array(1, jnp.int32))

    def adapt_step_size(self, t0, t1, y0, y1_candidate, args, y_error, error_order, state):
        state, accepted, attempts = state
        keep, next_t0, next_t1, made_jump, state, result = self.controller.adapt_step_size(
            t0, t1, y0, y1_candidate, args, y_error, error_order, state
        )
        attempts = attempts + jnp.where(accepted | keep, 0, 1)
        return keep, next_t0, next_t1, made_jump, (state, accepted | keep, attempts), result


def _reverse_drift(sde, score_fn, sample_shape, probability_flow):
    """The reverse drift (Eq. 6 or 13) on one sample in diffrax's ``(t, y, params)`` form.

    ``y`` has ``sample_shape`` or is that sample flattened; ``sample_shape=None``: y's own shape.
    """
    rsde = sde_lib.reverse(sde, score_fn, probability_flow)

    def drift(t, y, params):
        x = y.reshape((1, *(y.shape if sample_shape is None else sample_shape)))
        return rsde.sde(params, x, jnp.full((1,), t))[0].reshape(y.shape)

    return drift


def _solve_ode(vector_field, y0, args, t0, t1, *, solver, rtol, atol, num_steps, max_steps):
    """``(y(t1), nfe)`` of one ODE solve: adaptive (PID) steps, or ``num_steps`` equal ones."""
    if num_steps is None:
        # An explicit first step (1/100 of the interval) rather than diffrax's guess, whose cost
        # in evaluations depends on the direction of integration.
        controller = _CountFirstStepAttempts(diffrax.PIDController(rtol=rtol, atol=atol))
        dt0 = (t1 - t0) / 100
    else:
        controller, dt0 = diffrax.ConstantStepSize(), (t1 - t0) / num_steps
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(vector_field),
        solver,
        t0=t0,
        t1=t1,
        dt0=dt0,
        y0=y0,
        args=args,
        stepsize_controller=controller,
        saveat=diffrax.SaveAt(t1=True, controller_state=num_steps is None),
        max_steps=max_steps,
    )
    attempts = sol.controller_state[2] if num_steps is None else 1
    nfe = score_evaluations(solver, sol.stats["num_steps"], attempts)
    return jax.tree.map(lambda y: y[-1], sol.ys), nfe


def get_probability_flow_solve(
    sde: sde_lib.SDE,
    score_fn,
    method: str = DEFAULT_ODE_METHOD,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    num_steps: int | None = None,
    max_steps: int = 4096,
    *,
    sample_shape=None,
    divergence=None,
):
    """Solves the probability-flow ODE dx/dt = f̃(x, t) = f - ½g²s (Eq. 13) for one sample.

    Args:
      sde, score_fn: the forward SDE and ``score_fn(params, x, t) -> score``.
      method: a name of `ODE_SOLVERS`.
      rtol, atol: tolerances of the adaptive (PID) step-size controller.
      num_steps: fixed number of equal steps instead of adaptive ones ('euler' needs it).
      max_steps: the most steps a solve may take (it raises when they run out).
      sample_shape: the shape of one sample when ``x`` is passed flattened.
      divergence: ``divergence(f, x, probe) -> (f(x), ∇·f(x))`` (exact or estimated): also
        integrates d(δ)/dt = ∇·f̃, as likelihoods need (App. D.2).

    Returns:
      ``solve(params, x, t0, t1, probe=None) -> (x(t1), nfe)`` for one sample ``x`` (no batch
      axis), or ``((x(t1), δ(t1)), nfe)`` with ``divergence`` (δ(t0) = 0). ``nfe`` counts the
      score evaluations (`score_evaluations`; one divergence evaluation counts as one).
    """
    solver_cls, adaptive = _lookup(ODE_SOLVERS, method, "ODE")
    if num_steps is None and not adaptive:
        raise ValueError(f"Method {method!r} has no error estimate; pass num_steps.")
    num_steps = None if num_steps is None else check_positive_int("num_steps", num_steps)
    solve_ode = functools.partial(
        _solve_ode,
        solver=solver_cls(),
        rtol=rtol,
        atol=atol,
        num_steps=num_steps,
        max_steps=max_steps,
    )
    drift = _reverse_drift(sde, score_fn, sample_shape, probability_flow=True)

    def with_divergence(t, state, args):
        params, probe = args
        return divergence(lambda x: drift(t, x, params), state[0], probe)

    def solve(params, x, t0, t1, probe=None):
        if divergence is None:
            return solve_ode(drift, x, params, t0, t1)
        return solve_ode(with_divergence, (x, jnp.zeros((), x.dtype)), (params, probe), t0, t1)

    return solve


def get_reverse_sde_solve(sde: sde_lib.SDE, score_fn, sample_shape, *, t1, method, num_steps):
    """Solves the reverse SDE (Eq. 6) from T down to ``t1`` in ``num_steps`` equal steps.

    ``method`` is a name of `SDE_SOLVERS`. The score-SDE noise is additive, so Heun's
    Stratonovich solution is the Itô one.

    Returns:
      ``(solve, nfe)``: ``solve(params, y, key) -> y(t1)`` for one flattened sample ``y`` [D] on
      its own `diffrax.VirtualBrownianTree` keyed by ``key``; ``nfe`` the score evaluations of a
      solve (an int).
    """
    solver = _lookup(SDE_SOLVERS, method, "SDE")()
    num_steps = check_positive_int("num_steps", num_steps)
    dt = (sde.T - t1) / num_steps
    drift = _reverse_drift(sde, score_fn, sample_shape, probability_flow=False)

    def diffusion(t, y, params):
        g = sde.sde(y.reshape((1, *sample_shape)), jnp.full((1,), t))[1][0]
        return lineax.DiagonalLinearOperator(g * jnp.ones_like(y))

    def solve(params, y, key):
        brownian = diffrax.VirtualBrownianTree(t1, sde.T, tol=dt / 8, shape=y.shape, key=key)
        terms = diffrax.MultiTerm(diffrax.ODETerm(drift), diffrax.ControlTerm(diffusion, brownian))
        sol = diffrax.diffeqsolve(
            terms,
            solver,
            t0=sde.T,
            t1=t1,
            dt0=-dt,
            y0=y,
            args=params,
            saveat=diffrax.SaveAt(t1=True),
            max_steps=num_steps,
        )
        return sol.ys[-1]

    return solve, score_evaluations(solver, num_steps)
