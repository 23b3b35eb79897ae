"""Freed host memory is used again (`score_sde_jax.host_memory`, docs/performance.md "Host memory")."""

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


def _faults_per_call(setting: str) -> float:
    env = dict(os.environ, SCORE_SDE_REUSE_HOST_MEMORY=setting, JAX_PLATFORMS="cpu")
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
def test_no_page_faults_once_the_heap_has_grown():
    # 64 MiB is 16,384 pages: without reuse every such buffer is mapped and zeroed afresh.
    assert _faults_per_call("0") > 16384
    assert _faults_per_call("1") < 100


def test_applies_only_where_jax_computes_on_the_cpu(monkeypatch):
    monkeypatch.setenv("JAX_PLATFORMS", "cuda,cpu")
    assert not host_memory._computes_on_cpu()
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    assert host_memory._computes_on_cpu()
    monkeypatch.setenv("SCORE_SDE_REUSE_HOST_MEMORY", "0")
    assert not host_memory.apply_default()
