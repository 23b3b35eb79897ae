"""NCSN++ / DDPM++ equal the original networks (tests/fixtures/official_models).

Fixture outputs and parameter trees of the three small official networks, parameter paths/shapes
and totals of the full-size configs, the FIR resampling ops against literal NumPy references,
dropout in train mode, and config validation.
"""

import functools
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from conftest import FIXTURES as FIXTURES_ROOT
from flax.traverse_util import flatten_dict, unflatten_dict

from score_sde_jax.models import fir as fir_ops
from score_sde_jax.models import get_model, layers

FIXTURES = FIXTURES_ROOT / "official_models"
CASES = ("ncsnpp_ve_small", "ddpmpp_vp_small", "ncsnpp_outputskip_small")


# ------------------------------------------------------------------------------------------------
# Helpers: official layout -> our layout (only GroupNorm scale/bias change shape).


def _is_group_norm_leaf(path: tuple[str, ...]) -> bool:
    return len(path) >= 2 and path[-2].startswith("GroupNorm_") and path[-1] in ("scale", "bias")


def _modern_shape(path: tuple[str, ...], shape) -> tuple[int, ...]:
    """Official (flax ≤ 0.3.5) GroupNorm leaves are (1, 1, 1, C); modern flax uses (C,)."""
    return (shape[-1],) if _is_group_norm_leaf(path) else tuple(shape)


def _params_from_npz(npz) -> dict:
    flat = {}
    for key in npz.files:
        if key.startswith("params/"):
            path = tuple(key[len("params/") :].split("/"))
            flat[path] = npz[key].reshape(_modern_shape(path, npz[key].shape))
    return unflatten_dict(flat)


def _load_case(name: str):
    npz = np.load(FIXTURES / f"{name}.npz")
    info = json.loads(str(npz["config_json"]))
    return info, ml_collections.ConfigDict(info["config"]), npz


def _param_shapes(model, image_size: int, channels: int = 3) -> dict:
    """Parameter paths → shapes via `jax.eval_shape` (no real initialisation)."""
    x = jax.ShapeDtypeStruct((1, image_size, image_size, channels), jnp.float32)
    labels = jax.ShapeDtypeStruct((1,), jnp.float32)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x, labels)["params"]
    return {"/".join(path): tuple(leaf.shape) for path, leaf in flatten_dict(shapes).items()}


# ------------------------------------------------------------------------------------------------
# 1. The three small official networks.


@functools.cache
def _built_case(name: str) -> dict:
    """Fixture case with its model, converted parameters and a jitted eval-mode apply."""
    info, config, npz = _load_case(name)
    model = get_model(config)

    @jax.jit
    def apply(params, x, labels):
        return model.apply({"params": params}, x, labels, train=False)

    return {
        "info": info,
        "config": config,
        "npz": npz,
        "model": model,
        "params": _params_from_npz(npz),
        "x": jnp.asarray(npz["x"]),
        "labels": jnp.asarray(npz["labels"]),
        "apply": apply,
    }


@pytest.fixture(scope="module", params=CASES)
def case(request):
    return _built_case(request.param)


def test_fixture_param_tree_matches_exactly(case):
    ours = _param_shapes(case["model"], case["config"].data.image_size)
    theirs = {"/".join(path): np.shape(v) for path, v in flatten_dict(case["params"]).items()}
    assert sorted(ours) == sorted(theirs)  # every fixture leaf is used exactly once
    assert ours == theirs
    assert sum(int(np.prod(s)) for s in ours.values()) == case["info"]["num_params"]


def test_fixture_output_matches_original(case):
    out = case["apply"](case["params"], case["x"], case["labels"])
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out), case["npz"]["out"], rtol=1e-4, atol=1e-5)


def test_train_mode_dropout():
    case = _built_case("ncsnpp_ve_small")
    model, params, x, labels = case["model"], case["params"], case["x"], case["labels"]
    assert model.dropout == pytest.approx(0.1)

    @jax.jit
    def train_apply(key):
        return model.apply({"params": params}, x, labels, train=True, rngs={"dropout": key})

    # rbg keys: XLA:CPU compiles threefry dropout masks ~10× slower (minutes for this network).
    def key(seed):
        return jax.random.key(seed, impl="rbg")

    eval_out = np.asarray(case["apply"](params, x, labels))
    out_a = np.asarray(train_apply(key(1)))
    assert np.abs(out_a - eval_out).max() > 1e-2
    out_b = np.asarray(train_apply(key(2)))
    assert np.abs(out_a - out_b).max() > 1e-2
    np.testing.assert_array_equal(out_a, np.asarray(train_apply(key(1))))


def test_bfloat16_compute_stays_close_to_float32():
    """``model.dtype=bfloat16``: same parameters, float32 output, about 1 % relative error."""
    _, config, npz = _load_case("ncsnpp_ve_small")
    config.model.dtype = "bfloat16"
    model = get_model(config)
    assert model.dtype == jnp.bfloat16
    out = jax.jit(lambda p, x, t: model.apply({"params": p}, x, t))(
        _params_from_npz(npz), npz["x"], npz["labels"]
    )
    assert out.dtype == jnp.float32
    ref = npz["out"]
    rel_rms = np.sqrt(np.mean((np.asarray(out) - ref) ** 2) / np.mean(ref**2))
    assert 1e-4 < rel_rms < 3e-2  # really computed in bfloat16, and still the same function


def test_positional_scale_by_sigma_indexes_descending_sigmas():
    """σ = exp(linspace(log σ_max, log σ_min, N))[int(label)] divides the output
    (docs/original_code.md#sdes-and-time-conditioning)."""
    _, config, npz = _load_case("ddpmpp_vp_small")
    config.model.scale_by_sigma = True
    model = get_model(config)
    out = jax.jit(lambda p, x, t: model.apply({"params": p}, x, t))(
        _params_from_npz(npz), npz["x"], npz["labels"]
    )
    m = config.model
    sigmas = np.exp(np.linspace(np.log(m.sigma_max), np.log(m.sigma_min), m.num_scales))
    used = sigmas[npz["labels"].astype(np.int32)]  # labels 299.7, 799.2 -> indices 299, 799
    expected = npz["out"] / used[:, None, None, None]
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# 2. Full-size configs: parameter paths, shapes and totals (param_shapes_full.json).

# Full-size config = a fixture's config with its `changed_fields` reverted, plus the listed
# model changes (the deep variants differ from the base configs only in num_res_blocks; sub-VP
# and VP DDPM++ share the network).
FULL_CONFIGS = {
    "ve/cifar10_ncsnpp_continuous": ("ncsnpp_ve_small", {}),
    "ve/cifar10_ncsnpp_deep_continuous": ("ncsnpp_ve_small", {"num_res_blocks": 8}),
    "vp/cifar10_ddpmpp_continuous": ("ddpmpp_vp_small", {}),
    "subvp/cifar10_ddpmpp_deep_continuous": ("ddpmpp_vp_small", {"num_res_blocks": 8}),
    "ve/celebahq_256_ncsnpp_continuous": ("ncsnpp_outputskip_small", {}),
    # Totals only (docs/original_code.md#networks).
    "ve/cifar10_ncsnpp": (
        "ncsnpp_ve_small",
        {"embedding_type": "positional", "training.continuous": False},
    ),
    "ve/ffhq_ncsnpp_continuous": (
        "ncsnpp_outputskip_small",
        {
            "data.image_size": 1024,
            "nf": 16,
            "ch_mult": (1, 2, 4, 8, 16, 32, 32, 32),
            "num_res_blocks": 1,
            "sigma_max": 1348,
        },
    ),
}
ORIGINAL_TOTALS = {
    "ve/cifar10_ncsnpp": 62_693_251,
    "ve/ffhq_ncsnpp_continuous": 105_785_896,
}


def _full_config(name: str) -> ml_collections.ConfigDict:
    case_name, overrides = FULL_CONFIGS[name]
    info, config, _ = _load_case(case_name)
    for change in info["changed_fields"]:
        section, key = change["field"].split(".")
        config[section][key] = change["official"]
    for key, value in overrides.items():
        section, key = key.split(".") if "." in key else ("model", key)
        config[section][key] = value
    return config


@pytest.fixture(scope="module")
def official_shapes():
    with open(FIXTURES / "param_shapes_full.json") as f:
        return json.load(f)


def test_every_ncsnpp_entry_of_param_shapes_full_is_covered(official_shapes):
    ncsnpp_entries = {k for k in official_shapes if "ncsnpp" in k or "ddpmpp" in k}
    assert ncsnpp_entries == set(FULL_CONFIGS) - set(ORIGINAL_TOTALS)


@pytest.mark.parametrize("name", [n for n in FULL_CONFIGS if n not in ORIGINAL_TOTALS])
def test_full_size_param_paths_shapes_and_total(name, official_shapes):
    config = _full_config(name)
    ours = _param_shapes(get_model(config), config.data.image_size)
    official = official_shapes[name]
    theirs = {
        path: _modern_shape(tuple(path.split("/")), shape)
        for path, shape in official["params"].items()
    }
    assert sorted(ours) == sorted(theirs)
    assert ours == theirs
    assert len(ours) == official["num_leaves"]
    assert sum(int(np.prod(s)) for s in ours.values()) == official["total"]


@pytest.mark.parametrize("name", sorted(ORIGINAL_TOTALS))
def test_full_size_totals_of_the_original(name):
    config = _full_config(name)
    shapes = _param_shapes(get_model(config), config.data.image_size)
    assert sum(int(np.prod(s)) for s in shapes.values()) == ORIGINAL_TOTALS[name]


# ------------------------------------------------------------------------------------------------
# 3. FIR resampling against literal NumPy references (docs/original_code.md#networks).


def _ref_upfirdn_2d(x, k2d, up=1, down=1, pad0=0, pad1=0):
    """Zero-insert, pad/crop, true 2-D convolution with k2d, VALID, keep every down-th pixel."""
    b, h, w, c = x.shape
    xu = np.zeros((b, h * up, w * up, c), x.dtype)
    xu[:, ::up, ::up] = x
    pos = (max(pad0, 0), max(pad1, 0))
    xu = np.pad(xu, ((0, 0), pos, pos, (0, 0)))
    n = xu.shape[1]
    xu = xu[:, max(-pad0, 0) : n - max(-pad1, 0), max(-pad0, 0) : n - max(-pad1, 0)]
    kf = np.asarray(k2d)[::-1, ::-1]
    kh, kw = kf.shape
    out_h, out_w = xu.shape[1] - kh + 1, xu.shape[2] - kw + 1
    out = np.zeros((b, out_h, out_w, c))
    for p in range(kh):
        for q in range(kw):
            out += xu[:, p : p + out_h, q : q + out_w] * kf[p, q]
    return out[:, ::down, ::down]


def _ref_conv_valid(x, w, stride=1):
    kh, kw = w.shape[:2]
    out_h, out_w = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    out = sum(
        np.einsum("bhwi,io->bhwo", x[:, p : p + out_h, q : q + out_w], w[p, q])
        for p in range(kh)
        for q in range(kw)
    )
    return out[:, ::stride, ::stride]


def _fir_2d(k, scale):
    k2d = np.outer(k, k).astype(np.float64)
    return k2d / k2d.sum() * scale


RNG = np.random.default_rng(0)
X = RNG.normal(size=(2, 6, 6, 3)).astype(np.float32)


@pytest.mark.parametrize(
    "k, up, down, pad0, pad1",
    [
        ((1, 3, 3, 1), 2, 1, 2, 1),
        ((1, 3, 3, 1), 1, 2, 1, 1),
        ((1, 2, 4), 3, 2, 1, 2),  # asymmetric taps: checks the kernel flip
        ((1, 2, 4), 2, 1, -1, 0),  # negative padding crops
    ],
)
def test_upfirdn_2d_matches_literal_definition(k, up, down, pad0, pad1):
    got = fir_ops.upfirdn_2d(jnp.asarray(X), k, up=up, down=down, pad0=pad0, pad1=pad1)
    want = _ref_upfirdn_2d(X, np.outer(k, k), up, down, pad0, pad1)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def test_fir_resampling_shapes_and_values():
    k = (1, 3, 3, 1)
    up = fir_ops.upsample_2d(jnp.asarray(X), k)
    np.testing.assert_allclose(
        np.asarray(up), _ref_upfirdn_2d(X, _fir_2d(k, 4), up=2, pad0=2, pad1=1), atol=1e-5
    )
    down = fir_ops.downsample_2d(jnp.asarray(X), k)
    np.testing.assert_allclose(
        np.asarray(down), _ref_upfirdn_2d(X, _fir_2d(k, 1), down=2, pad0=1, pad1=1), atol=1e-5
    )
    assert up.shape == (2, 12, 12, 3) and down.shape == (2, 3, 3, 3)
    np.testing.assert_allclose(
        np.asarray(fir_ops.naive_downsample_2d(jnp.asarray(X))),
        X.reshape(2, 3, 2, 3, 2, 3).mean(axis=(2, 4)),
        atol=1e-6,
    )
    np.testing.assert_array_equal(
        np.asarray(fir_ops.naive_upsample_2d(jnp.asarray(X))), X.repeat(2, 1).repeat(2, 2)
    )


def test_naive_upsample_gradient_sums_windows_apart_from_the_convolution():
    """The gradient is the 2×2 window sum of the cotangent, and XLA:CPU does not fuse that sum
    with the convolution gradient that feeds it (a YNNPACK fusion at half Eigen's speed)."""
    g = RNG.normal(size=(2, 12, 12, 3)).astype(np.float32)
    _, vjp = jax.vjp(lambda x: fir_ops.naive_upsample_2d(x, factor=2), jnp.asarray(X))
    np.testing.assert_allclose(
        np.asarray(vjp(jnp.asarray(g))[0]), g.reshape(2, 6, 2, 6, 2, 3).sum(axis=(2, 4)), rtol=1e-6
    )
    _, tangent = jax.jvp(
        lambda x: fir_ops.naive_upsample_2d(x, factor=2), (jnp.asarray(X),), (jnp.asarray(X),)
    )
    np.testing.assert_array_equal(np.asarray(tangent), X.repeat(2, 1).repeat(2, 2))
    x = jnp.asarray(RNG.normal(size=(2, 4, 4, 32)).astype(np.float32))
    w = jnp.asarray(RNG.normal(size=(3, 3, 32, 32)).astype(np.float32))
    dimensions = ("NHWC", "HWIO", "NHWC")

    def loss(x):
        h = fir_ops.naive_upsample_2d(x, factor=2)
        return jnp.sum(
            jnp.sin(
                jax.lax.conv_general_dilated(h, w, (1, 1), "SAME", dimension_numbers=dimensions)
            )
        )

    program = jax.jit(jax.grad(loss)).lower(x).compile().as_text()
    fusions = program.split("\n}\n")
    assert not [f for f in fusions if " convolution(" in f and " reduce(" in f]


def test_concat_skip_gradient_is_the_split_cotangent():
    h, skip = jnp.asarray(X), jnp.asarray(X[..., :2] + 1.0)
    out, vjp = jax.vjp(layers.concat_skip, h, skip)
    np.testing.assert_array_equal(np.asarray(out), np.concatenate([X, X[..., :2] + 1.0], -1))
    g = RNG.normal(size=(2, 6, 6, 5)).astype(np.float32)
    dh, dskip = vjp(jnp.asarray(g))
    np.testing.assert_array_equal(np.asarray(dh), g[..., :3])
    np.testing.assert_array_equal(np.asarray(dskip), g[..., 3:])
    # Forward mode (the likelihood's Hutchinson JVPs) sees the plain concatenation.
    _, tangent = jax.jvp(layers.concat_skip, (h, skip), (h * 2.0, skip * 3.0))
    np.testing.assert_array_equal(
        np.asarray(tangent), np.concatenate([X * 2, (X[..., :2] + 1) * 3], -1)
    )


def test_upsample_conv_2d_matches_stylegan2_transposed_conv():
    """TF conv2d_transpose (stride 2) with the flipped, in/out-swapped weight, then FIR (p 1/1)."""
    w = RNG.normal(size=(3, 3, 3, 5)).astype(np.float32)
    b, h, _, _ = X.shape
    # conv2d_transpose scatters x[a] * w_t[p] to y[2a + p]; w_t[p, q, o, i] = w[2-p, 2-q, i, o].
    w_t = np.transpose(w[::-1, ::-1], (0, 1, 3, 2))
    y = np.zeros((b, 2 * h + 1, 2 * h + 1, 5))
    for p in range(3):
        for q in range(3):
            y[:, p : p + 2 * h : 2, q : q + 2 * h : 2] += np.einsum("bhwi,oi->bhwo", X, w_t[p, q])
    want = _ref_upfirdn_2d(y, _fir_2d((1, 3, 3, 1), 4), pad0=1, pad1=1)
    got = fir_ops.upsample_conv_2d(jnp.asarray(X), jnp.asarray(w), k=(1, 3, 3, 1))
    assert got.shape == (2, 12, 12, 5)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5)


def test_conv_downsample_2d_is_blur_then_strided_valid_conv():
    w = RNG.normal(size=(3, 3, 3, 4)).astype(np.float32)
    blurred = _ref_upfirdn_2d(X, _fir_2d((1, 3, 3, 1), 1), pad0=2, pad1=2)
    want = _ref_conv_valid(blurred, w, stride=2)
    got = fir_ops.conv_downsample_2d(jnp.asarray(X), jnp.asarray(w), k=(1, 3, 3, 1))
    assert got.shape == (2, 3, 3, 4)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# 4. Switches no shipped config uses, and config validation.


def _small_config(**model_overrides):
    _, config, _ = _load_case("ncsnpp_ve_small")
    config.model.update(model_overrides)
    return config


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (
            # FIR pyramids both ways, concatenating input skips.
            dict(progressive="residual", progressive_input="input_skip", progressive_combine="cat"),
            {
                "Upsample_0/Conv2d_0/weight": (3, 3, 32, 32),  # 4x4 -> 8x8 pyramid, fused FIR
                "Upsample_1/Conv2d_0/weight": (3, 3, 32, 16),
                "Combine_0/Conv_0/kernel": (1, 1, 3, 16),
                "Conv_1/kernel": (3, 3, 32, 32),  # first pyramid head keeps C_h
            },
        ),
        (
            # DDPM blocks and plain (non-FIR) resampling convs.
            dict(resblock_type="ddpm", fir=False, progressive_input="residual"),
            {
                "Downsample_0/Conv_0/kernel": (3, 3, 16, 16),  # resamples h
                "Downsample_1/Conv_0/kernel": (3, 3, 3, 16),  # input pyramid
                "Upsample_0/Conv_0/kernel": (3, 3, 32, 32),
                "ResnetBlockDDPMpp_1/NIN_0/W": (16, 32),  # channel-changing NIN shortcut
            },
        ),
    ],
)
def test_unshipped_switches_build_with_expected_layout(overrides, expected):
    model = get_model(_small_config(**overrides))
    shapes = _param_shapes(model, 16)
    for path, shape in expected.items():
        assert shapes[path] == shape, path
    x = jax.ShapeDtypeStruct((2, 16, 16, 3), jnp.float32)
    labels = jax.ShapeDtypeStruct((2,), jnp.float32)
    out = jax.eval_shape(
        lambda p, x, t: model.apply({"params": p}, x, t),
        jax.eval_shape(model.init, jax.random.PRNGKey(0), x, labels)["params"],
        x,
        labels,
    )
    assert out.shape == (2, 16, 16, 3)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("progressive", "skip", "output_skip"),
        ("progressive_input", "res", "input_skip"),
        ("progressive_combine", "mean", "cat"),
        ("resblock_type", "resnet", "biggan"),
        ("embedding_type", "sinusoidal", "positional"),
    ],
)
def test_invalid_switch_lists_choices(field, value, message):
    with pytest.raises(ValueError, match=message):
        get_model(_small_config(**{field: value}))


def test_fourier_embedding_requires_continuous_training():
    config = _small_config()
    config.training.continuous = False
    with pytest.raises(ValueError, match="continuous"):
        get_model(config)
