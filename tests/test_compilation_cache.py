"""The commands keep compiled programs on disk (`score_sde_jax.commands`, docs/performance.md).

A second run loads the train step instead of compiling it and logs the same loss; the
folder follows ``XDG_CACHE_HOME``; ``SCORE_SDE_COMPILATION_CACHE=0`` turns the cache off.
"""

import os
import re
import subprocess
import sys

from conftest import REPO_ROOT

# Two steps of a digits MLP at 8x8: the train step compiles in over a second (JAX caches those).
TINY = [
    "--config=digits",
    "--config.training.n_iters=2",
    "--config.training.n_jitted_steps=1",
    "--config.training.batch_size=8",
    "--config.training.snapshot_sampling=False",
    "--config.eval.batch_size=8",
    "--config.data.image_size=8",
    "--config.model.name=mlp",
    "--config.model.nf=32",
    "--config.model.num_layers=1",
    "--config.model.num_scales=8",
]


def train(workdir, cache_home, **env):
    environ = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    environ.update(JAX_PLATFORMS="cpu", XDG_CACHE_HOME=str(cache_home), **env)
    result = subprocess.run(
        [sys.executable, "-m", "score_sde_jax.train", f"--workdir={workdir}", *TINY],
        cwd=REPO_ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return re.findall(r"step 2/2 .*\| loss (\S+)", result.stderr)


def cached(cache_home):
    folder = cache_home / "score_sde_jax" / "jax"
    return sorted(os.listdir(folder)) if folder.exists() else []


def test_second_run_loads_the_compiled_train_step(tmp_path):
    first = train(tmp_path / "run1", tmp_path / "cache")
    entries = cached(tmp_path / "cache")
    assert any(name.startswith("jit_train_steps-") for name in entries), entries
    second = train(tmp_path / "run2", tmp_path / "cache")
    assert cached(tmp_path / "cache") == entries  # loaded, nothing compiled anew
    assert len(first) == 1 and second == first  # the same logged loss


def test_cache_off(tmp_path):
    train(tmp_path / "run", tmp_path / "cache", SCORE_SDE_COMPILATION_CACHE="0")
    assert cached(tmp_path / "cache") == []
