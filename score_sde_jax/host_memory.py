"""Host memory for XLA:CPU: freed temporary buffers stay with the process and serve the next call.

XLA:CPU allocates each call's temporary buffers afresh (1.3 GB for a CIFAR-10 DDPM++ train step at
batch 8). glibc's malloc maps blocks that large with ``mmap`` and unmaps them on ``free``, so the
kernel maps and zeroes every page again: about 330,000 page faults and 0.3-0.4 s of a 3.6 s DDPM++
step (docs/performance.md, "Host memory"). Two ways out, chosen by ``SCORE_SDE_REUSE_HOST_MEMORY``
when the package is imported (before JAX starts its CPU backend; glibc only):

- unset (the default, on CPU-only runs): `reuse_blocks`. XLA splits the temporaries into blocks of
  `BLOCK_BYTES`, which glibc keeps in the arena of the thread that freed them. Buffers larger than a
  block still get memory of their own, so this helps small batches most.
- ``1``: `one_arena`. Every thread allocates from the main heap, which never gives memory back:
  buffers of any size are reused, but XLA's multi-threaded compiler slows down (DDPM++ train step
  57 s instead of 43 s).
- ``0``: glibc's defaults.

Either way results are the same bit for bit: only where memory comes from changes. The cost is
resident memory: the process keeps the most it ever had allocated at once.
"""

import ctypes
import importlib.metadata
import importlib.util
import os
import pkgutil
import platform
import warnings

# mallopt(3) parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
# A trim threshold of -1 turns trimming off (the largest positive one, 2 GiB, would still give back
# the freed temporaries of a few train steps dispatched together).
_NEVER_TRIM = -1
# glibc's largest mmap threshold (32 MiB on 64-bit): smaller requests come from an arena's heap.
_MMAP_THRESHOLD_MAX = 32 << 20
# A thread arena deletes a heap (64 MiB) that has become entirely free unless the pad keeps it.
_TOP_PAD = 64 << 20

BLOCK_BYTES = 16 << 20
BLOCK_FLAG = f"--xla_multiheap_size_constraint_per_heap={BLOCK_BYTES}"
ENV = "SCORE_SDE_REUSE_HOST_MEMORY"


def _mallopt(*settings: tuple[int, int]) -> bool:
    """Applies glibc ``mallopt`` settings; False on other C libraries, which are left alone."""
    if platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    return all(libc.mallopt(option, value) == 1 for option, value in settings)


def one_arena() -> bool:
    """One malloc arena for all threads, no ``mmap``-ed chunks, no trimming of the heap's top."""
    return _mallopt((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _NEVER_TRIM))


def reuse_blocks() -> bool:
    """Temporaries in blocks of `BLOCK_BYTES` (XLA flag), which every thread's arena keeps.

    Blocks stay under glibc's mmap threshold, trimming is off, and the top pad stops a thread
    arena from deleting a heap that a finished call left free. XLA warns about every buffer
    larger than a block when it compiles; ``TF_CPP_MIN_LOG_LEVEL`` becomes 2 (errors only)
    unless it is set already.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_multiheap_size_constraint_per_heap" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {BLOCK_FLAG}".strip()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return _mallopt(
        (_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX),
        (_M_TRIM_THRESHOLD, _NEVER_TRIM),
        (_M_TOP_PAD, _TOP_PAD),
    )


def cpu_only() -> bool:
    """Whether JAX will run on the CPU only: ``JAX_PLATFORMS`` says so, or no GPU or TPU plugin
    is installed (JAX finds GPU plugins as ``jax_plugins`` entry points or modules, TPUs through
    ``libtpu``)."""
    platforms = os.environ.get("JAX_PLATFORMS", "")
    if platforms:
        return all(p.strip() == "cpu" for p in platforms.split(","))
    if importlib.metadata.entry_points(group="jax_plugins") or importlib.util.find_spec("libtpu"):
        return False
    namespace = importlib.util.find_spec("jax_plugins")
    return namespace is None or not any(pkgutil.iter_modules(namespace.submodule_search_locations))


def apply() -> str:
    """What ``SCORE_SDE_REUSE_HOST_MEMORY`` asks for: 'one_arena', 'blocks' or 'off'."""
    requested = os.environ.get(ENV, "")
    if requested not in ("", "0", "1"):
        warnings.warn(
            f"{ENV}={requested!r} is not 0 or 1; using the default (unset).", stacklevel=2
        )
        requested = ""
    if requested == "1" and one_arena():
        return "one_arena"
    if requested == "" and cpu_only() and reuse_blocks():
        return "blocks"
    return "off"
