"""Reuse of freed host memory on CPU-only runs (`score_sde_jax.host_memory`, docs/performance.md
"Host memory")."""

import os
import platform
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

from score_sde_jax import host_memory

# Page faults per call of a program with 64 MiB arrays (the median of 9 calls once the heap has
# had 20 calls to grow), and the result's bits.
FAULTS_PER_CALL = """
import resource, statistics
import score_sde_jax
import jax, jax.numpy as jnp
f = jax.jit(lambda x: (jnp.sin(x) * 2.0 + jnp.cos(x)[::-1]).sum())
x = jnp.linspace(0.0, 1.0, 2**24, dtype=jnp.float32)
for _ in range(20):
    f(x).block_until_ready()
faults = []
for _ in range(9):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    out = f(x).block_until_ready()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(jax.config.read('jax_cpu_enable_async_dispatch'), out.item().hex(), statistics.median(faults))
"""


def _run(setting: str | None) -> tuple[str, str, float]:
    """(async dispatch, the result's bits, page faults per call) with ``SCORE_SDE_REUSE_HOST_MEMORY``
    set to ``setting`` (None: unset) on a CPU-only run."""
    env = {k: v for k, v in os.environ.items() if k != host_memory.ENV}
    env["JAX_PLATFORMS"] = "cpu"
    if setting is not None:
        env[host_memory.ENV] = setting
    result = subprocess.run(
        [sys.executable, "-c", FAULTS_PER_CALL],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    dispatch, bits, faults = result.stdout.split()[-3:]
    return dispatch, bits, float(faults)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_cpu_runs_reuse_freed_memory_with_the_same_results():
    # 64 MiB is 16,384 pages: with glibc's defaults every such buffer is mapped and zeroed afresh.
    off_dispatch, off_bits, off_faults = _run("0")
    default_dispatch, default_bits, default_faults = _run(None)
    assert (off_dispatch, default_dispatch) == ("True", "False")
    assert off_faults > 16384
    assert default_faults < 100
    assert default_bits == off_bits


def test_cpu_only_follows_jax_platforms(monkeypatch):
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    assert host_memory.cpu_only()
    monkeypatch.setenv("JAX_PLATFORMS", "cuda,cpu")
    assert not host_memory.cpu_only()


def test_off_when_asked_and_warns_on_other_values(monkeypatch):
    monkeypatch.setenv(host_memory.ENV, "0")
    assert not host_memory.apply_requested()
    monkeypatch.setenv(host_memory.ENV, "yes")
    monkeypatch.setenv("JAX_PLATFORMS", "cuda")  # the default for a GPU run: off
    with pytest.warns(UserWarning, match="is not 0 or 1"):
        assert not host_memory.apply_requested()
