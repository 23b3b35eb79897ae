"""Freed host memory reused by XLA:CPU (`score_sde_jax.host_memory`, docs/performance.md "Host memory")."""

import os
import platform
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

from score_sde_jax import host_memory

# Page faults per call of a jitted program, the median of 9 calls after 20 calls in which the heap
# grows. MANY_BLOCKS: the gradient of 24 tanh layers keeps 24 activations of 4 MiB (like a
# network's at a small batch); ONE_BUFFER: temporaries of 64 MiB each (like a large batch's).
FAULTS_PER_CALL = """
import resource, statistics, sys
import score_sde_jax
import jax, jax.numpy as jnp

def many_blocks(ws, x):
    for w in ws:
        x = jnp.tanh(x @ w)
    return x.sum()

if sys.argv[1] == "many_blocks":
    f = jax.jit(jax.grad(many_blocks))
    args = ([jnp.full((256, 256), 0.01, jnp.float32)] * 24, jnp.ones((4096, 256), jnp.float32))
else:
    f = jax.jit(lambda x: jnp.cumsum(jnp.sin(x) * 2.0 + jnp.cos(x)[::-1]).sum())
    args = (jnp.ones((2**24,), jnp.float32),)
for _ in range(20):
    jax.block_until_ready(f(*args))
faults = []
for _ in range(9):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    jax.block_until_ready(f(*args))
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(score_sde_jax.HOST_MEMORY, statistics.median(faults))
"""


def _run(program: str, setting: str | None, **env_overrides) -> tuple[str, float]:
    env = {k: v for k, v in os.environ.items() if k not in (host_memory.ENV, "XLA_FLAGS")}
    env |= {"JAX_PLATFORMS": "cpu", **env_overrides}
    if setting is not None:
        env[host_memory.ENV] = setting
    result = subprocess.run(
        [sys.executable, "-c", FAULTS_PER_CALL, program],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    mode, faults = result.stdout.split()[-2:]
    return mode, float(faults)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_blocks_by_default_remove_the_page_faults_of_small_buffers():
    # 24 activations of 4 MiB are 24,576 pages: with glibc's defaults they are mapped afresh.
    mode, faults = _run("many_blocks", "0")
    assert mode == "off" and faults > 24576
    mode, faults = _run("many_blocks", None)
    assert mode == "blocks" and faults < 100


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_one_arena_removes_the_page_faults_of_large_buffers():
    # A 64 MiB buffer (16,384 pages) is larger than a block: only one arena keeps it.
    mode, faults = _run("one_buffer", None)
    assert mode == "blocks" and faults > 16384
    mode, faults = _run("one_buffer", "1")
    assert mode == "one_arena" and faults < 100


def test_blocks_only_where_jax_runs_on_the_cpu_alone(monkeypatch):
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    assert host_memory.cpu_only()
    for platforms in ("cuda", "cpu,tpu", "tpu"):
        monkeypatch.setenv("JAX_PLATFORMS", platforms)
        assert not host_memory.cpu_only()
    monkeypatch.delenv(host_memory.ENV, raising=False)
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=false")
    assert host_memory.apply() == "off"
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_enable_fast_math=false"


def test_an_unknown_setting_warns_and_keeps_the_default(monkeypatch):
    monkeypatch.setenv("JAX_PLATFORMS", "cuda")  # nothing is applied to this test process
    monkeypatch.setenv(host_memory.ENV, "yes")
    with pytest.warns(UserWarning, match="SCORE_SDE_REUSE_HOST_MEMORY='yes' is not 0 or 1"):
        assert host_memory.apply() == "off"
