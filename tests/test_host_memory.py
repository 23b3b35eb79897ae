"""Opt-in reuse of freed host memory (`score_sde_jax.host_memory`, docs/performance.md "Host memory")."""

import os
import platform
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

from score_sde_jax import host_memory

# Page faults per call of a program with 64 MiB arrays: the median of 9 calls, once the heap has
# had 20 calls to grow (it still grows now and then, by 128 MiB, as freed blocks fragment).
FAULTS_PER_CALL = """
import resource, statistics
import score_sde_jax
import jax, jax.numpy as jnp
f = jax.jit(lambda x: jnp.cumsum(jnp.sin(x) * 2.0 + jnp.cos(x)[::-1]).sum())
x = jnp.ones((2**24,), jnp.float32)
for _ in range(20):
    f(x).block_until_ready()
faults = []
for _ in range(9):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    f(x).block_until_ready()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(statistics.median(faults))
"""


def _faults_per_call(reuse: bool) -> float:
    env = {k: v for k, v in os.environ.items() if k != "SCORE_SDE_REUSE_HOST_MEMORY"}
    env["JAX_PLATFORMS"] = "cpu"
    if reuse:
        env["SCORE_SDE_REUSE_HOST_MEMORY"] = "1"
    result = subprocess.run(
        [sys.executable, "-c", FAULTS_PER_CALL],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    return float(result.stdout.split()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_reuse_removes_the_page_faults():
    # 64 MiB is 16,384 pages: by default every such buffer is mapped and zeroed afresh.
    assert _faults_per_call(reuse=False) > 16384
    assert _faults_per_call(reuse=True) < 100


def test_off_unless_asked_for(monkeypatch):
    monkeypatch.delenv("SCORE_SDE_REUSE_HOST_MEMORY", raising=False)
    assert not host_memory.apply_requested()
