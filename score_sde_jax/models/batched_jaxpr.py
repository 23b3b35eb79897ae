"""Evaluation of a jaxpr with its identical equations batched: a network's initialiser, fast.

`jax.jit(model.init)` of an NCSN++ compiles one copy of the PRNG (threefry) and of the
initialiser per parameter — thousands of kernels, 20–70 s of XLA:CPU time for a program that
runs once. `evaluate` runs the jaxpr of such a function inside one `jax.jit`, but equations that
become ready together and apply the same primitive with the same parameters to inputs of the same
shapes (the ``uniform`` of every 3×3×256×256 kernel, the ``fold_in`` of every module name, …)
run as one `jax.vmap`-ed equation. Batching rules of elementwise and PRNG primitives compute the
same values element for element, so the outputs are those of the unbatched program bit for bit;
the program has a few hundred kernels instead of thousands. Equations whose outputs are unused
(the forward pass that ``init`` traces) are dropped first.
"""

import collections
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core


def _is_literal(v) -> bool:
    return isinstance(v, core.Literal)


def _live_equations(jaxpr) -> list:
    """The equations that the outputs depend on, in order (dead-code elimination)."""
    used = {v for v in jaxpr.outvars if not _is_literal(v)}
    live = []
    for eqn in reversed(jaxpr.eqns):
        if eqn.effects or any(v in used for v in eqn.outvars):
            live.append(eqn)
            used.update(v for v in eqn.invars if not _is_literal(v))
    return live[::-1]


def _signature(eqn):
    """Equations with equal signatures can run as one batched equation."""
    key = (eqn.primitive, tuple(sorted(eqn.params.items())), tuple(v.aval for v in eqn.invars))
    try:
        hash(key)
    except TypeError:  # unhashable parameters: never batched
        return id(eqn)
    return key


def _bind(eqn, *args) -> list:
    out = eqn.primitive.bind(*args, **eqn.params)
    return list(out) if eqn.primitive.multiple_results else [out]


class _Row(NamedTuple):
    """Row ``index`` of the batched value ``stacked``, not sliced out until something needs it."""

    stacked: jax.Array
    index: int


def _value(v):
    return v.stacked[v.index] if isinstance(v, _Row) else v


def _stack(column):
    """The batched input of a column of values: reuses a batched output when it is the column."""
    if all(isinstance(v, _Row) and v.stacked is column[0].stacked for v in column):
        rows = [v.index for v in column]
        if rows == list(range(len(column))) and len(column) == len(column[0].stacked):
            return column[0].stacked
        return column[0].stacked[np.asarray(rows)]
    return jnp.stack([_value(v) for v in column])


def _run_group(group, read) -> list[list]:
    """Outputs of each equation of ``group`` (equal signatures), computed by one equation."""
    first = group[0]
    if len(group) == 1:
        return [_bind(first, *(_value(read(v)) for v in first.invars))]
    in_axes, args = [], []
    for i, v in enumerate(first.invars):
        shared = not _is_literal(v) and all(eqn.invars[i] is v for eqn in group)
        in_axes.append(None if shared else 0)
        args.append(_value(read(v)) if shared else _stack([read(eqn.invars[i]) for eqn in group]))
    if all(axis is None for axis in in_axes):  # the same computation repeated
        return [_bind(first, *args)] * len(group)
    outs = jax.vmap(functools.partial(_bind, first), in_axes=in_axes)(*args)
    return [[_Row(out, k) for out in outs] for k in range(len(group))]


def _evaluate(jaxpr, layout, consts, args):
    """Runs ``jaxpr`` with ready equations of equal signature batched.

    Returns the distinct arrays that hold the outputs and appends to ``layout``, per output,
    (which array, which row of it or None for all of it).
    """
    env = dict(zip(jaxpr.constvars, consts, strict=True))
    env.update(zip(jaxpr.invars, args, strict=True))

    def read(v):
        return v.val if _is_literal(v) else env[v]

    pending = _live_equations(jaxpr)
    while pending:
        ready = collections.defaultdict(list)
        waiting = []
        for eqn in pending:
            if all(_is_literal(v) or v in env for v in eqn.invars):
                ready[_signature(eqn)].append(eqn)
            else:
                waiting.append(eqn)
        for group in ready.values():
            for eqn, outs in zip(group, _run_group(group, read), strict=True):
                env.update(zip(eqn.outvars, outs, strict=True))
        pending = waiting
    arrays = {}
    for v in map(read, jaxpr.outvars):
        whole, row = (v.stacked, v.index) if isinstance(v, _Row) else (v, None)
        number, _ = arrays.setdefault(id(whole), (len(arrays), whole))
        layout.append((number, row))
    return [whole for _, whole in arrays.values()]


def evaluate(fn, *args, compiler_options=None):
    """``fn(*args)`` computed by one jitted program with identical equations batched."""
    closed, shapes = jax.make_jaxpr(fn, return_shape=True)(*args)
    layout = []
    run = jax.jit(functools.partial(_evaluate, closed.jaxpr, layout))
    flat_args = jax.tree.leaves(args)
    compiled = run.lower(closed.consts, flat_args).compile(compiler_options=compiler_options)
    arrays = compiled(closed.consts, flat_args)
    # Rows are cut out on the host: in the program each would be one more kernel to compile.
    on_host = {}
    outs = []
    for number, row in layout:
        if row is None:
            outs.append(arrays[number])
        else:
            rows = on_host.setdefault(number, np.asarray(arrays[number]))
            outs.append(jnp.asarray(rows[row]))
    return jax.tree.unflatten(jax.tree.structure(shapes), outs)
