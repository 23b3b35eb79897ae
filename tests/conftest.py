"""Test session setup: four simulated CPU devices, the fixtures folder, a command runner."""

import atexit
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import jax

jax.config.update("jax_num_cpu_devices", 4)

# The commands that tests run in subprocesses keep their compiled programs in one folder of this
# session (score_sde_jax.commands turns on JAX's persistent compilation cache), not in ~/.cache.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="score_sde_jax_tests_")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], True)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# Recorded outputs and files the tests compare against; see fixtures/README.md.
FIXTURES = REPO_ROOT / "tests" / "fixtures"

# A two-step digits run at 8x8 with an MLP: seconds to train, compile and sample.
TINY = [
    "--config=digits",
    "--config.training.n_iters=2",
    "--config.training.n_jitted_steps=1",
    "--config.training.batch_size=8",
    "--config.training.log_freq=1",
    "--config.training.snapshot_freq=1",
    "--config.training.snapshot_freq_for_preemption=1",
    "--config.training.eval_freq=100",
    "--config.training.snapshot_sampling=False",
    "--config.eval.batch_size=8",
    "--config.data.image_size=8",
    "--config.model.name=mlp",
    "--config.model.nf=32",
    "--config.model.num_layers=1",
    "--config.model.num_scales=8",
]


def cli(command, *args, devices=1, timeout=600, env=None):
    """Runs ``python -m score_sde_jax.<command> *args`` on the CPU; the CompletedProcess.

    ``env``: environment variables to set on top of this process's.
    """
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        JAX_NUM_CPU_DEVICES=str(devices),
        SCORE_SDE_PROGRESS="0",
        **(env or {}),
    )
    return subprocess.run(
        [sys.executable, "-m", f"score_sde_jax.{command}", *map(str, args)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
