"""The 39 experiment configs of the original (docs/configs.md) load, build and train.

* every config the original shipped exists at the same path under ``configs/{ve,vp,subvp}``
  and no other;
* its network (`jax.eval_shape`, no real initialisation) has the parameter count of the original:
  the fixture ``param_shapes_full.json`` where it lists the config, `ORIGINAL_PARAM_COUNTS`
  otherwise;
* its effective values equal those of the original config (the fixture
  ``configs/original_values.json``, 59 keys per config), except the documented fixes of the
  five configs that are broken in the original (docs/original_code.md, D11–D14);
* shrunk (8 x 8 images, batch 4, tiny widths, two resolution levels), it gets a batch from the
  real input pipeline under mock data (tfds mock data; an image folder for FFHQ) and runs one
  training step through `training` (`create_train_state`, `train_step`): the program `jax.jit`
  would compile (its jaxpr), executed primitive by primitive (see `run_program`). Checked: the
  initial loss against the closed form of a zero-output network (at least that for the
  RefineNets), the first Adam update's size lr, moved parameters, and the EMA update
  (docs/original_code.md#losses-optimizer-and-ema).
"""

import functools
import gc
import importlib.util
import json
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds
from conftest import FIXTURES, REPO_ROOT
from PIL import Image

from score_sde_jax import models, score_fns, sde_lib, training
from score_sde_jax.data import pipeline

CONFIG_DIR = REPO_ROOT / "configs"
# The original's score-model experiments, by SDE (configs/classifier holds the noise-conditional
# classifier's config, which the original did not ship).
CONFIGS = sorted(
    str(p.relative_to(CONFIG_DIR))
    for sde in ("ve", "vp", "subvp")
    for p in (CONFIG_DIR / sde).rglob("*.py")
    if p.name != "__init__.py"
)
ORIGINAL_VALUES = FIXTURES / "configs" / "original_values.json"
PARAM_SHAPES = FIXTURES / "official_models" / "param_shapes_full.json"

# Parameter counts of the original networks for the configs the fixture JSON does not list
# (docs/original_code.md#networks; NCSN v1 counts are those of the fixed network, whose
# embedding tables grow with N = num_scales).
ORIGINAL_PARAM_COUNTS = {
    "ve/cifar10_ncsnpp.py": 62_693_251,
    "ve/celeba_ncsnpp.py": 62_693_251,
    "vp/cifar10_ncsnpp.py": 62_693_251,
    "vp/cifar10_ncsnpp_continuous.py": 62_693_251,
    "subvp/cifar10_ncsnpp_continuous.py": 62_693_251,
    "vp/cifar10_ncsnpp_deep_continuous.py": 107_521_411,
    "subvp/cifar10_ncsnpp_deep_continuous.py": 107_521_411,
    "vp/cifar10_ddpmpp.py": 61_804_419,
    "subvp/cifar10_ddpmpp_continuous.py": 61_804_419,
    "vp/cifar10_ddpmpp_deep_continuous.py": 106_632_579,
    "vp/ddpm/cifar10_continuous.py": 35_218_947,
    "subvp/cifar10_ddpm_continuous.py": 35_218_947,
    "ve/cifar10_ddpm.py": 35_218_947,
    "vp/ddpm/cifar10_unconditional.py": 32_329_347,
    "vp/ddpm/bedroom.py": 111_569_923,
    "vp/ddpm/church.py": 111_569_923,
    "vp/ddpm/celebahq.py": 111_569_923,
    "ve/bedroom_ncsnpp_continuous.py": 65_574_549,
    "ve/church_ncsnpp_continuous.py": 65_574_549,
    "ve/ffhq_256_ncsnpp_continuous.py": 65_574_549,
    "ve/ffhq_ncsnpp_continuous.py": 105_785_896,
    "ve/celebahq_ncsnpp_continuous.py": 105_785_896,
    "ve/ncsnv2/celeba.py": 33_970_563,
    "ve/ncsnv2/bedroom.py": 83_445_379,
    "ve/ncsn/cifar10.py": 34_428_675,
    "ve/ncsn/cifar10_5.py": 34_428_675,
    "ve/ncsn/celeba.py": 34_428_675,
    "ve/ncsn/celeba_5.py": 34_428_675,
    "ve/ncsn/cifar10_124.py": 44_828_931,
    "ve/ncsn/cifar10_1245.py": 44_828_931,
    "ve/ncsn/celeba_124.py": 57_384_195,
    "ve/ncsn/celeba_1245.py": 57_384_195,
}

_1024_FIXES = {
    # Keys the stand-alone originals lacked (docs/original_code.md, D14), now from
    # default_1024_configs.
    "training.n_jitted_steps": 1,
    "eval.enable_sampling": True,
    "eval.enable_loss": True,
    "eval.enable_bpd": False,
    "eval.bpd_dataset": "test",
    # Inherited, unused by the VE SDE.
    "model.beta_min": 0.1,
    "model.beta_max": 20.0,
}
# Where a config deliberately differs from the original's effective value (docs/original_code.md,
# D12–D14).
FIXES = {
    "ve/ncsn/celeba.py": {"training.sde": "vesde"},  # the original set training.loss
    "ve/ncsnv2/bedroom.py": {"training.continuous": False},  # the original's `continuouse`
    "ve/ffhq_ncsnpp_continuous.py": _1024_FIXES,
    "ve/celebahq_ncsnpp_continuous.py": _1024_FIXES,
}
MISSING = object()  # a key the config does not set


def load_config(name: str):
    """``get_config()`` of ``configs/<name>``, imported by path as `config_flags` does."""
    spec = importlib.util.spec_from_file_location(
        "config_under_test_" + re.sub(r"\W", "_", name), CONFIG_DIR / name
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def lookup(config, key: str):
    """``config.<key>`` for a dotted key, or `MISSING` when the config does not set it."""
    node = config
    for part in key.split("."):
        if part not in node:
            return MISSING
        node = node[part]
    return node


@functools.cache
def original_values() -> dict[str, dict[str, object]]:
    """{config path: {dotted key: effective value in the original}} from the fixture."""
    data = json.loads(ORIGINAL_VALUES.read_text())
    return {
        name: {key: values.get(key, MISSING) for key in data["columns"]}
        for name, values in data["configs"].items()
    }


def same_value(expected, actual) -> bool:
    if expected is MISSING:
        return actual is MISSING
    if isinstance(expected, bool | str):
        return type(actual) is type(expected) and actual == expected
    if isinstance(expected, list):
        return isinstance(actual, list | tuple) and list(actual) == expected
    return (
        isinstance(actual, int | float)
        and not isinstance(actual, bool)
        and math.isclose(actual, expected, rel_tol=1e-12)
    )


# ------------------------------------------------------------------------------------------------
# The set of configs and their values.
# ------------------------------------------------------------------------------------------------


def test_the_39_configs_of_the_original_are_here_and_nothing_else():
    assert len(original_values()) == 39
    assert CONFIGS == sorted(original_values())


@pytest.mark.parametrize("name", CONFIGS)
def test_effective_values_match_the_original(name):
    config = load_config(name)
    expected = dict(original_values()[name], **FIXES.get(name, {}))
    assert len(expected) == 59  # every recorded key
    wrong = {
        key: (value, lookup(config, key))
        for key, value in expected.items()
        if not same_value(value, lookup(config, key))
    }
    assert not wrong, f"{name}: (original, config) differ for {wrong}"


def test_the_fixes_of_the_broken_originals():
    # NCSN v1 (docs/original_code.md, D11): one embedding row per noise level, also after an override.
    for name in (n for n in CONFIGS if n.startswith("ve/ncsn/")):
        config = load_config(name)
        assert config.model.num_classes == config.model.num_scales
        config.model.num_scales = 7
        assert config.model.num_classes == 7
    assert "loss" not in load_config("ve/ncsn/celeba.py").training  # D12
    assert "continuouse" not in load_config("ve/ncsnv2/bedroom.py").training  # D13
    for name in ("ve/ffhq_ncsnpp_continuous.py", "ve/celebahq_ncsnpp_continuous.py"):
        config = load_config(name)
        assert "device" not in config  # the original's torch.device (D14)
        # The original's author-local records path is a placeholder to fill in.
        assert config.data.tfrecords_path is None and config.data.path is None


def test_data_keys_name_what_the_pipeline_reads():
    data = {name: load_config(name).data for name in CONFIGS}
    categories = {name: d.get("category") for name, d in data.items() if d.dataset == "LSUN"}
    assert categories == {
        "ve/bedroom_ncsnpp_continuous.py": "bedroom",
        "ve/church_ncsnpp_continuous.py": "church_outdoor",
        "ve/ncsnv2/bedroom.py": "bedroom",
        "vp/ddpm/bedroom.py": "bedroom",
        "vp/ddpm/church.py": "church_outdoor",
    }
    config = load_config("ve/ffhq_256_ncsnpp_continuous.py")
    with pytest.raises(ValueError, match="data.tfrecords_path"):
        pipeline.create_datasets(config, seed=0, process_index=0, process_count=1)


# ------------------------------------------------------------------------------------------------
# Full-size parameter counts.
# ------------------------------------------------------------------------------------------------


def model_inputs(config):
    """Abstract network inputs: x [1, H, W, C] and labels as `score_fns.get_labels` makes them."""
    sde = sde_lib.get_sde(config)
    labels = score_fns.get_labels(sde, jnp.full((1,), 0.5), config.training.continuous)
    size = config.data.image_size
    x = jax.ShapeDtypeStruct((1, size, size, config.data.num_channels), jnp.float32)
    return x, jax.ShapeDtypeStruct(labels.shape, labels.dtype)


@functools.cache
def _param_sizes(model, x, labels) -> tuple[int, ...]:
    # Keyed by the (frozen, comparable) module: configs with the same network trace it once.
    variables = jax.eval_shape(
        lambda x, labels: model.init(
            {"params": jax.random.key(0), "dropout": jax.random.key(1)}, x, labels, train=False
        ),
        x,
        labels,
    )
    return tuple(sorted(leaf.size for leaf in jax.tree.leaves(variables["params"])))


@pytest.mark.parametrize("name", CONFIGS)
def test_full_size_parameter_count(name):
    config = load_config(name)
    sizes = _param_sizes(models.get_model(config), *model_inputs(config))
    official = json.loads(PARAM_SHAPES.read_text()).get(name.removesuffix(".py"))
    if official is None:
        assert sum(sizes) == ORIGINAL_PARAM_COUNTS[name]
    else:
        # GroupNorm leaves are (1, 1, 1, C) there and (C,) here: compare sizes, not shapes.
        official_sizes = sorted(math.prod(shape) for shape in official["params"].values())
        assert sum(sizes) == official["total"]
        assert list(sizes) == official_sizes


def test_every_config_has_one_expected_parameter_count():
    listed = {k + ".py" for k in json.loads(PARAM_SHAPES.read_text()) if not k.startswith("_")}
    assert sorted((listed & set(CONFIGS)) | set(ORIGINAL_PARAM_COUNTS)) == CONFIGS
    assert not listed & set(ORIGINAL_PARAM_COUNTS)


# ------------------------------------------------------------------------------------------------
# One shrunk training step per config.
# ------------------------------------------------------------------------------------------------

SHRUNK_SIZE = 8
SHRUNK_BATCH = 4


def shrink(config, image_folder):
    """8 x 8 images, batch 4, the narrowest widths each network allows, two resolution levels."""
    config.data.image_size = SHRUNK_SIZE
    config.training.batch_size = config.eval.batch_size = SHRUNK_BATCH
    # The original's warmup gives the first update learning rate 0 (docs/original_code.md, D15).
    config.optim.warmup = 0
    model = config.model
    if model.name in ("ncsnpp", "ddpm"):
        # DDPM's GroupNorm(32) needs 32 channels; NCSN++ gets the same width, so that the two
        # share most layer shapes (and thus most compiled primitives, see `run_program`).
        model.nf = 32
        # Two levels: the down / up resampling blocks (BigGAN, FIR, the progressive input and
        # output pyramids) that the configs switch between only run between levels. One width
        # for both levels: fewer distinct layer shapes to compile.
        model.ch_mult = (1, 1)
        model.num_res_blocks = 1
        model.attn_resolutions = (SHRUNK_SIZE // 2,)
    else:  # NCSN v1 / NCSNv2: fixed RefineNet topology
        model.nf = 8
    if config.data.dataset == "FFHQ":  # not in tfds: an image folder stands in for the records
        config.data.path = str(image_folder)
    return config


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ffhq")
    rng = np.random.default_rng(0)
    # Mixed sizes and aspect ratios, larger and smaller than the 8-pixel training size, in
    # nested folders: every one is resized on its short side and centre-cropped.
    for i, (h, w) in enumerate([(12, 12), (31, 9), (6, 17), (64, 40), (8, 8)]):
        sub = folder / f"part{i % 2}"
        sub.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(sub / f"{i}.png")
    return folder


def mock_batch(config) -> np.ndarray:
    """One training batch of ``config`` from the real input pipeline under tfds mock data."""
    with tfds.testing.mock_data(num_examples=4, policy=tfds.testing.MockPolicy.USE_CODE):
        train_iter, _ = pipeline.create_datasets(config, seed=0, process_index=0, process_count=1)
        return next(train_iter)["image"]


def init_and_train_step(config):
    """``f(rng, images, ema_rate) -> (initial params, state after one update, metrics)``."""
    model = models.get_model(config)
    sde = sde_lib.get_sde(config)
    loss_fn = training.create_loss_fn(config, sde, model, train=True)
    optimizer = training.create_optimizer(config)

    def run(rng, images, ema_rate):
        init_rng, step_rng = jax.random.split(rng)
        state = training.create_train_state(config, model, init_rng, optimizer)
        new_state, metrics = training.train_step(
            state,
            {"image": images},
            step_rng,
            loss_fn=training.image_loss(loss_fn),
            optimizer=optimizer,
            learning_rate_fn=training.create_learning_rate_fn(config),
            ema_rate=ema_rate,
        )
        return state.params, new_state, metrics

    return run


_PROGRAMS = {}


def step_program(config, rng, images, ema_rate):
    """The jaxpr that `jax.jit` compiles for `init_and_train_step`, and its output structure.

    Everything the step reads from ``config`` is in the cache key, so configs that shrink to the
    same network, SDE, loss and optimizer (e.g. the deep and shallow variants) share one trace;
    the EMA rate is an argument, not a constant, for the same reason.
    """
    t = config.training
    key = (
        models.get_model(config),
        sde_lib.get_sde(config),
        (t.continuous, t.reduce_mean, t.likelihood_weighting),
        tuple(sorted(config.optim.items())),
        images.shape,
    )
    if key not in _PROGRAMS:
        traced = jax.make_jaxpr(init_and_train_step(config), return_shape=True)
        _PROGRAMS[key] = traced(rng, images, ema_rate)
    return _PROGRAMS[key]


def run_program(program, *args):
    """Executes a traced program primitive by primitive.

    Whole-program XLA:CPU compilation of one of these steps costs 10-40 CPU-seconds even for the
    shrunk networks, and the 39 configs have 26 distinct ones; executed one primitive at a time,
    the same jaxpr compiles each distinct (primitive, shapes) pair once for all configs.
    """
    jaxpr, out_shape = program
    flat = jax.core.eval_jaxpr(jaxpr.jaxpr, jaxpr.consts, *jax.tree.leaves(args))
    return jax.device_get(jax.tree.unflatten(jax.tree.structure(out_shape), flat))


@pytest.fixture(scope="module")
def fast_steps():
    """Fast compilation of the per-primitive executables and a cheaper garbage collector.

    Tracing allocates millions of short-lived objects; frozen, the long-lived ones of the imports
    are no longer scanned at each collection.
    """
    previous = jax.config.values["jax_disable_most_optimizations"]
    jax.config.update("jax_disable_most_optimizations", True)
    gc.freeze()
    yield
    gc.unfreeze()
    _PROGRAMS.clear()
    jax.config.update("jax_disable_most_optimizations", previous)


@pytest.mark.parametrize("name", CONFIGS)
def test_shrunk_training_step(name, image_folder, fast_steps):
    check_one_training_step(shrink(load_config(name), image_folder))


def test_image_folder_training_step(image_folder, fast_steps):
    """`data.dataset='folder'`: a paper config trained on a folder of PNGs of mixed sizes."""
    config = shrink(load_config("ve/cifar10_ncsnpp_continuous.py"), image_folder)
    config.data.dataset = "folder"
    config.data.path = str(image_folder)
    check_one_training_step(config)


def check_one_training_step(config):
    """One real training step of a shrunk ``config`` on a batch of its input pipeline."""
    images = mock_batch(config)
    assert images.shape == (SHRUNK_BATCH, SHRUNK_SIZE, SHRUNK_SIZE, 3)
    assert images.dtype == np.float32
    low = -1.0 if config.data.centered else 0.0
    assert low <= images.min() and images.max() <= 1.0 and images.std() > 0.01

    rng = jax.random.key(0)
    mu = np.float32(config.model.ema_rate)
    program = step_program(config, rng, images, mu)
    params, state, metrics = run_program(program, rng, images, mu)
    loss = metrics["loss"]
    assert loss.shape == () and loss.dtype == np.float32
    assert jax.tree.structure(state.params) == jax.tree.structure(params)

    # Each of the B·D dimensions adds (σ_t·s + z)² (or (ε̂ - z)²) to the loss, z ~ N(0, 1), and
    # the reduction is a mean, or 0.5 x the sum over D (docs/original_code.md#losses-optimizer-and-ema); B·D = 768 draws: sd 5 %.
    # NCSN++ and DDPM start with a ~0 output (1e-10 / 0-initialised output layers),
    # so the loss is E[z²] = 1 per dimension; the RefineNets' output adds to it.
    per_example = 1.0 if config.training.reduce_mean else 0.5 * images[0].size
    assert np.isfinite(loss) and loss / per_example > 0.8
    if config.model.name in ("ncsnpp", "ddpm"):
        assert loss / per_example < 1.2
    assert np.isfinite(metrics["grad_norm"]) and metrics["grad_norm"] > 0
    assert int(state.step) == 1
    lr = config.optim.lr
    np.testing.assert_allclose(metrics["learning_rate"], lr, rtol=1e-6)

    before, after = jax.tree.leaves(params), jax.tree.leaves(state.params)
    moved = [np.any(a != b) for a, b in zip(before, after, strict=True)]
    # Not all: residual branches end in a 1e-10-initialised conv, so the leaves
    # before it get ~1e-10 gradients and a first update below float32 resolution; the
    # Fourier W is frozen.
    assert np.mean(moved) > 0.5
    # Adam's first update is lr·g / (|g| + ε) per coordinate, whatever the clipping:
    # no coordinate moves farther than lr, and those with |g| ≫ ε move by lr.
    steps = [np.max(np.abs(a - b)) for a, b in zip(after, before, strict=True)]
    assert max(steps) == pytest.approx(lr, rel=0.01)
    # EMA from the initial parameters.
    for old, new, ema in zip(before, after, jax.tree.leaves(state.ema_params), strict=True):
        np.testing.assert_allclose(ema, mu * old + (1 - mu) * new, rtol=1e-5, atol=1e-6)
