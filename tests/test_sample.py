"""The sampling tool (issue 6, item 1): `sampling.generation` and ``python -m score_sde_jax.sample``.

A tiny MLP on 8x8 digits is trained for two steps by `training.train_and_evaluate`; its
checkpoint is sampled on 4 and on 1 simulated devices. The CLI runs on the released-format
checkpoint of tests/fixtures/official_models.
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import FIXTURES, REPO_ROOT

from score_sde_jax import checkpoints, distributed, training
from score_sde_jax.configs import digits
from score_sde_jax.sampling import generation, registry

OFFICIAL = FIXTURES / "official_models"


def tiny_config():
    """The digits config with an MLP at 8x8, two training steps and 8 noise levels."""
    config = digits.get_config()
    t = config.training
    t.n_iters, t.n_jitted_steps, t.batch_size = 2, 1, 8
    t.log_freq = t.snapshot_freq = t.snapshot_freq_for_preemption = 1
    t.eval_freq, t.snapshot_sampling = 100, False
    config.eval.batch_size = 8
    config.data.image_size = 8
    config.model.name, config.model.nf, config.model.num_layers = "mlp", 32, 1
    config.model.num_scales = 8
    return config


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    training.train_and_evaluate(tiny_config(), str(workdir))
    return workdir


def _load(path):
    with np.load(path) as z:
        return z["images"], z["nfe"], json.loads(str(z["metadata"]))


def test_same_seed_gives_same_images_on_4_and_1_devices(workdir, tmp_path):
    four, one = tmp_path / "four.npz", tmp_path / "one.npz"
    # The saved run config is used (no config given); batches of 8 over 4 devices vs 4 on 1.
    generation.sample_to_file(workdir=workdir, num_samples=10, batch_size=8, seed=7, output=four)
    generation.sample_to_file(
        workdir=workdir,
        num_samples=10,
        batch_size=4,
        seed=7,
        output=one,
        mesh=distributed.create_mesh(jax.devices()[:1]),
    )
    images4, nfe4, meta = _load(four)
    images1, nfe1, _ = _load(one)
    assert images4.dtype == np.uint8 and images4.shape == (10, 8, 8, 1)
    np.testing.assert_array_equal(images4, images1)
    # Euler–Maruyama predictor, no corrector, N = 8: one score evaluation per level.
    np.testing.assert_array_equal(nfe4, np.full(10, 8))
    np.testing.assert_array_equal(nfe1, nfe4)
    assert meta["step"] == 2 and meta["checkpoint_source"] == "train" and meta["seed"] == 7
    assert os.path.getsize(four.with_suffix(".png")) > 0
    other = tmp_path / "other.npz"
    generation.sample_to_file(workdir=workdir, num_samples=10, batch_size=8, seed=8, output=other)
    assert np.mean(_load(other)[0] != images4) > 0.3


@pytest.mark.parametrize("name", ["pc", "ode"])
def test_model_space_samples_do_not_depend_on_device_count(workdir, name):
    # The barely trained network's samples mostly saturate as uint8: compare the floats too.
    config = checkpoints.RunFolder(workdir).saved_config()
    spec = registry.SamplerSpec(name=name)
    outputs = []
    for devices, batch_size in ((jax.devices(), 8), (jax.devices()[:1], 4)):
        mesh = distributed.create_mesh(devices)
        params = checkpoints.load_checkpoint_params(config, workdir=workdir, mesh=mesh).params
        generator = generation.Generator(config, spec, batch_size, mesh, raw=True)
        outputs.append(generation.generate(generator, params, seed=3, num_samples=8, start=5))
    (x4, nfe4), (x1, nfe1) = outputs
    assert x4.dtype == np.float32 and x4.shape == (8, 8, 8, 1)
    assert np.std(x4) > 0.1
    np.testing.assert_array_equal(x4, x1)
    np.testing.assert_array_equal(nfe4, nfe1)


def test_checkpoint_and_sampler_errors(workdir):
    config = checkpoints.RunFolder(workdir).saved_config()
    with pytest.raises(FileNotFoundError, match=r"available steps: \[1, 2\]"):
        checkpoints.load_checkpoint_params(config, workdir=workdir, checkpoint=5)
    with pytest.raises(ValueError, match="pass --config"):
        checkpoints.resolve_config(
            None, workdir, OFFICIAL / "ncsnpp_ve_small_ckpt" / "checkpoint_1"
        )
    with pytest.raises(ValueError, match="valid names"):
        generation.get_sample_fn(config, registry.SamplerSpec(name="ddim"), 4)
    with pytest.raises(ValueError, match="needs --num_steps"):
        generation.get_sample_fn(config, registry.SamplerSpec(name="heun"), 4)
    with pytest.raises(ValueError, match="multiple of the number of devices"):
        generation.Generator(config, registry.SamplerSpec(name="pc"), 6)
    config.training.sde = "vesde"
    with pytest.raises(ValueError, match="VP or sub-VP"):
        generation.get_sample_fn(config, registry.SamplerSpec(name="dpm2", num_steps=2), 4)


def test_cli_samples_the_released_original_checkpoint(tmp_path):
    with np.load(OFFICIAL / "ncsnpp_ve_small.npz") as z:
        config = json.loads(str(z["config_json"]))["config"]
    config_file = tmp_path / "ncsnpp_ve_small.py"
    config_file.write_text(
        "from score_sde_jax import checkpoints\n\n\n"
        f"def get_config():\n    return checkpoints.config_from_json({json.dumps(config)!r})\n"
    )
    output = tmp_path / "samples.npz"
    command = [
        sys.executable,
        "-m",
        "score_sde_jax.sample",
        f"--config={config_file}",
        "--config.sampling.corrector=none",  # one network evaluation per level: quick to compile
        f"--checkpoint={OFFICIAL / 'ncsnpp_ve_small_ckpt' / 'checkpoint_1'}",
        "--sampler=pc",
        "--num_steps=2",
        "--num_samples=3",
        f"--output={output}",
    ]
    env = dict(os.environ, JAX_NUM_CPU_DEVICES="1", JAX_PLATFORMS="cpu")
    result = subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    images, nfe, meta = _load(output)
    assert images.dtype == np.uint8 and images.shape == (3, 16, 16, 3)
    np.testing.assert_array_equal(nfe, [2, 2, 2])
    assert meta["checkpoint_source"] == "original" and meta["step"] == 50005
    assert "NFE per sample 2" in result.stderr
    assert output.with_suffix(".png").is_file()
