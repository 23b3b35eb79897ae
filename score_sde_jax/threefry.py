"""Threefry-2x32 on XLA:CPU: large arrays as straight-line code instead of a loop; the same bits.

JAX hashes its PRNG keys with Threefry-2x32 (Salmon et al., "Parallel random numbers: as easy as
1, 2, 3", SC 2011: 20 rounds in five groups of four, a key injection after each group). On the CPU
JAX lowers the five groups as a loop, and XLA:CPU runs it slowly over large arrays: the dropout masks
of a CIFAR-10 DDPM++ train step took about 80 ms of a 3.4 s step (docs/performance.md, "Random
bits"). `use_unrolled_lowering` makes the CPU lowering write the rounds out for arrays of at least
`UNROLL_MIN_SIZE` elements. Smaller ones keep a loop: written out, the many small hashes of an
initialiser would compile about a second longer. Both compute the same hash, so every key, sample
and mask is unchanged bit for bit.
"""

import numpy as np

# Rotation distances of the odd and even groups of rounds, and the key schedule's parity constant.
_ROTATIONS = np.array([[13, 15, 26, 6], [17, 29, 16, 24]], np.uint32)
_PARITY = np.uint32(0x1BD11BDA)
UNROLL_MIN_SIZE = 4096


def _rotate_left(v, distance):
    return (v << distance) | (v >> (np.uint32(32) - distance))


def _rounds(x0, x1, rotations):
    for distance in rotations:
        x0 = x0 + x1
        x1 = _rotate_left(x1, distance) ^ x0
    return x0, x1


def _key_schedule(k0, k1):
    """The three keys injected in turn: the key's two words and their parity word."""
    return k0, k1, k0 ^ k1 ^ _PARITY


def threefry_2x32(k0, k1, x0, x1):
    """The Threefry-2x32 hash (20 rounds) of counters ``(x0, x1)`` under key ``(k0, k1)``:
    uint32 arrays of one shape (NumPy or JAX), rounds written out."""
    keys = _key_schedule(k0, k1)
    x0, x1 = x0 + keys[0], x1 + keys[1]
    for group in range(1, 6):
        x0, x1 = _rounds(x0, x1, _ROTATIONS[(group - 1) % 2])
        x0 = x0 + keys[group % 3]
        x1 = x1 + keys[(group + 1) % 3] + np.uint32(group)
    return x0, x1


def threefry_2x32_looped(k0, k1, x0, x1):
    """`threefry_2x32` as a ``fori_loop`` over the five groups (JAX arrays): small programs."""
    from jax import lax

    def group(g, carry):
        x0, x1, ka, kb, kc = carry  # ka, kb: the keys injected after group g
        x0, x1 = _rounds(x0, x1, lax.dynamic_index_in_dim(_ROTATIONS, (g - 1) % 2, 0, False))
        return x0 + ka, x1 + kb + g.astype(np.uint32), kb, kc, ka

    k0, k1, k2 = _key_schedule(k0, k1)
    carry = (x0 + k0, x1 + k1, k1, k2, k0)
    return lax.fori_loop(1, 6, group, carry)[:2]


def use_unrolled_lowering() -> None:
    """Lowers JAX's ``threefry2x32`` primitive on the CPU with `threefry_2x32` for arrays of at
    least `UNROLL_MIN_SIZE` elements and `threefry_2x32_looped` below."""
    from jax.extend.random import threefry2x32_p
    from jax.interpreters import mlir

    unrolled = mlir.lower_fun(threefry_2x32, multiple_results=True)
    looped = mlir.lower_fun(threefry_2x32_looped, multiple_results=True)

    def rule(ctx, *args):
        size = int(np.prod(ctx.avals_in[2].shape))
        return (unrolled if size >= UNROLL_MIN_SIZE else looped)(ctx, *args)

    mlir.register_lowering(threefry2x32_p, rule, platform="cpu")
