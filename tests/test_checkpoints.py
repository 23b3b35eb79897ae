"""Loading the original JAX checkpoints and the PyTorch port's checkpoints (issue 3, items 2, 3, 5).

The .pth files for the reader tests are written here without torch: `_torch_save` pickles the
way `torch.save` does, with importable stand-ins for the few torch globals it references.
"""

import collections
import contextlib
import hashlib
import io
import json
import pickle
import shutil
import struct
import sys
import types
import zipfile
from unittest import mock

import jax
import ml_collections
import ml_dtypes
import numpy as np
import pytest
from conftest import FIXTURES
from flax import traverse_util

from score_sde_jax import checkpoints
from score_sde_jax.checkpoints import torch_pickle
from score_sde_jax.models import get_model
from score_sde_jax.models.wideresnet import create_classifier

OFFICIAL = FIXTURES / "official_models"
PORT = FIXTURES / "pytorch_port"
CKPT = OFFICIAL / "ncsnpp_ve_small_ckpt" / "checkpoint_1"
PTH = PORT / "ncsnpp_ve_small.pth"
CKPT_SHA256 = "07ec72c4eca355c2c001501196e4c86dfba043d13facd4f1b244cba152b367da"
PTH_SHA256 = "7b0bd494027da42a7aee9a99cad91e030bcac644e7f61a8c7b3ec1e261244062"


def _fixture(name):
    z = np.load(OFFICIAL / f"{name}.npz")
    config = ml_collections.ConfigDict(json.loads(str(z["config_json"]))["config"])
    tree = traverse_util.unflatten_dict(
        {tuple(k.split("/")): z[k] for k in z.files if k.startswith("params/")}
    )
    return z, config, tree


@pytest.fixture(scope="module")
def ve_small():
    """The ncsnpp_ve_small fixture, its config and a jitted eval-mode apply."""
    z, config, tree = _fixture("ncsnpp_ve_small")
    model = get_model(config)
    apply = jax.jit(lambda params, x, labels: model.apply({"params": params}, x, labels))
    return z, config, tree, apply


@pytest.fixture(scope="module")
def original_ema(ve_small):
    _, config, _, _ = ve_small
    return checkpoints.load_original(CKPT, config)


# ---------------------------------------------------------------------------------------------
# Original JAX checkpoint


def test_fixture_checkpoint_sha256():
    assert hashlib.sha256(CKPT.read_bytes()).hexdigest() == CKPT_SHA256
    assert hashlib.sha256(PTH.read_bytes()).hexdigest() == PTH_SHA256


def test_original_checkpoint_reproduces_fixture_output(ve_small, original_ema):
    z, _, _, apply = ve_small
    params, step = original_ema
    assert step == 50005
    out = apply(params, z["x"], z["labels"])
    np.testing.assert_allclose(out, z["out"], rtol=1e-4, atol=1e-5)
    # GroupNorm leaves arrive in modern flax's (C,) shape.
    assert params["GroupNorm_0"]["scale"].shape == (16,)


def test_original_checkpoint_raw_params_are_ema_plus_offset(ve_small, original_ema):
    _, config, _, _ = ve_small
    raw, step = checkpoints.load_original(CKPT, config, use_ema=False)
    assert step == 50005
    ema_flat = traverse_util.flatten_dict(original_ema[0])
    raw_flat = traverse_util.flatten_dict(raw)
    assert raw_flat.keys() == ema_flat.keys() and len(raw_flat) == 217
    for path, value in raw_flat.items():
        np.testing.assert_array_equal(value, np.asarray(ema_flat[path]) + np.float32(1e-3))


# ---------------------------------------------------------------------------------------------
# PyTorch port checkpoint


def test_pytorch_checkpoint_reproduces_fixture_output(ve_small, original_ema):
    z, config, _, apply = ve_small
    params, step = checkpoints.load_pytorch(PTH, config)
    assert step == 50005
    # The EMA weights are the fixture weights bit for bit, hence equal to the JAX checkpoint's.
    jax.tree.map(np.testing.assert_array_equal, params, original_ema[0])
    out = apply(params, z["x"], z["labels"])
    np.testing.assert_allclose(out, z["out"], rtol=1e-4, atol=1e-5)
    port = np.load(PORT / "ncsnpp_ve_small_pytorch.npz")
    np.testing.assert_allclose(out.transpose(0, 3, 1, 2), port["out_nchw"], rtol=1e-4, atol=1e-5)


def test_pytorch_checkpoint_raw_weights(ve_small, original_ema):
    _, config, _, _ = ve_small
    raw, _ = checkpoints.load_pytorch(PTH, config, use_ema=False)
    ema_flat = traverse_util.flatten_dict(original_ema[0])
    for path, value in traverse_util.flatten_dict(raw).items():
        # The Fourier W is never trained, so the port's raw copy equals the EMA one.
        offset = 0.0 if path[0] == "GaussianFourierProjection_0" else np.float32(1e-3)
        np.testing.assert_array_equal(value, np.asarray(ema_flat[path]) + offset)


# ---------------------------------------------------------------------------------------------
# Totality of the original-layout mapping on every fixture network


@pytest.mark.parametrize(
    "name",
    [
        "ncsnpp_ve_small",
        "ddpmpp_vp_small",
        "ncsnpp_outputskip_small",
        "ddpm_vp_small",
        "ncsnv2_small",
    ],
)
def test_params_from_original_is_total(name):
    z, config, tree = _fixture(name)
    params = checkpoints.params_from_original(config, tree)
    flat = traverse_util.flatten_dict(params)
    given = traverse_util.flatten_dict(tree["params"])
    assert flat.keys() == given.keys()
    for path, value in flat.items():
        # Every leaf carries its own values; only GroupNorm leaves change shape.
        np.testing.assert_array_equal(np.ravel(value), np.ravel(given[path]))
        assert value.shape == given[path].shape or path[-2].startswith("GroupNorm_")
    # Already-modern (C,) GroupNorm shapes are accepted as they are.
    again = checkpoints.params_from_original(config, params)
    jax.tree.map(np.testing.assert_array_equal, again, params)


def test_params_from_original_classifier_norm_names():
    z = np.load(OFFICIAL / "wrn_classifier_small.npz")
    tree = {k.removeprefix("params/"): z[k] for k in z.files if k.startswith("params/")}
    tree = traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in tree.items()})
    params = checkpoints.params_from_original(
        None, tree, model=create_classifier(blocks_per_group=1, channel_multiplier=1)
    )
    assert params["pre-pool-bn"]["scale"].shape == (64,)
    assert params["WideResnetGroup_1"]["WideResnetBlock_0"]["init_bn"]["bias"].shape == (16,)
    assert params["WideResnetGroup_0"]["WideResnetBlock_0"]["bn_2"]["scale"].shape == (16,)


def test_params_from_original_rejects_partial_and_extra_trees():
    _, config, tree = _fixture("ncsnpp_ve_small")
    flat = traverse_util.flatten_dict(tree["params"])
    partial = dict(flat)
    del partial[("Conv_1", "kernel")]
    partial[("Conv_9", "kernel")] = np.zeros((3, 3, 1, 1), np.float32)
    partial[("Dense_0", "bias")] = np.zeros((5,), np.float32)
    with pytest.raises(checkpoints.CheckpointMismatchError) as err:
        checkpoints.params_from_original(config, traverse_util.unflatten_dict(partial))
    message = str(err.value)
    assert "Dense_0/bias: checkpoint (5,), network (64,)" in message
    assert "missing:\n    Conv_1/kernel (3, 3, 16, 3)" in message
    assert "unexpected:\n    Conv_9/kernel (3, 3, 1, 1)" in message
    # A (1, 1, 1, C) kernel is not a GroupNorm leaf: it must not be squeezed.
    ncsnv2 = traverse_util.flatten_dict(_fixture("ncsnv2_small")[2]["params"])
    assert ncsnv2[("ResidualBlock_0", "InstanceNorm2dPlus_0", "alpha")].shape == (1, 1, 1, 16)


# ---------------------------------------------------------------------------------------------
# Format detection and run folders


def test_detect_format_and_load_file(ve_small, original_ema, tmp_path):
    config = ve_small[1]
    assert checkpoints.detect_format(CKPT) == "original"
    assert checkpoints.detect_format(PTH) == "pytorch"
    params, step = checkpoints.load_file(PTH, config)  # auto: the PyTorch reader
    assert step == original_ema[1]
    jax.tree.map(np.testing.assert_array_equal, params, original_ema[0])
    with pytest.raises(checkpoints.CheckpointFormatError, match="load_pytorch"):
        checkpoints.load_file(PTH, config, "original")
    with pytest.raises(ValueError, match="Unknown format 'flax'"):
        checkpoints.load_file(CKPT, config, "flax")
    with pytest.raises(FileNotFoundError):
        checkpoints.detect_format(tmp_path / "checkpoint_3")


def test_run_folder_finds_steps_and_original_files(tmp_path):
    run = checkpoints.RunFolder(tmp_path)
    assert run.checkpoint_dir == str(tmp_path / "checkpoints")
    assert run.steps() == [] and run.find(100, 1) is None
    with pytest.raises(FileNotFoundError, match="pass --config"):
        run.saved_config()
    (tmp_path / "checkpoints").mkdir()
    shutil.copy(CKPT, run.original_file(1))
    assert run.find(100, 1) == str(tmp_path / "checkpoints" / "checkpoint_1")
    assert run.steps() == []


# ---------------------------------------------------------------------------------------------
# Bad checkpoints


def test_missing_file(ve_small, tmp_path):
    config = ve_small[1]
    with pytest.raises(FileNotFoundError, match="No original score_sde checkpoint file"):
        checkpoints.load_original(tmp_path / "checkpoint_26", config)
    with pytest.raises(FileNotFoundError, match="No PyTorch checkpoint file"):
        checkpoints.load_pytorch(tmp_path / "checkpoint_26.pth", config)
    with pytest.raises(checkpoints.CheckpointFormatError, match="is a directory"):
        checkpoints.load_original(CKPT.parent, config)


def test_not_a_checkpoint(ve_small, tmp_path):
    config = ve_small[1]
    noise = tmp_path / "noise"
    noise.write_bytes(np.random.default_rng(0).bytes(4096))
    text = tmp_path / "config.json"
    text.write_text('{"step": 5, "params_ema": {}}')
    not_state = "is not a checkpoint of the original score_sde code"
    with pytest.raises(checkpoints.CheckpointFormatError, match=not_state):
        checkpoints.load_original(noise, config)
    with pytest.raises(checkpoints.CheckpointFormatError, match="looks like a JSON/text file"):
        checkpoints.load_original(text, config)
    with pytest.raises(checkpoints.CheckpointFormatError, match="load_pytorch"):
        checkpoints.load_original(PTH, config)
    with pytest.raises(checkpoints.CheckpointFormatError, match="load_original"):
        checkpoints.load_pytorch(CKPT, config)
    with pytest.raises(torch_pickle.TorchCheckpointError, match="not a PyTorch checkpoint"):
        checkpoints.load_pytorch(noise, config)
    # A msgpack map that is not a State (e.g. a bare parameter dict).
    bare = tmp_path / "params.msgpack"
    bare.write_bytes(b"\x81\xa7Dense_0\x80")
    with pytest.raises(checkpoints.CheckpointFormatError, match="starts with key 'Dense_0'"):
        checkpoints.load_original(bare, config)


def test_truncated_checkpoints(ve_small, tmp_path):
    config = ve_small[1]
    data = CKPT.read_bytes()
    for cut in (len(data) // 2, 9):
        truncated = tmp_path / f"checkpoint_{cut}"
        truncated.write_bytes(data[:cut])
        with pytest.raises(checkpoints.TruncatedCheckpointError, match="truncated or corrupt"):
            checkpoints.load_original(truncated, config)
    truncated_pth = tmp_path / "checkpoint.pth"
    truncated_pth.write_bytes(PTH.read_bytes()[:3_000_000])
    with pytest.raises(torch_pickle.TorchCheckpointError, match="truncated or corrupt"):
        checkpoints.load_pytorch(truncated_pth, config)


def test_checkpoint_of_another_architecture():
    _, ddpmpp_config, _ = _fixture("ddpmpp_vp_small")
    with pytest.raises(checkpoints.CheckpointMismatchError) as err:
        checkpoints.load_original(CKPT, ddpmpp_config)
    message = str(err.value)
    assert "Dense_0/kernel: checkpoint (32, 64), network (16, 64)" in message
    assert "GaussianFourierProjection_0/W (16,)" in message  # unexpected: NCSN++ has Fourier
    assert "Downsample_0/Conv2d_0/weight (3, 3, 3, 16)" in message
    with pytest.raises(checkpoints.CheckpointMismatchError, match="26 layers with parameters"):
        checkpoints.load_pytorch(PTH, ddpmpp_config)


# ---------------------------------------------------------------------------------------------
# The torch-free .pth reader

_MAGIC = 0x1950A86A20F9469CFC6C
_STORAGE_NAMES = {
    np.dtype(np.float32): "FloatStorage",
    np.dtype(np.float64): "DoubleStorage",
    np.dtype(np.float16): "HalfStorage",
    np.dtype(ml_dtypes.bfloat16): "BFloat16Storage",
    np.dtype(np.int64): "LongStorage",
    np.dtype(np.bool_): "BoolStorage",
}


class _Storage:
    def __init__(self, key, data):
        self.key, self.data = key, np.ravel(data)


class _Tensor:
    """Pickles like a torch tensor: `_rebuild_tensor_v2(storage, offset, size, stride, ...)`."""

    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, size, stride, False, collections.OrderedDict())

    def __reduce__(self):
        return sys.modules["torch._utils"]._rebuild_tensor_v2, self.args


class _Global:
    """Pickles as a call ``module.name(*args)`` (a stand-in global, renamed after pickling)."""

    def __init__(self, module, name, *args):
        self.line = f"c{module}\n{name}\n".encode()
        self.args = args

    def __reduce__(self):
        return print, self.args


@contextlib.contextmanager
def _fake_torch():
    """Importable stand-ins for the torch globals `torch.save` writes, for pickle's checks."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise AssertionError("only used for pickling")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch._utils = utils
    for name in _STORAGE_NAMES.values():
        setattr(torch, name, type(name, (), {"__module__": "torch"}))
    with mock.patch.dict(sys.modules, {"torch": torch, "torch._utils": utils}):
        yield torch


def _torch_save(obj, path, legacy=False, byteorder="little", replace=()):
    """Writes ``obj`` as `torch.save` would (zip or legacy format); `_Global`s are renamed."""
    storages = {}
    with _fake_torch() as torch:

        class Pickler(pickle.Pickler):
            def persistent_id(self, o):
                if not isinstance(o, _Storage):
                    return None
                storages[o.key] = o.data
                storage_type = getattr(torch, _STORAGE_NAMES[o.data.dtype])
                pid = ("storage", storage_type, o.key, "cpu", o.data.size)
                return (*pid, None) if legacy else pid

        buffer = io.BytesIO()
        Pickler(buffer, protocol=2, fix_imports=False).dump(obj)
    data = buffer.getvalue()
    for old, new in replace:
        data = data.replace(old, new)
    order = "<" if byteorder == "little" else ">"
    if legacy:
        with open(path, "wb") as f:
            for header in (_MAGIC, 1001, {"protocol_version": 1001, "little_endian": True}):
                pickle.dump(header, f, protocol=2)
            f.write(data)
            pickle.dump(sorted(storages), f, protocol=2)
            for key in sorted(storages):
                f.write(struct.pack("<q", storages[key].size) + storages[key].tobytes())
    else:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("archive/data.pkl", data)
            archive.writestr("archive/byteorder", byteorder)
            archive.writestr("archive/version", "3\n")
            for key, value in storages.items():
                raw = value.astype(value.dtype.newbyteorder(order)).tobytes()
                archive.writestr(f"archive/data/{key}", raw)


def _as_torch(tree):
    """Replaces every array of a loaded checkpoint by a `_Tensor` with its own storage."""
    counter = iter(range(1 << 30))

    def convert(value):
        if isinstance(value, np.ndarray):
            strides = tuple(s // value.itemsize for s in value.strides)
            return _Tensor(_Storage(str(next(counter)), value), 0, value.shape, strides)
        if isinstance(value, dict):
            return type(value)((k, convert(v)) for k, v in value.items())
        if isinstance(value, list | tuple):
            return type(value)(convert(v) for v in value)
        return value

    return convert(tree)


def _assert_same(got, want):
    assert type(got) is type(want), (type(got), type(want))
    if isinstance(want, np.ndarray | np.generic):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
    elif isinstance(want, dict):
        assert list(got) == list(want)
        for key in want:
            _assert_same(got[key], want[key])
    elif isinstance(want, list | tuple):
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            _assert_same(g, w)
    else:
        assert got == want


def _reader_case():
    """A checkpoint exercising views, dtypes and containers, and what `load_pth` must return."""
    base = np.arange(24, dtype=np.float32)
    shared = _Storage("0", base)
    half = np.linspace(-2, 2, 6, dtype=np.float16)
    bf16 = np.array([1.5, -3.0, 0.0078125], dtype=ml_dtypes.bfloat16)
    longs = np.array([-(2**40), 7], dtype=np.int64)
    flags = np.array([True, False, True])
    obj = {
        "model": collections.OrderedDict(
            [
                ("w", _Tensor(shared, 0, (4, 6), (6, 1))),
                ("w_t", _Tensor(shared, 0, (6, 4), (1, 6))),  # transposed view
                ("row", _Tensor(shared, 12, (6,), (1,))),  # offset view
                ("scalar", _Tensor(shared, 5, (), ())),
                ("empty", _Tensor(shared, 0, (0, 3), (3, 1))),
                ("expanded", _Tensor(shared, 1, (5, 6), (0, 1))),  # zero stride (x.expand)
            ]
        ),
        "misc": [
            _Tensor(_Storage("1", half), 0, (2, 3), (3, 1)),
            _Tensor(_Storage("2", bf16), 0, (3,), (1,)),
            _Tensor(_Storage("3", longs), 0, (2,), (1,)),
            _Tensor(_Storage("4", flags), 0, (3,), (1,)),
        ],
        "optimizer": {"param_groups": [{"lr": np.float64(2e-4), "betas": (0.9, 0.999)}]},
        "step": 50005,
        "note": ["text", None, True, 2.5],
    }
    grid = base.reshape(4, 6)
    want = {
        "model": collections.OrderedDict(
            [
                ("w", grid),
                ("w_t", grid.T.copy()),
                ("row", base[12:18]),
                ("scalar", np.array(5.0, np.float32)),
                ("empty", np.zeros((0, 3), np.float32)),
                ("expanded", np.broadcast_to(base[1:7], (5, 6))),
            ]
        ),
        "misc": [half.reshape(2, 3), bf16, longs, flags],
        "optimizer": {"param_groups": [{"lr": np.float64(2e-4), "betas": (0.9, 0.999)}]},
        "step": 50005,
        "note": ["text", None, True, 2.5],
    }
    return obj, want


@pytest.mark.parametrize(
    "fmt", ["zip", "zip_big_endian", "legacy", "zip_numpy1"], ids=lambda fmt: fmt
)
def test_load_pth_rebuilds_tensors_and_containers(tmp_path, fmt):
    obj, want = _reader_case()
    path = tmp_path / "case.pth"
    replace = ()
    if fmt == "zip_numpy1":  # numpy 1.x pickles its scalars as numpy.core.multiarray.scalar
        replace = [(b"numpy._core.multiarray\nscalar", b"numpy.core.multiarray\nscalar")]
    _torch_save(
        obj,
        path,
        legacy=fmt == "legacy",
        byteorder="big" if fmt == "zip_big_endian" else "little",
        replace=replace,
    )
    if fmt == "zip_numpy1":
        assert b"numpy.core.multiarray" in zipfile.ZipFile(path).read("archive/data.pkl")
    got = torch_pickle.load_pth(path)
    _assert_same(got, want)
    assert got["model"]["w_t"].flags.c_contiguous
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(torch_pickle.TorchCheckpointError, match="truncated"):
        torch_pickle.load_pth(truncated)


def test_port_checkpoint_with_numpy_learning_rate(ve_small, original_ema, tmp_path):
    """The unmodified port stores lr as numpy.float64; such files load too."""
    _, config, _, _ = ve_small
    ck = torch_pickle.load_pth(PTH)
    ck["optimizer"]["param_groups"][0]["lr"] = np.float64(2e-4) * np.minimum(50004 / 5000, 1.0)
    path = tmp_path / "checkpoint_1.pth"
    _torch_save(_as_torch(ck), path)
    assert b"multiarray\nscalar" in zipfile.ZipFile(path).read("archive/data.pkl")
    params, step = checkpoints.load_pytorch(path, config)
    assert step == 50005
    jax.tree.map(np.testing.assert_array_equal, params, original_ema[0])
    # A bare state_dict (no EMA, no step) loads only as raw weights.
    bare = tmp_path / "state_dict.pth"
    _torch_save(_as_torch(ck["model"]), bare)
    raw, step = checkpoints.load_pytorch(bare, config, use_ema=False)
    assert step is None and raw["Conv_1"]["bias"].shape == (3,)
    with pytest.raises(checkpoints.CheckpointFormatError, match="pass use_ema=False"):
        checkpoints.load_pytorch(bare, config)


def _payloads(sentinel):
    return {
        "os.system": _Global("os", "system", f"touch {sentinel}"),
        "builtins.eval": _Global(
            "builtins", "eval", f"__import__('pathlib').Path({str(sentinel)!r}).touch()"
        ),
        "subprocess.Popen": _Global("subprocess", "Popen", ["touch", str(sentinel)]),
        "posix.system": _Global("posix", "system", f"touch {sentinel}"),
    }


@pytest.mark.parametrize("nested", [False, True], ids=["top_level", "nested"])
@pytest.mark.parametrize(
    "target", ["os.system", "builtins.eval", "subprocess.Popen", "posix.system"]
)
def test_malicious_pickle_is_refused(ve_small, tmp_path, target, nested):
    sentinel = tmp_path / "pwned"
    payload = _payloads(sentinel)[target]
    tensor = _Tensor(_Storage("0", np.ones(3, np.float32)), 0, (3,), (1,))
    if nested:
        obj = {"model": {"w": tensor}, "ema": {"shadow_params": [tensor, {"x": [(1, payload)]}]}}
    else:
        obj = payload
    path = tmp_path / "evil.pth"
    _torch_save(obj, path, replace=[(b"cbuiltins\nprint\n", payload.line)])
    with pytest.raises(
        checkpoints.UnsafeCheckpointError, match=f"refusing to load global '{target}'"
    ):
        checkpoints.load_pytorch(path, ve_small[1])
    assert not sentinel.exists()
    legacy = tmp_path / "evil_legacy.pth"
    _torch_save(obj, legacy, legacy=True, replace=[(b"cbuiltins\nprint\n", payload.line)])
    with pytest.raises(torch_pickle.UnsafeCheckpointError, match=target):
        torch_pickle.load_pth(legacy)
    assert not sentinel.exists()


def test_malicious_payload_is_live(tmp_path):
    """The eval payload above does run under a plain unpickler, so the refusal is what stops it."""
    sentinel = tmp_path / "pwned"
    payload = _payloads(sentinel)["builtins.eval"]
    data = pickle.dumps({"x": [payload]}, protocol=2, fix_imports=False).replace(
        b"cbuiltins\nprint\n", payload.line
    )
    pickle.loads(data)
    assert sentinel.exists()


def test_other_refusals(tmp_path):
    # numpy scalars only of plain numeric dtypes (a str_ scalar has dtype 'U1').
    path = tmp_path / "str_scalar.pth"
    _torch_save({"lr": np.str_("a")}, path)
    with pytest.raises(torch_pickle.UnsafeCheckpointError, match="numpy dtype 'U1'"):
        torch_pickle.load_pth(path)
    # A TorchScript archive carries code.
    scripted = tmp_path / "scripted.pt"
    shutil.copy(PTH, scripted)
    with zipfile.ZipFile(scripted, "a") as archive:
        archive.writestr("ncsnpp_ve_small/code/__torch__.py", "def f(): pass\n")
    with pytest.raises(torch_pickle.TorchCheckpointError, match="TorchScript"):
        torch_pickle.load_pth(scripted)
