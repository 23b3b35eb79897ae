"""Test session setup: four simulated CPU devices, float32 defaults, and the shared fixtures path."""

import os
import pathlib

import jax

jax.config.update("jax_num_cpu_devices", 4)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def shared_dir() -> pathlib.Path:
    """The read-only reference folder `../shared` beside the repository (override: SCORE_SDE_SHARED)."""
    return pathlib.Path(os.environ.get("SCORE_SDE_SHARED", REPO_ROOT.parent / "shared"))
