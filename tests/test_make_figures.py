"""`python -m score_sde_jax.tools.make_figures`, the command behind the README's pictures."""

import os
import subprocess
import sys

import numpy as np
import PIL.Image
from conftest import REPO_ROOT

from score_sde_jax.tools import make_figures

# name: (rows, columns, channels) of digits in the picture.
FIGURES = {
    "digits_samples.png": (4, 16, 1),
    "color_digits_samples.png": (4, 16, 3),
    "inpainting.png": (3, 10, 1),
    "colorization.png": (3, 10, 3),
}


def test_make_figures_writes_the_readme_pictures(tmp_path):
    command = [sys.executable, "-m", "score_sde_jax.tools.make_figures", f"--out={tmp_path}"]
    # 25 noise levels (the VP discretisation of reverse diffusion needs N > β_max = 20): the
    # pictures' layout, not their quality (the notebooks' tests judge that).
    result = subprocess.run(
        [*command, "--num_steps=25"],
        cwd=REPO_ROOT,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    scale = make_figures.SCALE  # 8x8 digits 2 pixels apart, then enlarged
    for name, (rows, columns, channels) in FIGURES.items():
        image = np.asarray(PIL.Image.open(tmp_path / name))
        assert image.shape[:2] == ((rows * 10 + 2) * scale, (columns * 10 + 2) * scale), name
        assert (image.ndim == 3 and image.shape[2] == 3) == (channels == 3), name
        assert image.std() > 10, name  # not blank
    # The README shows the committed pictures and names the command.
    readme = (REPO_ROOT / "README.md").read_text()
    assert "python -m score_sde_jax.tools.make_figures --out docs/images" in readme
    for name in FIGURES:
        assert f"docs/images/{name}" in readme and (REPO_ROOT / "docs" / "images" / name).is_file()
