"""The commands keep compiled programs on disk (`score_sde_jax.commands`, docs/performance.md).

A second run loads the train step instead of compiling it and logs the same loss; the
folder follows ``XDG_CACHE_HOME``; its size is bounded; ``SCORE_SDE_COMPILATION_CACHE=0`` turns
the cache off.
"""

import os
import re

from conftest import TINY, cli


def train(workdir, cache_home, **env):
    """``train`` of the tiny run; the logged loss of its last step. The cache folder is the
    commands' default under ``cache_home`` (the session's JAX_COMPILATION_CACHE_DIR is unset)."""
    env = {"JAX_COMPILATION_CACHE_DIR": "", "XDG_CACHE_HOME": str(cache_home), **env}
    result = cli("train", f"--workdir={workdir}", *TINY, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return re.findall(r"step 2/2 .*\| loss (\S+)", result.stderr)


def cached(cache_home):
    folder = cache_home / "score_sde_jax" / "jax"
    return sorted(os.listdir(folder)) if folder.exists() else []


def test_second_run_loads_the_compiled_train_step(tmp_path):
    first = train(tmp_path / "run1", tmp_path / "cache")
    entries = cached(tmp_path / "cache")
    assert any(name.startswith("jit_train_steps-") for name in entries), entries
    # JAX keeps access times (and a lock) only for a cache with a size limit: ours has one.
    assert any(name.endswith("-atime") for name in entries), entries
    second = train(tmp_path / "run2", tmp_path / "cache")
    assert cached(tmp_path / "cache") == entries  # loaded, nothing compiled anew
    assert len(first) == 1 and second == first  # the same logged loss


def test_cache_off(tmp_path):
    train(tmp_path / "run", tmp_path / "cache", SCORE_SDE_COMPILATION_CACHE="0")
    assert cached(tmp_path / "cache") == []


def test_cache_size_is_bounded(tmp_path):
    # The tiny run's train step takes about 117 kB: a 50 kB cache does not keep it.
    train(tmp_path / "run", tmp_path / "cache", JAX_COMPILATION_CACHE_MAX_SIZE="50000")
    entries = cached(tmp_path / "cache")
    assert not any(name.endswith("-cache") for name in entries), entries
    folder = tmp_path / "cache" / "score_sde_jax" / "jax"
    assert sum(f.stat().st_size for f in folder.iterdir()) <= 50000
