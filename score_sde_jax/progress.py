"""Progress bars (tqdm, on process 0 only) for host loops and for compiled sampler loops.

Host loops wrap their iterations in `bar`. A compiled loop calls `tick(i, n)` at iteration ``i``
of ``n``: when it is traced inside `steps(...)` (the sampling driver does that), about a hundred
host callbacks per loop advance that bar; traced anywhere else, `tick` adds nothing to the
program, so the samplers stay pure functions with no side effects by default.
"""

import contextlib
import functools
import importlib.util
import os
import sys

import jax
import jax.numpy as jnp

if importlib.util.find_spec("ipywidgets") is None:
    # The text bar tqdm.auto falls back to in a notebook without widgets, minus its warning.
    from tqdm.std import tqdm
else:
    from tqdm.auto import tqdm

_ACTIVE = []  # the bars compiled loops advance, innermost last


def enabled() -> bool:
    """Bars show on process 0 unless ``SCORE_SDE_PROGRESS=0``."""
    return jax.process_index() == 0 and os.environ.get("SCORE_SDE_PROGRESS", "1") != "0"


def bar(iterable_or_total=None, desc: str = "", unit: str = "it", **kwargs) -> tqdm:
    """A tqdm bar on stderr over an iterable, or of a total count (disabled off process 0)."""
    if iterable_or_total is None or isinstance(iterable_or_total, int):
        kwargs["total"] = iterable_or_total
    else:
        kwargs["iterable"] = iterable_or_total
    return tqdm(desc=desc, unit=unit, disable=not enabled(), file=sys.stderr, **kwargs)


@contextlib.contextmanager
def steps(desc: str = "steps"):
    """A bar that the `tick` calls of loops traced inside this block advance."""
    with bar(None, desc, unit="step", leave=False) as b:
        _ACTIVE.append(b)
        try:
            yield b
        finally:
            _ACTIVE.remove(b)


def _advance(done, total: int) -> None:
    # Idempotent: a sharded program may run the callback once per device.
    if _ACTIVE:
        b = _ACTIVE[-1]
        if b.total != total:
            b.reset(total)
        done = int(done)
        if done > b.n:
            b.update(done - b.n)


def tick(i, n: int) -> None:
    """Marks iteration ``i`` (0-based, traced) of ``n`` done, about 100 times per loop."""
    if not _ACTIVE:
        return
    every = max(1, n // 100)
    done = i + 1
    jax.lax.cond(
        (done % every == 0) | (done == n),
        lambda d: jax.debug.callback(functools.partial(_advance, total=int(n)), d),
        lambda d: None,
        jnp.asarray(done),
    )


def reset() -> None:
    """Starts the innermost active bar over (a new batch through the same compiled loop)."""
    if _ACTIVE:
        _ACTIVE[-1].reset(_ACTIVE[-1].total)
