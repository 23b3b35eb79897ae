"""DDPM, NCSNv2, NCSN v1 and the noise-conditional WRN classifier against the original networks.

Fixtures: tests/fixtures/official_models (README there). Small networks run eagerly (the
fixtures were produced eagerly); full-size ones are only shape-evaluated.
"""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from conftest import FIXTURES as FIXTURES_ROOT
from flax import traverse_util

from score_sde_jax.models import get_model
from score_sde_jax.models import wideresnet as wrn
from score_sde_jax.models.normalization import (
    ConditionalInstanceNorm2dPlus,
    InstanceNorm2d,
    InstanceNorm2dPlus,
    VarianceNorm2d,
    get_normalization,
)

FIXTURES = FIXTURES_ROOT / "official_models"
# Modules whose scale/bias are flax GroupNorm leaves, stored (1, 1, 1, C) by flax <= 0.3.5.
CLASSIFIER_GROUPNORMS = {"init_bn", "bn_2", "pre-pool-bn"}


def _is_groupnorm(path):
    return path[-2].startswith("GroupNorm_") or path[-2] in CLASSIFIER_GROUPNORMS


def _to_modern(flat):
    """Flat {path tuple: array} in the original layout -> nested params with (C,) GroupNorm leaves."""
    return traverse_util.unflatten_dict(
        {p: (v.reshape(-1) if _is_groupnorm(p) else v) for p, v in flat.items()}
    )


def _load_fixture(name):
    z = np.load(FIXTURES / f"{name}.npz")
    flat = {tuple(k.split("/")[1:]): z[k] for k in z.files if k.startswith("params/")}
    return z, json.loads(str(z["config_json"])), _to_modern(flat)


def _shapes(tree):
    return {p: tuple(v.shape) for p, v in traverse_util.flatten_dict(tree).items()}


def _init_shapes(model, x, labels):
    return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, labels, train=False))[
        "params"
    ]


def _num_params(tree):
    return sum(int(np.prod(v.shape)) for v in jax.tree.leaves(tree))


@pytest.fixture(scope="module", params=["ddpm_vp_small", "ncsnv2_small"])
def score_case(request):
    z, meta, params = _load_fixture(request.param)
    config = ml_collections.ConfigDict(meta["config"])
    return z, get_model(config), params


def test_fixture_param_tree_equals_init(score_case):
    z, model, params = score_case
    expected = _shapes(_init_shapes(model, jnp.asarray(z["x"]), jnp.asarray(z["labels"])))
    assert _shapes(params) == expected
    assert _num_params(params) == json.loads(str(z["config_json"]))["num_params"]


def test_fixture_outputs(score_case):
    z, model, params = score_case
    out = model.apply({"params": params}, jnp.asarray(z["x"]), jnp.asarray(z["labels"]))
    np.testing.assert_allclose(np.asarray(out), z["out"], rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def ddpm_case():
    z, meta, params = _load_fixture("ddpm_vp_small")
    model = get_model(ml_collections.ConfigDict(meta["config"]))
    return z, model, params, jnp.asarray(z["x"])


def test_ddpm_float_labels_enter_the_embedding_unrounded(ddpm_case):
    # VP-discrete labels (N-1)t = [299.7, 799.2] are used as floats; rounding them changes `out`.
    z, model, params, x = ddpm_case
    rounded = model.apply({"params": params}, x, jnp.round(jnp.asarray(z["labels"])))
    assert np.abs(np.asarray(rounded) - z["out"]).max() > 1e-3


def test_ddpm_dropout_is_active_in_train_mode(ddpm_case):
    z, model, params, x = ddpm_case
    labels = jnp.asarray(z["labels"])
    key = {"dropout": jax.random.PRNGKey(1)}
    trained = model.apply({"params": params}, x, labels, train=True, rngs=key)
    assert np.abs(np.asarray(trained) - z["out"]).max() > 1e-3


def test_ncsnv2_scale_by_sigma_uses_descending_table():
    z, meta, params = _load_fixture("ncsnv2_small")
    config = ml_collections.ConfigDict(meta["config"])
    config.model.scale_by_sigma = False
    raw = get_model(config).apply({"params": params}, jnp.asarray(z["x"]), jnp.asarray(z["labels"]))
    # labels [6, 2] of exp(linspace(log 50, log 0.01, 10)).
    sigma = 50.0 * (0.01 / 50.0) ** (z["labels"] / 9.0)
    np.testing.assert_allclose(sigma, [0.170998, 7.53315], rtol=1e-5)
    np.testing.assert_allclose(
        np.asarray(raw) / sigma[:, None, None, None], z["out"], rtol=1e-4, atol=1e-5
    )


# ---- classifier ----


@pytest.fixture(scope="module")
def classifier_case():
    z, meta, params = _load_fixture("wrn_classifier_small")
    c = meta["constructor"]
    model = wrn.WideResnet(c["blocks_per_group"], c["channel_multiplier"], c["num_outputs"])
    return z, model, params


def test_classifier_tree_and_logits(classifier_case):
    z, model, params = classifier_case
    x, sigmas = jnp.asarray(z["x"]), jnp.asarray(z["labels"])
    assert _shapes(params) == _shapes(_init_shapes(model, x, sigmas))
    out = model.apply({"params": params}, x, sigmas, train=False)
    np.testing.assert_allclose(np.asarray(out), z["out"], rtol=1e-4, atol=1e-5)
    logits = wrn.get_logit_fn(model)(params, x, sigmas)
    np.testing.assert_allclose(np.asarray(logits), z["logits_fn_out"], rtol=1e-4, atol=1e-5)


def test_classifier_grad(classifier_case):
    z, model, params = classifier_case
    # Under jit the gradient matches the (eager) fixture to ~1e-9 (README).
    grad_fn = jax.jit(wrn.get_classifier_grad_fn(wrn.get_logit_fn(model)))
    grad = grad_fn(params, jnp.asarray(z["x"]), jnp.asarray(z["labels"]), z["class_labels"])
    np.testing.assert_allclose(np.asarray(grad), z["classifier_grad"], rtol=1e-4, atol=1e-7)


# ---- full-size parameter layouts and counts ----


def _config(name, image_size, centered, **model):
    defaults = dict(name=name, nf=128, sigma_min=0.01, sigma_max=50.0, num_scales=1000)
    return ml_collections.ConfigDict(
        {
            "model": {**defaults, **model},
            "data": {"image_size": image_size, "centered": centered, "num_channels": 3},
        }
    )


# docs/configs.md: vp/ddpm/cifar10 and the 256-px DDPM configs.
_DDPM = dict(
    ch_mult=(1, 2, 2, 2),
    num_res_blocks=2,
    attn_resolutions=(16,),
    dropout=0.1,
    resamp_with_conv=True,
    conditional=True,
    scale_by_sigma=False,
    normalization="GroupNorm",
    nonlinearity="swish",
)
# docs/configs.md: ve/ncsnv2/* (and, with name 'ncsn', ve/ncsn/*).
_NCSN = dict(
    normalization="InstanceNorm++",
    nonlinearity="elu",
    interpolation="bilinear",
    scale_by_sigma=True,
    num_scales=232,
)

FULL_CONFIGS = {
    "vp/ddpm/cifar10": _config("ddpm", 32, True, **_DDPM),
    "vp/ddpm/cifar10_unconditional": _config("ddpm", 32, True, **{**_DDPM, "conditional": False}),
    "vp/ddpm/bedroom": _config(
        "ddpm", 256, True, **{**_DDPM, "ch_mult": (1, 1, 2, 2, 4, 4), "dropout": 0.0}
    ),
    "ve/ncsnv2/cifar10": _config("ncsnv2_64", 32, False, **_NCSN),
    "ve/ncsnv2/bedroom": _config(
        "ncsnv2_128", 128, False, **{**_NCSN, "sigma_max": 190.0, "num_scales": 1086}
    ),
    "ve/ncsn/cifar10": _config(
        "ncsn", 32, False, **{**_NCSN, "sigma_max": 1.0, "num_scales": 10, "scale_by_sigma": False}
    ),
    "ve/ncsn/cifar10_124": _config("ncsn", 32, False, **{**_NCSN, "scale_by_sigma": False}),
    "ve/ncsn/celeba_124": _config(
        "ncsn",
        64,
        False,
        **{**_NCSN, "sigma_max": 90.0, "num_scales": 500, "scale_by_sigma": False},
    ),
}

# docs/original_code.md#networks (NCSN v1 after the fix; the others measured on the original modules).
EXPECTED_COUNTS = {
    "vp/ddpm/cifar10": 35_218_947,
    "vp/ddpm/cifar10_unconditional": 32_329_347,
    "vp/ddpm/bedroom": 111_569_923,
    "ve/ncsnv2/cifar10": 33_970_563,
    "ve/ncsnv2/bedroom": 83_445_379,
    "ve/ncsn/cifar10": 34_428_675,
    "ve/ncsn/cifar10_124": 44_828_931,
    "ve/ncsn/celeba_124": 57_384_195,
}


def _full_shapes(name):
    config = FULL_CONFIGS[name]
    size = config.data.image_size
    x = jnp.zeros((1, size, size, 3))
    return _init_shapes(get_model(config), x, jnp.zeros((1,), jnp.int32))


@pytest.fixture(scope="module")
def official_full_shapes():
    return json.loads((FIXTURES / "param_shapes_full.json").read_text())


@pytest.mark.parametrize("name", ["vp/ddpm/cifar10", "ve/ncsnv2/cifar10"])
def test_full_size_layout_equals_official(name, official_full_shapes):
    entry = official_full_shapes[name]
    official = {tuple(p.split("/")): tuple(s) for p, s in entry["params"].items()}
    official = {p: ((s[-1],) if _is_groupnorm(p) else s) for p, s in official.items()}
    ours = _shapes(_full_shapes(name))
    assert ours == official
    assert sum(int(np.prod(s)) for s in ours.values()) == entry["total"]


def test_full_size_classifier_layout_equals_official(official_full_shapes):
    entry = official_full_shapes["classifier/wideresnet_noise_conditional_28_10"]
    official = {tuple(p.split("/")): tuple(s) for p, s in entry["params"].items()}
    official = {p: ((s[-1],) if _is_groupnorm(p) else s) for p, s in official.items()}
    shapes = jax.eval_shape(
        lambda: wrn.create_classifier().init(
            jax.random.PRNGKey(0), jnp.ones((1, 32, 32, 3)), jnp.ones((1,))
        )
    )["params"]
    assert _shapes(shapes) == official
    assert _num_params(shapes) == entry["total"] == 38_913_242


@pytest.mark.parametrize("name", sorted(EXPECTED_COUNTS))
def test_full_size_parameter_counts(name):
    assert _num_params(_full_shapes(name)) == EXPECTED_COUNTS[name]


# ---- NCSN v1 ----


def _random_params(shapes, seed):
    """Random parameters for a shape tree, without compiling ``init`` (slow for NCSN on CPU).

    Kernels ~ N(0, 1/fan_in); biases 0; norm scales 1; the per-label embeddings spread widely
    around 1 so that every noise label gives clearly different normalizations.
    """
    rng = np.random.default_rng(seed)

    def leaf(path, s):
        name = path[-1]
        if name == "kernel":
            return rng.normal(0.0, 1.0 / np.sqrt(np.prod(s.shape[:-1])), s.shape)
        if name == "embedding":
            return 1.0 + 0.3 * rng.normal(size=s.shape)
        return np.zeros(s.shape) if name in ("bias", "beta") else np.ones(s.shape)

    flat = traverse_util.flatten_dict(shapes)
    return traverse_util.unflatten_dict(
        {p: jnp.asarray(leaf(p, s), jnp.float32) for p, s in flat.items()}
    )


@pytest.fixture(scope="module")
def ncsn_small():
    config = _config(
        "ncsn", 16, False, **{**_NCSN, "nf": 8, "num_scales": 10, "scale_by_sigma": False}
    )
    model = get_model(config)
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 16, 16, 3)), jnp.float32)
    params = _random_params(_init_shapes(model, x, jnp.zeros((2,), jnp.int32)), seed=1)
    return model, params, x


def test_ncsn_is_label_conditional(ncsn_small):
    model, params, x = ncsn_small
    assert not model.scale_by_sigma
    tables = [v for p, v in traverse_util.flatten_dict(params).items() if p[-1] == "embedding"]
    assert tables and all(t.shape[0] == 10 for t in tables)

    forward = jax.jit(lambda labels: model.apply({"params": params}, x, labels))

    def apply(labels):
        return np.asarray(forward(jnp.asarray(labels, jnp.int32)))

    both = apply([3, 7])
    assert both.shape == x.shape and np.isfinite(both).all()
    # Each sample sees only its own label ...
    np.testing.assert_allclose(both[0], apply([3, 0])[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(both[1], apply([0, 7])[1], rtol=1e-5, atol=1e-6)
    # ... and the label matters.
    swapped = apply([7, 3])
    assert np.abs(swapped - both).max() > 0.05 * np.abs(both).max()


# ---- normalization layers ----


def test_conditional_instancenorm_plus_equals_unconditional_with_that_labels_row():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 5, 4)) * 3.0 + 1.0
    gamma, alpha, beta = (
        jax.random.normal(k, (4,)) for k in jax.random.split(jax.random.PRNGKey(1), 3)
    )
    table = jnp.zeros((3, 12)).at[2].set(jnp.concatenate([gamma, alpha, beta]))
    cond = ConditionalInstanceNorm2dPlus(num_classes=3).apply(
        {"params": {"Embed_0": {"embedding": table}}}, x, jnp.array([2, 2])
    )
    plain = InstanceNorm2dPlus().apply(
        {
            "params": {
                n: v.reshape(1, 1, 1, 4)
                for n, v in [("gamma", gamma), ("alpha", alpha), ("beta", beta)]
            }
        },
        x,
    )
    np.testing.assert_allclose(np.asarray(cond), np.asarray(plain), rtol=1e-5, atol=1e-5)


def test_instance_and_variance_norm_statistics():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 6, 3)) * 4.0 + 2.0
    ones = {"scale": jnp.ones((1, 1, 1, 3)), "bias": jnp.zeros((1, 1, 1, 3))}
    h = np.asarray(InstanceNorm2d().apply({"params": ones}, x))
    np.testing.assert_allclose(h.mean(axis=(1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(h.var(axis=(1, 2)), 1.0, rtol=1e-3)
    v = np.asarray(VarianceNorm2d().apply({"params": {"scale": ones["scale"]}}, x))
    np.testing.assert_allclose(v.var(axis=(1, 2)), 1.0, rtol=1e-3)
    # No centring: the per-channel mean is kept, up to the 1/std scaling.
    np.testing.assert_allclose(
        v.mean(axis=(1, 2)),
        np.asarray(x).mean(axis=(1, 2)) / np.asarray(x).std(axis=(1, 2)),
        rtol=1e-3,
    )


# ---- validation ----


def test_bad_configs_raise_clear_errors():
    with pytest.raises(ValueError, match="InstanceNorm\\+\\+"):
        get_normalization("BatchNorm")
    with pytest.raises(ValueError, match="valid choices"):
        get_normalization("GroupNorm", conditional=True, num_classes=10)
    with pytest.raises(ValueError, match="Unknown model"):
        get_model(_config("ncsnv3", 32, False))
    x, labels = jnp.zeros((1, 16, 16, 3)), jnp.zeros((1,), jnp.int32)
    with pytest.raises(ValueError, match="multiple of 32"):
        get_model(_config("ddpm", 16, True, **{**_DDPM, "nf": 16})).init(
            jax.random.PRNGKey(0), x, labels
        )
    scaled = get_model(_config("ddpm", 16, True, **{**_DDPM, "nf": 32, "scale_by_sigma": True}))
    with pytest.raises(ValueError, match="integer noise-level labels"):
        jax.eval_shape(lambda: scaled.init(jax.random.PRNGKey(0), x, jnp.zeros((1,))))
    cubic = get_model(
        _config("ncsnv2_64", 16, False, **{**_NCSN, "nf": 8, "interpolation": "cubic"})
    )
    with pytest.raises(ValueError, match="nearest_neighbor"):
        jax.eval_shape(lambda: cubic.init(jax.random.PRNGKey(0), x, labels))
    with pytest.raises(ValueError, match="num_classes must equal"):
        get_model(_config("ncsn", 32, False, **{**_NCSN, "num_scales": 10, "num_classes": 11}))
