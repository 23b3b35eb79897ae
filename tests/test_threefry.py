"""Threefry-2x32 lowered on the CPU by `score_sde_jax.threefry` (docs/performance.md, "Random bits")."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend.random import threefry_2x32 as jax_threefry_2x32

import score_sde_jax  # noqa: F401  (registers the lowering)
from score_sde_jax import threefry

# Known-answer vectors of Threefry-2x32 with 20 rounds, published with the Random123 library:
# (key, counter) -> output.
KNOWN_ANSWERS = [
    ((0x00000000, 0x00000000), (0x00000000, 0x00000000), (0x6B200159, 0x99BA4EFE)),
    ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
    ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0)),
]


def _on_cpu(key, x0, x1):
    """JAX's threefry_2x32 (on the CPU in the test suite) of counters ``(x0, x1)`` under ``key``:
    the outputs (2, n) and the compiled program's text."""
    key, counts = jnp.asarray(np.array(key, np.uint32)), jnp.asarray(np.concatenate([x0, x1]))
    fn = jax.jit(jax_threefry_2x32)
    out = np.asarray(fn(key, counts)).reshape(2, -1)
    return out, fn.lower(key, counts).compile().as_text()


@pytest.mark.parametrize("key, counter, expected", KNOWN_ANSWERS)
def test_known_answers(key, counter, expected):
    with np.errstate(over="ignore"):
        got = threefry.threefry_2x32(*(np.uint32(v) for v in (*key, *counter)))
    assert tuple(int(v) for v in got) == expected
    for n in (1, threefry.UNROLL_MIN_SIZE):  # the looped and the written-out lowering
        out, _ = _on_cpu(key, *(np.full(n, c, np.uint32) for c in counter))
        assert (out[0] == expected[0]).all() and (out[1] == expected[1]).all()


def test_large_arrays_leave_no_loop_and_match_numpy():
    rng = np.random.default_rng(0)
    key = rng.integers(0, 2**32, 2, dtype=np.uint64).astype(np.uint32)
    counts = rng.integers(0, 2**32, (2, threefry.UNROLL_MIN_SIZE), dtype=np.uint64).astype(
        np.uint32
    )
    out, program = _on_cpu(key, *counts)
    with np.errstate(over="ignore"):
        expected = threefry.threefry_2x32(key[0], key[1], counts[0], counts[1])
    np.testing.assert_array_equal(out, np.stack(expected))
    assert "while" not in program
    _, small_program = _on_cpu((0, 0), np.zeros(1, np.uint32), np.zeros(1, np.uint32))
    assert "while" in small_program
