"""Host memory for XLA:CPU: freed memory stays with the process and is used again.

XLA:CPU allocates each call's temporary buffers afresh (1.3 GB for a CIFAR-10 DDPM++ train step at
batch 8). glibc's malloc maps blocks that large with ``mmap`` (from a thread's own arena it has no
other choice) and unmaps them on ``free``, so the kernel maps and zeroes every page again on first
touch: about 330,000 page faults, 0.3-0.4 s of a 3.7 s DDPM++ step (docs/performance.md, "Host
memory"). `reuse_freed_memory` makes all threads allocate from the main heap, which then never uses
``mmap`` and is never trimmed: after the first steps the same pages serve every step. Results are
bit for bit the same. The cost is memory: the process keeps the most it ever had allocated at once,
which is one block of temporaries per step in flight (DDPM++ batch 8 with three steps dispatched
together: 6.4 GB resident instead of 3.9 GB).

Importing the package applies it (`apply_default`) where JAX will compute on the CPU: glibc, no GPU
or TPU plugin installed or ``JAX_PLATFORMS=cpu``, and ``SCORE_SDE_REUSE_HOST_MEMORY`` not ``0``. Like
the XLA flag in ``__init__``, it must come before JAX starts its CPU backend: threads started
earlier keep their arenas.
"""

import ctypes
import importlib.util
import os
import platform

# mallopt(3) parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
# mallopt(3): a trim threshold of -1 turns trimming off (the largest positive int, 2 GiB, would
# still give back the freed temporaries of a few train steps dispatched together).
_NEVER_TRIM = -1


def reuse_freed_memory() -> bool:
    """One malloc arena for all threads, no ``mmap``-ed chunks, no trimming of the heap's top.

    Returns whether glibc took the settings (False on other C libraries, which are left alone).
    """
    if platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    settings = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _NEVER_TRIM))
    return all(libc.mallopt(option, value) == 1 for option, value in settings)


def _computes_on_cpu() -> bool:
    """JAX's default backend will be the CPU: asked for, or no accelerator plugin installed."""
    platforms = os.environ.get("JAX_PLATFORMS", "")
    if platforms:
        return platforms.split(",")[0].strip() == "cpu"
    return not any(importlib.util.find_spec(name) for name in ("jax_plugins", "libtpu"))


def apply_default() -> bool:
    """`reuse_freed_memory` unless turned off or JAX will not compute on the CPU."""
    if os.environ.get("SCORE_SDE_REUSE_HOST_MEMORY", "1") == "0" or not _computes_on_cpu():
        return False
    return reuse_freed_memory()
