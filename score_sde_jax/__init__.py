"""Score-based generative modeling through SDEs (Song et al., ICLR 2021) in JAX/Flax; see README.md.

``score_sde_jax.configs`` is the repository's ``configs/`` folder: setup.cfg installs it under that
name (``package_dir``), and a clone used without installing it (``PYTHONPATH=.``) finds it through
`_CheckoutConfigs` below.
"""

import importlib.abc
import importlib.util
import os
import sys


class _CheckoutConfigs(importlib.abc.MetaPathFinder):
    """Finds ``score_sde_jax.configs`` in the ``configs/`` folder beside this package's folder."""

    def __init__(self, folder: str):
        self.folder = folder

    def find_spec(self, fullname, path=None, target=None):
        if fullname != f"{__name__}.configs":
            return None
        return importlib.util.spec_from_file_location(
            fullname,
            os.path.join(self.folder, "__init__.py"),
            submodule_search_locations=[self.folder],
        )


def _find_checkout_configs() -> None:
    """In a clone (this package has no ``configs/`` of its own but its parent folder has one),
    looks up ``score_sde_jax.configs`` there before any other finder: an installed copy of the
    package elsewhere must not supply the clone's configs."""
    package = os.path.dirname(os.path.abspath(__file__))
    folder = os.path.join(os.path.dirname(package), "configs")
    installed = os.path.isdir(os.path.join(package, "configs"))
    if not installed and os.path.isfile(os.path.join(folder, "__init__.py")):
        sys.meta_path.insert(0, _CheckoutConfigs(folder))


_find_checkout_configs()

# XLA:CPU runs convolutions through Eigen and keeps YNNPACK for matrix products and reductions:
# YNNPACK's convolution gradients are 1.3-1.4x slower than Eigen's (docs/performance.md,
# "XLA:CPU flags"). Results differ by float32 round-off only. It takes effect when this package
# is imported before JAX starts its CPU backend (every command); XLA_FLAGS naming the option wins.
CPU_LIBRARY_FLAG = "--xla_cpu_experimental_ynn_fusion_type=individual_dot,reduce"


def _use_cpu_library_flag() -> None:
    flags_now = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_experimental_ynn_fusion_type" not in flags_now:
        os.environ["XLA_FLAGS"] = f"{flags_now} {CPU_LIBRARY_FLAG}".strip()


_use_cpu_library_flag()

# On CPU-only runs, each call of a compiled program reuses the host memory of the call before
# (score_sde_jax.host_memory): XLA:CPU's temporary buffers then cost no page faults.
from score_sde_jax import host_memory  # noqa: E402

host_memory.apply_requested()

# XLA:CPU runs JAX's looped Threefry lowering slowly; the unrolled one gives the same bits
# (score_sde_jax.threefry).
from score_sde_jax import threefry  # noqa: E402

threefry.use_unrolled_lowering()
