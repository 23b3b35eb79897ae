"""The launch scripts: shellcheck-clean, usage on -h, fail fast on missing arguments."""

import os
import pathlib
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

LAUNCH = REPO_ROOT / "launch"
SCRIPTS = sorted(p for p in LAUNCH.iterdir() if p.suffix in (".sh", ".sbatch"))


def _run(args, **kwargs):
    return subprocess.run(args, capture_output=True, text=True, timeout=600, **kwargs)


def test_every_script_passes_shellcheck():
    assert len(SCRIPTS) == 3
    shellcheck = pathlib.Path(sys.executable).with_name("shellcheck")
    result = _run([str(shellcheck), *map(str, SCRIPTS)])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_help_prints_usage(script):
    result = _run(["bash", str(script), "-h"])
    assert result.returncode == 0
    assert "score_sde_jax.train" in result.stdout


@pytest.mark.parametrize(
    "args,message",
    [
        (["local_multiprocess.sh"], "-n NUM_PROCESSES and -w WORKDIR are required"),
        (["tpu_pod.sh", "create"], "-n TPU_NAME and -z ZONE are required"),
        (["slurm_train.sbatch"], "--workdir=DIR"),
        (["slurm_train.sbatch", "--config=x.py"], "--workdir=DIR is required"),
    ],
)
def test_missing_arguments_fail_fast(args, message):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    result = _run(["bash", str(LAUNCH / args[0]), *args[1:]], env=env)
    assert result.returncode == 2
    assert message in result.stderr
