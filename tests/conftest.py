"""Test session setup: four simulated CPU devices and the fixtures folder."""

import atexit
import os
import pathlib
import shutil
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
