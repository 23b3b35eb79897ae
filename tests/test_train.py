"""Tests of the training system: optimizer, train step, sharding, checkpoints, end-to-end runs."""

import glob
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tensorflow_datasets as tfds
from conftest import FIXTURES, TINY, cli
from tensorboard.backend.event_processing import event_accumulator

from score_sde_jax import checkpoints, convert_checkpoint, distributed, models, training
from score_sde_jax.configs import digits, toy2d
from score_sde_jax.configs.ve import cifar10_ncsnpp_continuous
from score_sde_jax.configs.vp import cifar10_ddpmpp_continuous
from score_sde_jax.data import pipeline


def toy_config(n_iters=20):
    """The 2-D toy config shrunk to a few milliseconds per step."""
    config = toy2d.get_config()
    t = config.training
    t.batch_size, t.n_iters, t.n_jitted_steps = 16, n_iters, 5
    t.log_freq = t.eval_freq = t.snapshot_freq_for_preemption = 10
    t.snapshot_freq, t.snapshot_sampling = 100, False
    config.eval.batch_size = 16
    config.model.nf, config.model.num_layers = 16, 1
    config.data.num_train, config.data.num_eval = 256, 64
    return config


def read_scalars(workdir, tag):
    """{step: value} of a scalar written by the clu TensorBoard writer."""
    acc = event_accumulator.EventAccumulator(
        os.path.join(workdir, "tensorboard"), size_guidance={"tensors": 0}
    )
    acc.Reload()
    return {e.step: float(jax.numpy.asarray(tfds_tensor(e.tensor_proto))) for e in acc.Tensors(tag)}


def tfds_tensor(proto):
    import tensorflow as tf  # noqa: PLC0415 (only needed to decode event protos)

    return tf.make_ndarray(proto)


def params_of(state):
    return jax.tree.map(np.asarray, jax.device_get((state.params, state.ema_params)))


def assert_trees_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


# ----------------------------------------------------------------------------------------------
# Optimizer and step function.
# ----------------------------------------------------------------------------------------------


def test_learning_rate_warmup_starts_at_zero_like_the_original():
    config = toy_config()
    config.optim.lr, config.optim.warmup = 2e-4, 5000
    lr = training.create_learning_rate_fn(config)
    got = [float(lr(jnp.int32(s))) for s in (0, 1, 2500, 5000, 10**6)]
    np.testing.assert_allclose(got, [0.0, 2e-4 / 5000, 1e-4, 2e-4, 2e-4], rtol=1e-6)
    config.optim.warmup = 0
    assert float(training.create_learning_rate_fn(config)(jnp.int32(0))) == pytest.approx(2e-4)


@pytest.mark.parametrize("grad_clip", [1.0, -1.0])
def test_optimizer_is_global_norm_clipping_then_adam(grad_clip):
    config = toy_config()
    config.optim.grad_clip = grad_clip
    opt = training.create_optimizer(config)
    params = {"w": jnp.zeros(2)}
    g1, g2 = np.array([3.0, 4.0]), np.array([0.3, -0.4])  # norms 5 and 0.5
    state = opt.init(params)
    _, state = opt.update({"w": jnp.asarray(g1)}, state, params)
    u2, _ = opt.update({"w": jnp.asarray(g2)}, state, params)
    # Closed form of two Adam steps (b1 0.9, b2 0.999, eps 1e-8) on clip(g) = g·min(1, c/‖g‖).
    g1c = g1 * min(1.0, 1.0 / 5.0) if grad_clip > 0 else g1
    b1, b2, eps = 0.9, 0.999, 1e-8
    m = b1 * (1 - b1) * g1c + (1 - b1) * g2
    v = b2 * (1 - b2) * g1c**2 + (1 - b2) * g2**2
    expected = (m / (1 - b1**2)) / (np.sqrt(v / (1 - b2**2)) + eps)
    np.testing.assert_allclose(np.asarray(u2["w"]), expected, rtol=1e-4)


def _quadratic_loss(params, rng, x):
    del rng  # deterministic loss: gradients can be compared exactly
    return jnp.mean(jnp.sum((x * params["w"] - 1.0) ** 2, axis=-1))


def _step_kwargs(config):
    return {
        "loss_fn": training.image_loss(_quadratic_loss),
        "optimizer": training.create_optimizer(config),
        "learning_rate_fn": training.create_learning_rate_fn(config),
        "ema_rate": 0.9,
    }


def _step(state, x, config, grad_accum_steps=1):
    return training.train_step(
        state,
        {"image": x},
        jax.random.PRNGKey(0),
        grad_accum_steps=grad_accum_steps,
        **_step_kwargs(config),
    )


def _quadratic_state(config):
    params = {"w": jnp.array([0.5, -0.5], jnp.float32)}
    return training.TrainState.create(params, training.create_optimizer(config))


def test_train_step_updates_params_ema_and_step():
    config = toy_config()
    config.optim.lr, config.optim.warmup = 0.1, 2
    x = jnp.asarray(np.random.default_rng(0).normal(size=(8, 2)), jnp.float32)
    state0 = _quadratic_state(config)
    state1, metrics1 = _step(state0, x, config)
    # Update 0 has learning rate 0 (docs/original_code.md, D15): nothing moves, Adam's moments do.
    assert int(state1.step) == 1 and float(metrics1["learning_rate"]) == 0.0
    np.testing.assert_array_equal(state1.params["w"], state0.params["w"])
    np.testing.assert_array_equal(state1.ema_params["w"], state0.ema_params["w"])
    grads = jax.grad(_quadratic_loss)(state0.params, None, x)
    assert float(metrics1["grad_norm"]) == pytest.approx(float(optax.tree.norm(grads)), 1e-6)
    state2, metrics2 = _step(state1, x, config)
    assert float(metrics2["learning_rate"]) == pytest.approx(0.05)
    updates, _ = training.create_optimizer(config).update(
        jax.grad(_quadratic_loss)(state1.params, None, x), state1.opt_state, state1.params
    )
    new_w = state1.params["w"] - 0.05 * updates["w"]
    np.testing.assert_allclose(state2.params["w"], new_w, rtol=1e-6)
    np.testing.assert_allclose(
        state2.ema_params["w"], 0.9 * state1.ema_params["w"] + 0.1 * new_w, rtol=1e-6
    )


def test_gradient_accumulation_matches_the_full_batch():
    config = toy_config()
    config.optim.warmup = 0
    x = jnp.asarray(np.random.default_rng(1).normal(size=(16, 2)), jnp.float32)
    state = _quadratic_state(config)
    full, m_full = _step(state, x, config)
    accumulated, m_acc = _step(state, x, config, grad_accum_steps=4)
    np.testing.assert_allclose(m_acc["loss"], m_full["loss"], rtol=1e-6)
    np.testing.assert_allclose(accumulated.params["w"], full.params["w"], rtol=1e-6)


def _steps(state, xs, config, unroll):
    return training.train_steps(
        state, {"image": xs}, jax.random.PRNGKey(0), unroll=unroll, **_step_kwargs(config)
    )


def test_unrolled_steps_match_the_scan_and_leave_no_loop():
    config = toy_config()
    config.optim.warmup = 0
    xs = jnp.asarray(np.random.default_rng(2).normal(size=(3, 8, 2)), jnp.float32)
    state = _quadratic_state(config)
    scanned, m_scan = _steps(state, xs, config, unroll=False)
    unrolled, m_unroll = _steps(state, xs, config, unroll=True)
    assert int(unrolled.step) == 3 and m_unroll["loss"].shape == (3,)
    np.testing.assert_allclose(m_unroll["loss"], m_scan["loss"], rtol=1e-6)
    np.testing.assert_allclose(unrolled.params["w"], scanned.params["w"], rtol=1e-6)
    np.testing.assert_allclose(unrolled.ema_params["w"], scanned.ema_params["w"], rtol=1e-6)

    def loops(xs, unroll):  # XLA:CPU runs a step inside a while loop up to 14x slower
        jaxpr = jax.make_jaxpr(lambda s, x: _steps(s, x, config, unroll))(state, xs)
        return [e.primitive.name for e in jaxpr.eqns if e.primitive.name in ("scan", "while")]

    assert loops(xs, unroll=False) == ["scan"]
    assert loops(xs, unroll=True) == [] and loops(xs[:1], unroll=False) == []


def test_validate_config_names_the_bad_key():
    config = toy_config()
    config.training.log_freq = 7
    with pytest.raises(ValueError, match="training.log_freq=7 must be a positive multiple"):
        training.validate_config(config, 4, 1)
    config = toy_config()
    config.training.batch_size = 18
    with pytest.raises(ValueError, match="training.batch_size=18 must be divisible"):
        training.validate_config(config, 4, 1)


def test_cpu_warning_only_for_paper_size_runs_on_the_cpu():
    cpu_warning = training.loop.cpu_warning
    cifar10 = cifar10_ncsnpp_continuous.get_config()
    line = cpu_warning(cifar10, 62_693_251, "cpu")
    assert "a 62.7M-parameter network on CIFAR10 (32 px) on the CPU" in line
    assert "pip install -e '.[cuda12]' or '.[tpu]'" in line
    assert cpu_warning(cifar10, 62_693_251, "gpu") is None
    assert cpu_warning(cifar10, 62_693_251, "tpu") is None
    # The offline configs train on a CPU without it; a large network or 32 px images alone warn.
    for config in (digits.get_config(), toy2d.get_config()):
        model = models.get_model(config)
        shapes = jax.eval_shape(
            lambda rng, config=config, model=model: training.score_model.init_params(
                config, model, rng
            ),
            jax.random.PRNGKey(0),
        )
        assert cpu_warning(config, sum(x.size for x in jax.tree.leaves(shapes)), "cpu") is None
    config = digits.get_config()
    assert "5.0M-parameter" in cpu_warning(config, 5_000_001, "cpu")
    config.data.image_size = 32
    assert "(32 px)" in cpu_warning(config, 1_000, "cpu")


# ----------------------------------------------------------------------------------------------
# Toy runs: sharding, resume, corrupt checkpoints, NaN.
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """A 20-step toy run on all 4 devices: (workdir, params and EMA on the host)."""
    workdir = str(tmp_path_factory.mktemp("toy4"))
    state = training.train_and_evaluate(toy_config(), workdir)
    return workdir, params_of(state)


def test_train_prints_no_tensorflow_start_up_lines(tmp_path):
    # TensorFlow's C++ logging announces its oneDNN kernels when the TensorBoard writer's thread
    # first runs an op, past the muted import (`commands._quiet_libraries`).
    result = cli("train", f"--workdir={tmp_path / 'run'}", *TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "step 2/2" in result.stderr
    for line in ("oneDNN custom operations", "absl::InitializeLog"):
        assert line not in result.stderr


def test_four_devices_match_one_device(toy_run, tmp_path):
    workdir4, params4 = toy_run
    mesh1 = distributed.create_mesh(jax.devices()[:1])
    params1 = params_of(training.train_and_evaluate(toy_config(), str(tmp_path), mesh=mesh1))
    for a, b in zip(jax.tree.leaves(params1), jax.tree.leaves(params4), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
    loss4, loss1 = read_scalars(workdir4, "train_loss"), read_scalars(str(tmp_path), "train_loss")
    assert sorted(loss4) == sorted(loss1) == [5, 10, 20]
    np.testing.assert_allclose([loss1[s] for s in loss4], list(loss4.values()), rtol=1e-5)
    assert np.isfinite(list(read_scalars(workdir4, "eval_loss").values())).all()


def test_resume_after_corrupt_latest_checkpoint_is_bitwise_exact(toy_run, tmp_path, caplog):
    workdir, params = toy_run
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["10", "20"]
    resumed = str(tmp_path / "run")
    shutil.copytree(workdir, resumed)
    # Damage every file of the latest checkpoint's state, as a half-written copy would.
    state_dir = os.path.join(resumed, "checkpoints", "20", "state")
    for path in glob.glob(os.path.join(state_dir, "**", "*"), recursive=True):
        if os.path.isfile(path):
            with open(path, "wb") as f:
                f.write(b"\0garbage")
    caplog.set_level("WARNING")
    state = training.train_and_evaluate(toy_config(), resumed)
    assert "Checkpoint 20" in caplog.text and "falling back" in caplog.text
    assert os.path.isdir(os.path.join(resumed, "checkpoints", "20.corrupt"))
    assert int(state.step) == 20
    assert_trees_equal(params_of(state), params)


def test_nan_loss_stops_training_and_checkpoints_stay_finite(tmp_path, monkeypatch):
    original = pipeline.BatchLoader.__call__

    def poisoned(self, step):
        batch = original(self, step)
        if self.global_batch_size == 16 and step == 23:  # the training stream (eval: 32)
            batch["image"] = np.full_like(batch["image"], np.nan)
        return batch

    monkeypatch.setattr(pipeline.BatchLoader, "__call__", poisoned)
    config = toy_config(n_iters=40)
    config.eval.batch_size = 32
    with pytest.raises(training.NonFiniteLossError, match="at step 23"):
        training.train_and_evaluate(config, str(tmp_path))
    template = jax.eval_shape(
        lambda: training.create_train_state(
            config,
            models.get_model(config),
            jax.random.PRNGKey(0),
            training.create_optimizer(config),
        )
    )
    with checkpoints.CheckpointManager(tmp_path / "checkpoints") as manager:
        assert manager.all_steps() == [10, 20]
        state, _, step = manager.restore_latest(template, jax.random.PRNGKey(0))
    assert step == 20 and int(state.step) == 20 and checkpoints.all_finite(state)


def test_checkpoint_manager_refuses_non_finite_state(tmp_path):
    state = {"w": jnp.array([1.0, jnp.nan])}
    with checkpoints.CheckpointManager(tmp_path, async_save=False) as manager:
        with pytest.raises(checkpoints.NonFiniteStateError, match="checkpoint 3"):
            manager.save(3, state, jax.random.PRNGKey(0))
        assert manager.all_steps() == []


def test_restore_raises_and_renames_nothing_when_no_checkpoint_fits(tmp_path):
    rng = np.asarray(jax.random.PRNGKey(0))
    with checkpoints.CheckpointManager(tmp_path, async_save=False) as manager:
        for step in (1, 2):
            manager.save(step, {"w": jnp.ones(3)}, rng)
        with pytest.raises(RuntimeError, match=r"None of the checkpoints \[1, 2\]"):
            manager.restore_latest({"w": jnp.ones((2, 2))}, rng)
        assert manager.all_steps() == [1, 2]
        state, _, step = manager.restore_latest({"w": jnp.zeros(3)}, rng)
    assert step == 2 and np.asarray(state["w"]).tolist() == [1.0, 1.0, 1.0]


# ----------------------------------------------------------------------------------------------
# End-to-end runs of the shipped configs.
# ----------------------------------------------------------------------------------------------


def one_device():
    """A 1-device mesh: the U-Net runs below compile faster unpartitioned (sharding: toy tests)."""
    return distributed.create_mesh(jax.devices()[:1])


@pytest.fixture
def fast_compile():
    """Skips most XLA optimisations: these tests compile whole U-Nets to run them once or twice."""
    previous = jax.config.values["jax_disable_most_optimizations"]
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)


def test_digits_default_config_end_to_end(tmp_path, fast_compile):
    config = digits.get_config()  # the model and data as shipped; fewer steps and samples
    t = config.training
    t.n_iters, t.log_freq, t.eval_freq = 2, 1, 2
    t.snapshot_freq, t.snapshot_freq_for_preemption, t.snapshot_batch_size = 2, 1, 4
    config.model.num_scales = 4
    state = training.train_and_evaluate(config, str(tmp_path), mesh=one_device())
    assert int(state.step) == 2
    size = config.data.image_size
    samples = np.load(tmp_path / "samples" / "iter_2" / "sample.npz")["samples"]
    assert samples.shape == (4, size, size, 1) and samples.dtype == np.uint8
    assert os.path.getsize(tmp_path / "samples" / "iter_2" / "sample.png") > 0
    losses = read_scalars(str(tmp_path), "train_loss")
    assert sorted(losses) == [1, 2]
    # VP noise prediction starts at ε̂ = 0 (zero-initialised output layer): loss E[z²] = 1.
    assert 0.8 < losses[1] < 1.2
    assert np.isfinite(read_scalars(str(tmp_path), "eval_loss")[2])
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1", "2"]


def _shrink(config):
    """One step of a tiny network on 8 mock CIFAR-10 images, every event on every step."""
    t = config.training
    t.batch_size, t.n_jitted_steps = 4, 1
    t.log_freq = t.eval_freq = t.snapshot_freq = t.snapshot_freq_for_preemption = 1
    config.eval.batch_size = 4
    config.model.num_scales = 4
    return config


def test_vp_cifar10_config_one_step_under_mock_data(tmp_path, fast_compile):
    config = _shrink(cifar10_ddpmpp_continuous.get_config())
    config.data.image_size = 8
    m = config.model
    m.nf, m.ch_mult, m.num_res_blocks, m.attn_resolutions = 8, (1, 2), 1, (4,)
    config.training.n_iters = 1
    config.training.snapshot_sampling = False  # sampling: digits and VE tests
    with tfds.testing.mock_data(num_examples=8, policy=tfds.testing.MockPolicy.USE_CODE):
        state = training.train_and_evaluate(config, str(tmp_path), mesh=one_device())
    assert int(state.step) == 1
    assert np.isfinite(read_scalars(str(tmp_path), "train_loss")[1])
    assert np.isfinite(read_scalars(str(tmp_path), "eval_loss")[1])
    assert os.listdir(tmp_path / "checkpoints") == ["1"]


def test_converted_original_checkpoint_resumes_training_for_ve_cifar10(tmp_path, fast_compile):
    fixture = FIXTURES / "official_models"
    reference = np.load(fixture / "ncsnpp_ve_small.npz")
    # The fixture's network: the VE CIFAR-10 config with the changes its README lists.
    config = _shrink(cifar10_ncsnpp_continuous.get_config())
    config.data.image_size = 16
    m = config.model
    m.nf, m.ch_mult, m.num_res_blocks, m.attn_resolutions = 16, (1, 2, 2), 1, (8,)
    changed = json.loads(str(reference["config_json"]))["changed_fields"]
    assert {c["field"]: c["used"] for c in changed}["model.nf"] == 16
    step = convert_checkpoint.convert(
        config, str(fixture / "ncsnpp_ve_small_ckpt" / "checkpoint_1"), str(tmp_path)
    )
    assert step == 50005
    config.training.n_iters = step + 1
    config.training.eval_freq = 1000  # no evaluation at step 50006 (covered elsewhere)
    config.model.dropout = 0.0  # so that one step from the converted weights is deterministic
    with tfds.testing.mock_data(num_examples=8, policy=tfds.testing.MockPolicy.USE_CODE):
        state = training.train_and_evaluate(config, str(tmp_path), mesh=one_device())
    assert int(state.step) == step + 1
    # The file's raw weights are its EMA weights + 0.001; one update later the EMA is
    # 0.999·ema + 0.001·params (docs/original_code.md#losses-optimizer-and-ema) and the frozen Fourier W has not moved.
    params, ema_params = params_of(state)
    w = reference["params/GaussianFourierProjection_0/W"]
    np.testing.assert_allclose(params["GaussianFourierProjection_0"]["W"], w + 0.001, rtol=1e-6)
    kernel = reference["params/Conv_0/kernel"]
    new_kernel = params["Conv_0"]["kernel"]
    assert np.abs(new_kernel - (kernel + 0.001)).max() > 1e-6  # the update moved it
    np.testing.assert_allclose(
        ema_params["Conv_0"]["kernel"], 0.999 * kernel + 0.001 * new_kernel, rtol=1e-5, atol=1e-7
    )
    assert os.path.exists(tmp_path / "samples" / f"iter_{step + 1}" / "sample.png")
