"""Host memory for XLA:CPU: each call's temporary buffers reuse the pages of the call before.

XLA:CPU allocates each call's temporary buffers as one block (1.3 GB for a CIFAR-10 DDPM++ train
step at batch 8) and frees it when the call ends. glibc's malloc serves such a block with ``mmap``
and unmaps it on ``free``, so the kernel maps and zeroes every page again: about 290,000 page
faults and 0.4-0.5 s of a 3.5 s DDPM++ step (docs/performance.md, "Host memory").

`reuse_freed_memory` runs each call on the thread that makes it (JAX's synchronous CPU dispatch),
so the block comes from that thread's malloc arena, the main heap, and sets the main heap to never
``mmap`` and never trim: after the first calls the same pages serve every call. Other threads'
arenas (XLA's compiler threads) are left alone. Results are the same bit for bit; the process
keeps the most memory its calls ever needed at once.

``SCORE_SDE_REUSE_HOST_MEMORY`` chooses when the package is imported, before JAX starts its CPU
backend (glibc only): unset, on CPU-only runs (`cpu_only`); ``1``, always; ``0``, never.
"""

import ctypes
import importlib.metadata
import importlib.util
import os
import pkgutil
import platform
import warnings

import jax

# mallopt(3) parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
# A trim threshold of -1 turns trimming off; the largest positive one (2 GiB) would still give
# back the freed temporaries of a large network.
_NEVER_TRIM = -1

ENV = "SCORE_SDE_REUSE_HOST_MEMORY"
# JAX's own setting; a user who sets it decides where calls run.
_ASYNC_DISPATCH_ENV = "JAX_CPU_ENABLE_ASYNC_DISPATCH"


def reuse_freed_memory() -> bool:
    """Calls run on the calling thread; its heap serves them without ``mmap`` and keeps what they
    free. Returns whether glibc took the settings (False on other C libraries, left alone)."""
    if platform.libc_ver()[0] != "glibc":
        return False
    # A thread's own arena maps blocks over 64 MiB whatever mmap_max says; the main heap obeys it.
    if _ASYNC_DISPATCH_ENV not in os.environ:
        jax.config.update("jax_cpu_enable_async_dispatch", False)
    libc = ctypes.CDLL(None)
    settings = ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _NEVER_TRIM))
    return all(libc.mallopt(option, value) == 1 for option, value in settings)


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


def apply_requested() -> bool:
    """`reuse_freed_memory` where ``SCORE_SDE_REUSE_HOST_MEMORY`` asks for it; whether applied."""
    requested = os.environ.get(ENV, "")
    if requested not in ("", "0", "1"):
        warnings.warn(
            f"{ENV}={requested!r} is not 0 or 1; using the default (unset).", stacklevel=2
        )
        requested = ""
    wanted = requested == "1" or (requested == "" and cpu_only())
    return wanted and reuse_freed_memory()
