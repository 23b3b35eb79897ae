"""The package as a user installs it: a wheel of the checkout, installed (not editable) into a
fresh venv and used from a directory outside the clone.

* the wheel holds every module of ``score_sde_jax/`` and of ``configs/`` (as
  ``score_sde_jax.configs``) and the package data (``score_sde_jax/pretrained/``, when present);
* the installed package is the wheel's, not the clone's or the editable install's;
* every console command of setup.cfg, and ``python -m score_sde_jax.train``, answer ``--help``;
* every config, the paper's 39 among them, loads by name from the installed package.

Offline and fast: the wheel is built without build isolation from a copy of what setup.cfg
builds from, and the venv gets no dependency from the network: a ``.pth`` file puts this
interpreter's site-packages (jax, numpy, ...) on its path. Directories listed in a ``.pth`` are
added to ``sys.path`` without processing their own ``.pth`` files, so the editable install of
score_sde_jax that this interpreter may have (a finder started from a ``.pth``) stays inactive.
A new check of the installed package is a test taking the `installed` fixture, whose `run`
starts a command of the venv outside the clone.
"""

import configparser
import dataclasses
import json
import os
import pathlib
import shutil
import site
import subprocess
import sys
import zipfile

import pytest
from conftest import REPO_ROOT

# What setup.cfg builds the wheel from (its packages, README.md as long description, licences).
BUILD_INPUTS = ("setup.cfg", "pyproject.toml", "README.md", "LICENSE", "NOTICE")
PACKAGE_FOLDERS = {"score_sde_jax": "score_sde_jax", "configs": "score_sde_jax/configs"}
PACKAGE_DATA = "score_sde_jax/pretrained"  # setup.cfg [options.package_data]


def _console_scripts() -> list[str]:
    """The console commands setup.cfg declares."""
    parser = configparser.ConfigParser()
    parser.read(REPO_ROOT / "setup.cfg")
    declared = parser.get("options.entry_points", "console_scripts", fallback="")
    return sorted(line.split("=")[0].strip() for line in declared.splitlines() if line.strip())


def _checked(args, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True, timeout=600, **kwargs)
    assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
    return result


@dataclasses.dataclass(frozen=True)
class Installed:
    """A venv holding the wheel of the checkout, and a working directory outside the clone."""

    wheel: pathlib.Path
    venv: pathlib.Path
    cwd: pathlib.Path

    def run(self, command: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        """Runs ``command`` of the venv's ``bin/`` (``python`` or a console script) in `cwd`, with
        no PYTHONPATH, so that the clone cannot supply the package."""
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        return subprocess.run(
            [str(self.venv / "bin" / command), *args],
            cwd=self.cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def python(self, code: str):
        """The JSON that ``code`` prints, run by the venv's Python."""
        result = self.run("python", "-c", code)
        assert result.returncode == 0, result.stdout + result.stderr
        return json.loads(result.stdout.strip().splitlines()[-1])


def _build_wheel(tmp: pathlib.Path) -> pathlib.Path:
    """A wheel of a copy of the checkout (a build in the clone would leave build/ there)."""
    source = tmp / "source"
    source.mkdir()
    for name in BUILD_INPUTS:
        shutil.copy2(REPO_ROOT / name, source / name)
    for folder in PACKAGE_FOLDERS:
        shutil.copytree(
            REPO_ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__")
        )
    pip = [sys.executable, "-m", "pip"]
    _checked([*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
              "-w", str(tmp / "wheel"), str(source)])  # fmt: skip
    (wheel,) = (tmp / "wheel").glob("score_sde_jax-*.whl")
    return wheel


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    tmp = tmp_path_factory.mktemp("install")
    wheel = _build_wheel(tmp)
    venv = tmp / "venv"
    _checked([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    _checked([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
              "-q", "--no-deps", "--no-index", str(wheel)])  # fmt: skip
    purelib = _checked(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import sysconfig; print(sysconfig.get_path('purelib'))",
        ]
    ).stdout.strip()
    # After the install, so that pip does not see this interpreter's score_sde_jax as installed.
    pathlib.Path(purelib, "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    cwd = tmp / "elsewhere"
    cwd.mkdir()
    return Installed(wheel=wheel, venv=venv, cwd=cwd)


def test_wheel_holds_every_module_and_the_package_data(installed):
    expected = {
        f"{package}/{path.relative_to(REPO_ROOT / folder).as_posix()}"
        for folder, package in PACKAGE_FOLDERS.items()
        for path in (REPO_ROOT / folder).rglob("*.py")
    }
    data = REPO_ROOT / PACKAGE_DATA
    if data.is_dir():
        expected |= {p.relative_to(REPO_ROOT).as_posix() for p in data.rglob("*") if p.is_file()}
    with zipfile.ZipFile(installed.wheel) as wheel:
        missing = expected - set(wheel.namelist())
    assert not missing, f"setup.cfg leaves out of the wheel: {sorted(missing)}"


def test_installed_package_is_the_wheels(installed):
    found = installed.python(
        "import json, sys, importlib.resources, score_sde_jax, score_sde_jax.configs as c\n"
        "data = importlib.resources.files('score_sde_jax') / 'pretrained'\n"
        "print(json.dumps({'package': score_sde_jax.__file__, 'configs': c.__file__,\n"
        "    'finders': [getattr(f, '__name__', type(f).__name__) for f in sys.meta_path],\n"
        "    'data': sorted(p.name for p in data.iterdir()) if data.is_dir() else []}))"
    )
    venv = str(installed.venv)
    assert found["package"].startswith(venv) and found["configs"].startswith(venv)
    # Neither the editable install's finder nor the clone's (score_sde_jax/__init__.py).
    assert not [f for f in found["finders"] if "Editable" in f or "Checkout" in f], found
    data = REPO_ROOT / PACKAGE_DATA
    shipped = sorted(p.name for p in data.iterdir() if p.is_file()) if data.is_dir() else []
    assert found["data"] == shipped


@pytest.mark.parametrize(
    "command",
    [("python", "-m", "score_sde_jax.train"), *((s,) for s in _console_scripts())],
    ids=" ".join,
)
def test_command_answers_help(installed, command):
    result = installed.run(*command, "--help")
    output = result.stdout + result.stderr
    # absl exits with 1 after --help; what matters is the usage of the installed module.
    assert result.returncode in (0, 1) and "Traceback" not in output, output
    assert str(installed.venv) in result.stdout, output


def test_every_config_loads_by_name_from_the_installed_package(installed):
    found = installed.python(
        "import importlib, importlib.resources, json\n"
        "root = importlib.resources.files('score_sde_jax.configs')\n"
        "def names(node, prefix=''):\n"
        "    for child in node.iterdir():\n"
        "        if child.is_dir() and (child / '__init__.py').is_file():\n"
        "            yield from names(child, prefix + child.name + '.')\n"
        "        elif child.name.endswith('.py') and child.name != '__init__.py' \\\n"
        "                and not child.name.startswith('default_'):\n"
        "            yield prefix + child.name[:-3]\n"
        "configs = {}\n"
        "for name in sorted(names(root)):\n"
        "    module = importlib.import_module('score_sde_jax.configs.' + name)\n"
        "    config = module.get_config()\n"
        "    configs[name] = [module.__file__, config.data.dataset, config.training.batch_size]\n"
        "print(json.dumps(configs))"
    )
    checkout = REPO_ROOT / "configs"
    expected = {
        ".".join(p.relative_to(checkout).with_suffix("").parts)
        for p in checkout.rglob("*.py")
        if p.name != "__init__.py" and not p.name.startswith("default_")
    }
    assert set(found) == expected
    paper = [name for name in found if name.split(".")[0] in ("ve", "vp", "subvp")]
    assert len(paper) == 39
    for name, (file, dataset, batch_size) in found.items():
        assert file.startswith(str(installed.venv)), (name, file)
        assert dataset and batch_size > 0, name
