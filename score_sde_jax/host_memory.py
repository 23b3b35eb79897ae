"""Host memory for XLA:CPU, opt-in: freed memory stays with the process and is used again.

XLA:CPU allocates each call's temporary buffers afresh (1.3 GB for a CIFAR-10 DDPM++ train step at
batch 8). glibc's malloc maps blocks that large with ``mmap`` (from a thread's own arena it has no
other choice) and unmaps them on ``free``, so the kernel maps and zeroes every page again on first
touch: about 330,000 page faults, 0.3-0.4 s of a 3.7 s DDPM++ step (docs/performance.md, "Host
memory"). `reuse_freed_memory` makes all threads allocate from the main heap, which then never uses
``mmap`` and is never trimmed: after the first steps the same pages serve every step. Results are
bit for bit the same.

It is off by default because one arena for all threads slows XLA's multi-threaded compiler (the
DDPM++ train step compiles in 57 s instead of 43 s) and the default digits training (168 s instead of
154 s for 200 steps), and because the process keeps the most memory it ever had allocated at once.
``SCORE_SDE_REUSE_HOST_MEMORY=1`` turns it on when the package is imported (`apply_requested`; glibc
only). Like the XLA flag in ``__init__``, it must come before JAX starts its CPU backend: threads
started earlier keep their arenas.
"""

import ctypes
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


def apply_requested() -> bool:
    """`reuse_freed_memory` where ``SCORE_SDE_REUSE_HOST_MEMORY=1``."""
    return os.environ.get("SCORE_SDE_REUSE_HOST_MEMORY") == "1" and reuse_freed_memory()
