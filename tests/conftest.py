"""Test session setup: four simulated CPU devices and the fixtures folder."""

import pathlib

import jax

jax.config.update("jax_num_cpu_devices", 4)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# Recorded outputs and files the tests compare against; see fixtures/README.md.
FIXTURES = REPO_ROOT / "tests" / "fixtures"
