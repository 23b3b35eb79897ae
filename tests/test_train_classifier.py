"""Tests of the noise-conditional classifier's training (`score_sde_jax.training.classifier`)."""

import functools
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import PIL.Image
import pytest
from conftest import REPO_ROOT
from scipy.special import log_softmax
from tensorboard.backend.event_processing import event_accumulator

from score_sde_jax import distributed, sde_lib, training
from score_sde_jax.configs import classifier_digits, digits
from score_sde_jax.configs.classifier import cifar10_wideresnet
from score_sde_jax.models import wideresnet
from score_sde_jax.sampling import controllable


def read_scalars(workdir, tag):
    """{step: value} of a scalar written by the clu TensorBoard writer."""
    import tensorflow as tf  # noqa: PLC0415 (only needed to decode event protos)

    acc = event_accumulator.EventAccumulator(
        os.path.join(workdir, "tensorboard"), size_guidance={"tensors": 0}
    )
    acc.Reload()
    return {e.step: float(tf.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)}


@pytest.fixture
def fast_compile():
    """Skips most XLA optimisations for runs of one or two steps."""
    previous = jax.config.values["jax_disable_most_optimizations"]
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)


# ----------------------------------------------------------------------------------------------
# Loss.
# ----------------------------------------------------------------------------------------------


def test_perturbation_is_log_uniform_ve_noise():
    y = jnp.full((4096, 2, 2, 1), 0.25)
    x, sigmas = jax.jit(training.classifier.perturb, static_argnums=(2, 3))(
        jax.random.PRNGKey(0), y, 0.01, 100.0
    )
    u = (np.log(np.asarray(sigmas)) - np.log(0.01)) / (np.log(100.0) - np.log(0.01))
    assert u.min() >= 0.0 and u.max() <= 1.0
    np.testing.assert_allclose(np.quantile(u, [0.1, 0.5, 0.9]), [0.1, 0.5, 0.9], atol=0.03)
    z = (np.asarray(x) - 0.25) / np.asarray(sigmas)[:, None, None, None]
    np.testing.assert_allclose([z.mean(), z.std()], [0.0, 1.0], atol=0.02)


def test_loss_is_the_cross_entropy_of_the_network_on_the_perturbed_batch(fast_compile):
    classifier = wideresnet.create_classifier(1, 1, 3)
    images = jax.random.uniform(jax.random.PRNGKey(1), (4, 8, 8, 3), minval=-1.0, maxval=1.0)
    labels = jnp.array([0, 2, 1, 2])
    init = functools.partial(training.classifier.init_params, classifier, image_shape=(8, 8, 3))
    key = jax.random.PRNGKey(2)
    params = training.compile_without_optimizations(init, key)(key)
    rng = jax.random.PRNGKey(3)
    loss_fn = training.classifier.get_loss_fn(
        wideresnet.get_logit_fn(classifier), 0.01, 50.0, inverse_scaler=lambda x: (x + 1) / 2
    )
    loss, accuracy = jax.jit(loss_fn)(params, rng, images, labels)

    # By hand: σ log-uniform from the first key, z from the second, y = (images + 1) / 2, the
    # CIFAR-10 channel normalisation, then the network at σ.
    sigma_rng, z_rng = jax.random.split(rng)
    u = np.asarray(jax.random.uniform(sigma_rng, (4,)), np.float64)
    sigmas = np.exp(np.log(0.01) + u * (np.log(50.0) - np.log(0.01)))
    z = np.asarray(jax.random.normal(z_rng, images.shape), np.float64)
    x = (np.asarray(images, np.float64) + 1) / 2 + sigmas[:, None, None, None] * z
    x = (x - np.array(wideresnet.CIFAR10_MEAN)) / np.array(wideresnet.CIFAR10_STD)
    logits = jax.jit(classifier.apply)(
        {"params": params}, jnp.asarray(x, jnp.float32), jnp.asarray(sigmas, jnp.float32)
    )
    log_p = log_softmax(np.asarray(logits, np.float64), axis=-1)
    expected = -np.mean(log_p[np.arange(4), np.asarray(labels)])
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert float(accuracy) == np.mean(np.argmax(log_p, axis=-1) == np.asarray(labels))
    # The untrained network is near uniform over 3 classes.
    assert 0.5 * np.log(3) < expected < 2 * np.log(3)


def test_logit_fn_rejects_statistics_of_another_channel_count():
    classifier = wideresnet.create_classifier(1, 1, 3)
    x = jnp.zeros((2, 8, 8, 1))
    params = jax.eval_shape(classifier.init, jax.random.PRNGKey(0), x, jnp.ones(2))["params"]
    with pytest.raises(ValueError, match="1 channels but the normalisation statistics have 3"):
        jax.eval_shape(wideresnet.get_logit_fn(classifier), params, x, jnp.ones(2))


# ----------------------------------------------------------------------------------------------
# The digits run through the command line (in the background) and a separable synthetic set.
# ----------------------------------------------------------------------------------------------


SHRINK = {
    "training.n_iters": 2,
    "training.batch_size": 16,
    "training.log_freq": 1,
    "training.eval_freq": 2,
    "training.snapshot_freq": 2,
    "training.snapshot_freq_for_preemption": 1,
    "eval.batch_size": 60,
    "classifier.channel_multiplier": 1,
}


def shrunk_digits_config(n_iters):
    config = classifier_digits.get_config()
    for key, value in SHRINK.items():
        section, name = key.split(".")
        config[section][name] = value
    config.training.n_iters = n_iters
    return config


def start_cli(workdir, n_iters, cache_dir):
    """Starts ``python -m score_sde_jax.train_classifier`` on the shrunk digits config (1 device).

    Returns the process; its output goes to ``<workdir>.out``.
    """
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
        "JAX_PLATFORMS": "cpu",
        # Two steps: compile fast, and let the resumed run reuse the first run's executables.
        "JAX_DISABLE_MOST_OPTIMIZATIONS": "1",
        "JAX_COMPILATION_CACHE_DIR": str(cache_dir),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    }
    overrides = {**SHRINK, "training.n_iters": n_iters}
    with open(f"{workdir}.out", "w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "score_sde_jax.train_classifier", f"--workdir={workdir}"]
            + [f"--config.{k}={v}" for k, v in overrides.items()],
            env=env,
            cwd=REPO_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def finish_cli(process, workdir):
    """Waits for a `start_cli` process; returns the run's log file (appended to by each run)."""
    try:
        returncode = process.wait(timeout=600)
    finally:
        process.kill()
    with open(f"{workdir}.out") as out:
        assert returncode == 0, out.read()[-5000:]
    return (workdir / "stdout.txt").read_text()


@pytest.fixture(scope="module")
def first_cli_run(tmp_path_factory):
    """2 steps through the CLI, started in the background so that it overlaps in-process work."""
    workdir = tmp_path_factory.mktemp("digits") / "run"
    cache_dir = tmp_path_factory.mktemp("jax_cache")
    process = start_cli(workdir, 2, cache_dir)
    yield workdir, cache_dir, process
    process.kill()


@pytest.fixture(scope="module")
def digits_run(first_cli_run):
    """The first CLI run, then the same command with 4 steps (it resumes)."""
    workdir, cache_dir, process = first_cli_run
    first_log = finish_cli(process, workdir)
    first_steps = sorted(os.listdir(workdir / "checkpoints"))
    log = finish_cli(start_cli(workdir, 4, cache_dir), workdir)
    return workdir, first_steps, first_log, log


def write_bars(root, n_per_class, seed):
    """8×8 gray images: class 'left' is bright on its left half, class 'right' on its right."""
    rng = np.random.default_rng(seed)
    for name in ("left", "right"):
        os.makedirs(root / name)
        for i in range(n_per_class):
            image = rng.integers(30, 90, (8, 8))
            bright = rng.integers(170, 250, (8, 4))
            if name == "left":
                image[:, :4] = bright
            else:
                image[:, 4:] = bright
            PIL.Image.fromarray(image.astype(np.uint8)).save(root / name / f"{i}.png")


def bars_config(root):
    config = classifier_digits.get_config()
    config.data.dataset = "folder"
    config.data.path, config.data.eval_path = str(root / "train"), str(root / "eval")
    c = config.classifier
    c.num_classes, c.channel_multiplier = 2, 1
    c.sigma_min, c.sigma_max, c.num_eval_bands = 0.01, 1000.0, 5  # bands 0.01-0.1, ..., 100-1000
    c.data_mean, c.data_std, c.ema_rate = (0.5,), (0.3,), 0.9
    t = config.training
    t.batch_size, t.n_iters = 32, 120
    t.log_freq, t.eval_freq, t.snapshot_freq, t.snapshot_freq_for_preemption = 40, 120, 120, 120
    config.eval.batch_size = 128
    config.optim.lr, config.optim.warmup = 2e-3, 10
    return config


@pytest.fixture(scope="module")
def bars_run(tmp_path_factory, first_cli_run):  # the CLI run proceeds meanwhile
    root = tmp_path_factory.mktemp("bars")
    write_bars(root / "train", 256, seed=0)
    write_bars(root / "eval", 256, seed=1)
    config = bars_config(root)
    workdir = str(root / "run")
    # One device: on 4, the first checkpoint alone compiles ~70 orbax slices (sharded evaluation:
    # the digits test).
    mesh = distributed.create_mesh(jax.devices()[:1])
    state = training.train_classifier(config, workdir, mesh=mesh)
    return config, workdir, state


def test_separable_classes_are_learned_at_small_sigma_and_chance_at_large(bars_run):
    config, workdir, state = bars_run
    assert int(state.step) == 120
    loss = read_scalars(workdir, "train_loss")
    assert sorted(loss) == [1, 40, 80, 120]
    assert loss[1] > 0.6 and loss[120] < 0.5  # log 2 = 0.69: chance
    accuracy = {
        band: read_scalars(workdir, f"eval_accuracy/sigma_{band}")[120]
        for band in ("0.01-0.1", "0.1-1", "1-10", "10-100", "100-1000")
    }
    # 512 held-out images; the Bayes accuracy at σ ≥ 100 is below Φ(2.4 / 100) = 0.51.
    assert accuracy["0.01-0.1"] > 0.95 and accuracy["0.1-1"] > 0.95
    assert abs(accuracy["100-1000"] - 0.5) < 0.07
    assert accuracy["0.1-1"] > accuracy["10-100"] > accuracy["100-1000"] - 0.07
    mean = read_scalars(workdir, "eval_accuracy")[120]
    assert mean == pytest.approx(np.mean(list(accuracy.values())), abs=1e-6)


# ----------------------------------------------------------------------------------------------
# The command line on the digits, resume, and guided sampling with the trained parameters.
# ----------------------------------------------------------------------------------------------


def test_cli_writes_checkpoints_and_a_rerun_resumes(digits_run):
    workdir, first_steps, first_log, log = digits_run
    assert first_steps == ["1", "2"]
    assert "step 2/2 | loss" in first_log and "eval at step 2 | loss" in first_log
    assert "sigma_0.005-0.0362" in first_log  # the first of the config's five σ bands
    resumed = log[len(first_log) :]
    assert "Resumed from checkpoint 2" in resumed and "step 1/" not in resumed
    assert "step 3/4 | loss" in resumed and "eval at step 4 | loss" in resumed
    assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "3", "4"]  # 2 = snapshot_freq
    assert sorted(read_scalars(str(workdir), "train_loss")) == [1, 2, 3, 4]
    eval_loss = read_scalars(str(workdir), "eval_loss")
    assert sorted(eval_loss) == [2, 4]
    # Ten classes, a network 4 steps old: the loss is near log 10 = 2.30.
    assert 1.5 < eval_loss[4] < 3.5


def test_evaluation_on_four_devices_matches_the_logged_one_device_evaluation(
    digits_run, fast_compile
):
    workdir = digits_run[0]
    config = shrunk_digits_config(4)
    params, _ = training.classifier.restore_params(config, str(workdir))  # replicated on 4 devices
    evaluate = training.classifier.create_evaluator(config, distributed.create_mesh())
    # The run's evaluation key: fold_in(base key, 2), base key = PRNGKey(config.seed).
    metrics = evaluate(params, jax.random.fold_in(jax.random.PRNGKey(config.seed), 2))
    for tag in ("eval_loss", "eval_accuracy", "eval_loss/sigma_13.8-100"):
        assert metrics[tag] == pytest.approx(read_scalars(str(workdir), tag)[4], rel=1e-4)


def test_trained_parameters_guide_the_conditional_sampler(digits_run, fast_compile):
    workdir = digits_run[0]
    config = shrunk_digits_config(4)
    params, step = training.classifier.restore_params(config, str(workdir))
    assert step == 4
    classifier = training.classifier.create_classifier(config)
    sde = sde_lib.VPSDE(beta_min=0.1, beta_max=20.0, N=3)

    def score_fn(params, x, t, rng=None):  # data N(0, I): every VP marginal is N(0, I)
        return -x

    classifier_fn = training.classifier.get_classifier_fn(config, classifier, sde, centered=True)
    sampler = controllable.get_pc_conditional_sampler(
        sde, score_fn, classifier_fn, (4, 8, 8, 1), "euler_maruyama", "none", snr=0.16
    )
    samples = sampler(jax.random.PRNGKey(0), None, params, jnp.array([0, 3, 7, 9]))
    assert samples.shape == (4, 8, 8, 1) and bool(jnp.all(jnp.isfinite(samples)))


# ----------------------------------------------------------------------------------------------
# Configs and bad input.
# ----------------------------------------------------------------------------------------------


def test_cifar10_config_is_the_released_wrn_28_10():
    config = cifar10_wideresnet.get_config()
    training.classifier.validate_config(config, 8, 1)
    classifier = training.classifier.create_classifier(config)
    params = jax.eval_shape(
        classifier.init, jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), jnp.ones(1)
    )["params"]
    assert sum(p.size for p in jax.tree.leaves(params)) == 38_913_242  # the original WRN-28-10
    assert tuple(config.classifier.data_mean) == wideresnet.CIFAR10_MEAN
    assert tuple(config.classifier.data_std) == wideresnet.CIFAR10_STD


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"data.dataset": "mnist"}, "Unknown dataset 'mnist'"),
        ({"data.dataset": "celeba"}, "has no class labels"),
        ({"data.dataset": "toy2d"}, "has no class labels"),
        ({"classifier.num_classes": 5}, "classifier.num_classes=5 but .* has 10 classes"),
        ({"classifier.sigma_min": 50.0, "classifier.sigma_max": 1.0}, "0 < classifier.sigma_min"),
        ({"classifier.data_mean": (0.5, 0.5, 0.5)}, "must hold 1 values"),
        ({"data.image_size": 10}, "multiple of 4"),
        ({"training.grad_accum_steps": 2}, "grad_accum_steps must be 1"),
        ({"training.batch_size": 30}, "training.batch_size=30 must be divisible"),
    ],
)
def test_bad_configs_raise_clear_errors(changes, message):
    config = classifier_digits.get_config()
    for key, value in changes.items():
        section, name = key.split(".")
        config[section][name] = value
    with pytest.raises(ValueError, match=message):
        training.classifier.validate_config(config, 4, 1)


def test_a_score_model_config_is_refused():
    with pytest.raises(ValueError, match="not a classifier config"):
        training.classifier.validate_config(digits.get_config(), 1, 1)


def test_image_folder_needs_one_subdirectory_per_class(tmp_path):
    config = classifier_digits.get_config()
    config.data.dataset, config.data.path = "folder", str(tmp_path / "train")
    os.makedirs(tmp_path / "train")
    PIL.Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "train" / "a.png")
    with pytest.raises(ValueError, match="one subdirectory of images per class"):
        training.classifier.dataset_num_classes(config)
    write_bars(tmp_path / "eval", 1, seed=0)
    os.remove(tmp_path / "train" / "a.png")
    write_bars(tmp_path / "train", 1, seed=0)
    os.makedirs(tmp_path / "train" / "up")
    PIL.Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "train" / "up" / "0.png")
    config.data.eval_path = str(tmp_path / "eval")
    with pytest.raises(ValueError, match="data.eval_path has"):
        training.classifier.dataset_num_classes(config)
    config.data.eval_path = None
    assert training.classifier.dataset_num_classes(config) == 3
