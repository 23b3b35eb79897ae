"""Subprocess tests of the training system: two jax.distributed processes (launched by
`launch/local_multiprocess.sh`), SIGTERM and SIGKILL.

Every run trains the same tiny 2-D toy problem on 4 CPU devices in total; the reference is an
uninterrupted single-process run in this pytest process (4 simulated devices, conftest).
"""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from conftest import REPO_ROOT

from score_sde_jax import checkpoints, models, training
from score_sde_jax.configs import toy2d

TOY_CONFIG = str(REPO_ROOT / "configs" / "toy2d.py")
# Overrides that shrink the toy config (applied in-process and as CLI flags alike).
OVERRIDES = {
    "training.batch_size": 16,
    "training.n_iters": 40,
    "training.n_jitted_steps": 5,
    "training.log_freq": 10,
    "training.eval_freq": 10,
    "training.snapshot_freq": 100,
    "training.snapshot_freq_for_preemption": 10,
    "training.snapshot_sampling": False,
    "eval.batch_size": 16,
    "model.nf": 16,
    "model.num_layers": 1,
    "data.num_train": 256,
    "data.num_eval": 64,
}

# A run whose data arrive slowly (0.15 s a batch), so that signals land in the middle of it.
SLOW_DRIVER = """
import json, sys, time
from score_sde_jax import training
from score_sde_jax.data import pipeline
from score_sde_jax.configs import toy2d

original = pipeline.BatchLoader.__call__

def slow(self, step):
    time.sleep(0.15)
    return original(self, step)

pipeline.BatchLoader.__call__ = slow
config = toy2d.get_config()
for key, value in json.loads(sys.argv[2]).items():
    section, name = key.split(".")
    config[section][name] = value
training.train_and_evaluate(config, sys.argv[1])
"""


def toy_config():
    config = toy2d.get_config()
    for key, value in OVERRIDES.items():
        section, name = key.split(".")
        config[section][name] = value
    return config


def _env(num_devices):
    env = dict(os.environ)
    env["JAX_NUM_CPU_DEVICES"] = str(num_devices)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
    return env


def _restore(workdir, config):
    template = jax.eval_shape(
        lambda: training.create_train_state(
            config,
            models.get_model(config),
            jax.random.PRNGKey(0),
            training.create_optimizer(config),
        )
    )
    with checkpoints.CheckpointManager(os.path.join(workdir, "checkpoints")) as manager:
        state, _, step = manager.restore_latest(template, jax.random.PRNGKey(0))
    return state, step


def _params(state):
    return jax.tree.map(np.asarray, jax.device_get((state.params, state.ema_params)))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Params and EMA of the uninterrupted single-process run on 4 devices."""
    workdir = str(tmp_path_factory.mktemp("reference"))
    return _params(training.train_and_evaluate(toy_config(), workdir))


def test_two_processes_train_the_same_run_as_one(reference, tmp_path):
    """Two jax.distributed processes with 2 CPU devices each, started by the local launcher."""
    flags = [f"--config={TOY_CONFIG}", *(f"--config.{k}={v}" for k, v in OVERRIDES.items())]
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "launch" / "local_multiprocess.sh")]
        + ["-n", "2", "-d", "2", "-w", str(tmp_path), "--", *flags],
        env={**_env(2), "PYTHON": sys.executable},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    logs = [(tmp_path / f"process_{i}.log").read_text() for i in range(2)]
    assert result.returncode == 0, result.stderr + logs[0][-3000:] + logs[1][-3000:]
    assert "Process 1/2, 2 local / 4 global devices" in logs[1]
    assert os.path.exists(tmp_path / "stdout.txt") and os.path.exists(tmp_path / "stdout_1.txt")
    assert "step 40/40 (100.0%)" in (tmp_path / "stdout.txt").read_text()
    state, step = _restore(str(tmp_path), toy_config())
    assert step == 40
    for a, b in zip(jax.tree.leaves(_params(state)), jax.tree.leaves(reference), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def _run_and_signal(workdir, sig):
    """Starts a slow 4-device run, sends ``sig`` once checkpoint 10 exists; returns (rc, output)."""
    slow_overrides = {**OVERRIDES, "data.num_threads": 1}  # one reader: 0.15 s per batch
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_DRIVER, str(workdir), json.dumps(slow_overrides)],
        env=_env(4),
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + 600
    while not os.path.isdir(workdir / "checkpoints" / "10") and proc.poll() is None:
        assert time.time() < deadline, "the run never wrote checkpoint 10"
        time.sleep(0.1)
    proc.send_signal(sig)
    output = proc.communicate(timeout=600)[0]
    return proc.returncode, output


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_killed_run_resumes_bitwise_exactly(reference, tmp_path, sig):
    returncode, output = _run_and_signal(tmp_path, sig)
    with checkpoints.CheckpointManager(tmp_path / "checkpoints") as manager:
        steps = manager.all_steps()
    if sig == signal.SIGTERM:
        # A clean exit with a checkpoint of the step reached, which need not be a multiple of 10.
        assert returncode == 0, output[-3000:]
        assert "Preempted: saved checkpoint" in output
    else:
        assert returncode == -signal.SIGKILL
    assert 10 <= max(steps) < 40, steps
    state = training.train_and_evaluate(toy_config(), str(tmp_path))
    assert int(state.step) == 40
    for a, b in zip(jax.tree.leaves(_params(state)), jax.tree.leaves(reference), strict=True):
        np.testing.assert_array_equal(a, b)
