"""The package's default XLA:CPU flag (`score_sde_jax.CPU_LIBRARY_FLAG`, docs/performance.md)."""

import os
import subprocess
import sys

from conftest import REPO_ROOT

SHOW = "import os, score_sde_jax; print(os.environ['XLA_FLAGS'])"


def _flags_after_import(xla_flags):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    if xla_flags is not None:
        env["XLA_FLAGS"] = xla_flags
    result = subprocess.run(
        [sys.executable, "-c", SHOW], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_import_adds_the_flag_and_keeps_the_users():
    flag = "--xla_cpu_experimental_ynn_fusion_type=individual_dot,reduce"
    assert _flags_after_import(None) == flag
    assert _flags_after_import("--xla_cpu_enable_fast_math=false") == (
        "--xla_cpu_enable_fast_math=false " + flag
    )
    own = "--xla_cpu_experimental_ynn_fusion_type=individual_dot"
    assert _flags_after_import(own) == own
