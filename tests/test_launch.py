"""The launch scripts: shellcheck-clean, usage on -h, fail fast on missing arguments; the
commands `tpu_pod.sh` has gcloud run, against a stub ``gcloud`` on PATH."""

import json
import os
import pathlib
import re
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


# ----------------------------------------------------------------------------------------------
# tpu_pod.sh against a stub gcloud that records what it is asked to run.
# ----------------------------------------------------------------------------------------------

RECORDER = """#!{python}
import json, os, sys
with open(os.environ["CALLS"], "a") as f:
    f.write(json.dumps([os.path.basename(sys.argv[0]), *sys.argv[1:]]) + "\\n")
"""


def _recorder(path: pathlib.Path) -> None:
    """An executable at ``path`` that appends its name and arguments to ``$CALLS``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(RECORDER.format(python=sys.executable))
    path.chmod(0o755)


def _calls(path: pathlib.Path) -> list[list[str]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def stub_env(tmp_path):
    """PATH with a recording ``gcloud`` (and ``python3``, for running the workers' commands)."""
    _recorder(tmp_path / "bin" / "gcloud")
    _recorder(tmp_path / "bin" / "python3")
    env = dict(os.environ, PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    env["CALLS"] = str(tmp_path / "calls.jsonl")
    return env, tmp_path / "calls.jsonl"


def _option(call: list[str], name: str) -> str:
    (value,) = [a.split("=", 1)[1] for a in call if a.startswith(f"--{name}=")]
    return value


def test_tpu_pod_install_gives_every_worker_the_python_the_package_needs(stub_env, tmp_path):
    env, calls = stub_env
    tpu_pod = ["bash", str(LAUNCH / "tpu_pod.sh")]
    result = _run([*tpu_pod, "install", "-n", "pod", "-z", "us-central2-b", "-p", "proj"], env=env)
    assert result.returncode == 0, result.stderr
    copy, install = _calls(calls)
    tpu_vm = ["gcloud", "compute", "tpus", "tpu-vm"]
    location = ["--zone=us-central2-b", "--project=proj", "--worker=all"]
    assert copy == [*tpu_vm, "scp", "--recurse", str(REPO_ROOT), "pod:score_sde_jax_src", *location]
    assert install[:6] == [*tpu_vm, "ssh", "pod"] and install[6:9] == location

    # What each worker runs, with a recording python3 and a home folder of our own.
    home = tmp_path / "home"
    _recorder(home / "score_sde_venv" / "bin" / "python")  # what uv creates on a worker
    calls.unlink()
    worker = _run(["bash", "-c", _option(install, "command")], env=dict(env, HOME=str(home)))
    assert worker.returncode == 0, worker.stderr
    venv_python = str(home / "score_sde_venv" / "bin" / "python")
    setup = (REPO_ROOT / "setup.cfg").read_text()
    (required,) = re.findall(r"python_requires = >=(\S+)", setup)
    pip_uv, make_venv, install_package, check = _calls(calls)
    assert pip_uv[:4] == ["python3", "-m", "pip", "install"] and pip_uv[-1] == "uv"
    assert make_venv[:4] == ["python3", "-m", "uv", "venv"]
    assert make_venv[make_venv.index("--python") + 1] == required
    assert make_venv[-1] == str(home / "score_sde_venv")
    assert install_package[:4] == ["python3", "-m", "uv", "pip"]
    assert install_package[install_package.index("--python") + 1] == venv_python
    assert install_package[-2:] == ["-e", f"{home}/score_sde_jax_src[tpu]"]
    assert check[0] == "python" and "import sys, jax, score_sde_jax" in check[-1]
    assert "[tpu]" in re.search(r"^tpu =\n\s+(.*)$", setup, re.M).group(1)  # the extra exists


def test_tpu_pod_train_runs_the_venvs_python_on_every_worker(stub_env):
    env, calls = stub_env
    flags = ["--config=configs/ve/cifar10_ncsnpp_continuous.py", "--workdir=gs://bucket/run 1"]
    result = _run(
        ["bash", str(LAUNCH / "tpu_pod.sh"), "train", "-n", "pod", "-z", "z", "--", *flags],
        env=env,
    )
    assert result.returncode == 0, result.stderr
    (train,) = _calls(calls)
    assert "--worker=all" in train
    command = _option(train, "command")
    assert "nohup $HOME/score_sde_venv/bin/python -m score_sde_jax.train" in command
    assert r"--workdir=gs://bucket/run\ 1" in command
