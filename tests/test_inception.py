"""The Flax FID Inception-v3 reproduces pytorch-fid on tests/fixtures/fid_inception (random
weights regenerated from the fixture's recipe and loaded through the real file's name mapping)."""

import hashlib
import json
import logging
import struct
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import FIXTURES

from score_sde_jax.evaluation import inception, inception_weights

TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def fixture():
    with np.load(FIXTURES / "fid_inception" / "fid_inception_random.npz") as npz:
        return {key: npz[key] for key in npz.files}


def _regenerate_state_dict(names, shapes):
    # The fixture README's recipe: one seeded normal draw per entry, scaled by entry kind.
    state_dict = {}
    for i, name in enumerate(names):
        shape = tuple(shapes[name])
        if name.endswith(".num_batches_tracked"):
            state_dict[name] = np.zeros(shape, np.int64)
            continue
        z = np.random.default_rng(1000 + i).standard_normal(shape)
        if name.endswith(".conv.weight"):
            value = z * np.sqrt(2.0 / np.prod(shape[1:]))
        elif name.endswith(".bn.weight"):
            value = 1.0 + 0.1 * z
        elif name.endswith(".bn.running_var"):
            value = 1.0 + 0.1 * np.abs(z)
        elif name == "fc.weight":
            value = z * np.sqrt(1.0 / 2048)
        else:  # bn.bias, bn.running_mean, fc.bias
            value = 0.1 * z
        state_dict[name] = value.astype(np.float32)
    return state_dict


@pytest.fixture(scope="module")
def state_dict(fixture):
    names = [str(n) for n in fixture["state_dict_names"]]
    result = _regenerate_state_dict(names, json.loads(str(fixture["state_dict_shapes"])))
    digest = hashlib.sha256(b"".join(result[n].tobytes() for n in names)).hexdigest()
    assert digest == str(fixture["weights_sha256"])
    return result


@pytest.fixture(scope="module")
def variables(state_dict):
    return inception_weights.convert_state_dict(state_dict)


@pytest.fixture(scope="module")
def outputs(fixture, variables):
    # make_inception_fn compiles the network once per batch size: the 1- and 2-image batches are
    # both zero-padded to the test session's 4 devices, so all three share one compilation.
    fn = inception.make_inception_fn(variables)
    inputs = {
        "32": fixture["inputs_32_nhwc"],  # float in [0, 1]
        "64": fixture["inputs_64_uint8_nhwc"],  # uint8
        "512": fixture["inputs_512_uint8_nhwc"],
    }
    return {size: fn(images) for size, images in inputs.items()}


@pytest.mark.parametrize("size", ["32", "64", "512"])
def test_pool3_and_logits_match_pytorch_fid(fixture, outputs, size):
    out = outputs[size]
    num_images = len(fixture[f"pool3_{size}"])
    assert out["pool_3"].shape == (num_images, 2048)
    assert out["logits"].shape == (num_images, 1008)
    for name, key in (("pool3", "pool_3"), ("logits", "logits")):
        np.testing.assert_allclose(out[key], fixture[f"{name}_{size}"], **TOL)
        np.testing.assert_allclose(out[key], fixture[f"{name}_{size}_f64"], **TOL)


def test_resize_matches_torch_bilinear_without_antialiasing(fixture):
    up = inception.preprocess(jnp.asarray(fixture["inputs_32_nhwc"][:1]))[0]
    np.testing.assert_allclose(up, fixture["resized_input_32_img0_nhwc"], rtol=0, atol=1e-6)
    down = np.asarray(inception.preprocess(jnp.asarray(fixture["inputs_512_uint8_nhwc"]))[0])
    crops = [down[:16, :16], down[-16:, -16:], down[142:158, 142:158]]
    np.testing.assert_allclose(crops, fixture["resized_input_512_crops_nhwc"], rtol=0, atol=1e-6)


def test_resize_matrix_rows_are_two_tap_interpolations():
    matrix = inception.bilinear_resize_matrix(512, 299)
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0, rtol=0, atol=1e-6)
    assert (np.count_nonzero(matrix, axis=1) <= 2).all()  # no antialiasing filter when shrinking
    np.testing.assert_array_equal(inception.bilinear_resize_matrix(299, 299), np.eye(299))


def test_network_rejects_unresized_input(variables):
    with pytest.raises(ValueError, match="preprocess"):
        inception.FIDInceptionV3().apply(variables, jnp.zeros((1, 32, 32, 3)))


def test_variables_follow_pytorch_layouts(state_dict, variables):
    kernel = variables["params"]["Mixed_6b"]["branch7x7_2"]["conv"]["kernel"]
    weight = state_dict["Mixed_6b.branch7x7_2.conv.weight"]
    assert weight.shape == (128, 128, 1, 7) and kernel.shape == (1, 7, 128, 128)
    np.testing.assert_array_equal(kernel[0, 5, 3, 9], weight[9, 3, 0, 5])
    np.testing.assert_array_equal(variables["params"]["fc"]["kernel"], state_dict["fc.weight"].T)
    np.testing.assert_array_equal(
        variables["batch_stats"]["Mixed_7c"]["branch_pool"]["bn"]["var"],
        state_dict["Mixed_7c.branch_pool.bn.running_var"],
    )
    num_entries = sum(1 for _ in jax.tree_util.tree_leaves(variables))
    assert num_entries == 566 - 94  # every entry but num_batches_tracked


def test_converter_rejects_other_networks(fixture, state_dict):
    without_counter = {k: v for k, v in state_dict.items() if "num_batches_tracked" not in k}
    inception_weights.convert_state_dict(without_counter)  # optional entries
    missing = dict(state_dict)
    del missing["Mixed_7b.branch3x3_2a.bn.running_mean"]
    with pytest.raises(ValueError, match=r"Mixed_7b\.branch3x3_2a\.bn\.running_mean"):
        inception_weights.convert_state_dict(missing)
    extra = dict(state_dict, **{"AuxLogits.fc.weight": np.zeros((1000, 768), np.float32)})
    with pytest.raises(ValueError, match="AuxLogits"):
        inception_weights.convert_state_dict(extra)
    stock = dict(state_dict)
    stock["fc.weight"], stock["fc.bias"] = stock["fc.weight"][:1000], stock["fc.bias"][:1000]
    with pytest.raises(ValueError, match=r"fc.weight: \(1000, 2048\) \(expected \(1008, 2048\)\)"):
        inception_weights.convert_state_dict(stock)
    wrapper_names = json.loads(str(fixture["wrapper_to_inception3_names"]))
    wrapper = {w: state_dict[n] for w, n in wrapper_names.items()}
    with pytest.raises(ValueError, match="no 'fc'"):
        inception_weights.convert_state_dict(wrapper)


def _write_torch_zip(path, state_dict):
    """A minimal `torch.save` zip file (protocol-2 pickle of an OrderedDict of tensors)."""
    ops = bytearray(b"\x80\x02")

    def global_(module, name):
        ops.extend(f"c{module}\n{name}\n".encode())

    def text(value):
        data = value.encode()
        ops.extend(b"X" + struct.pack("<I", len(data)) + data)

    def int_tuple(values):
        ops.extend(b"(" + b"".join(b"J" + struct.pack("<i", v) for v in values) + b"t")

    records = {}
    global_("collections", "OrderedDict")
    ops.extend(b")R(")
    for key, (name, value) in enumerate(state_dict.items()):
        storage = {np.dtype(np.float32): "FloatStorage", np.dtype(np.int64): "LongStorage"}
        text(name)
        global_("torch._utils", "_rebuild_tensor_v2")
        ops.extend(b"((")
        text("storage")
        global_("torch", storage[value.dtype])
        text(str(key))
        text("cpu")
        ops.extend(b"J" + struct.pack("<i", value.size) + b"tQ")  # persistent storage record
        ops.extend(b"J" + struct.pack("<i", 0))
        int_tuple(value.shape)
        int_tuple([s // value.itemsize for s in value.strides])
        ops.extend(b"\x89")
        global_("collections", "OrderedDict")
        ops.extend(b")RtR")
        records[f"archive/data/{key}"] = np.ascontiguousarray(value).tobytes()
    ops.extend(b"u.")
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", bytes(ops))
        archive.writestr("archive/byteorder", "little")
        for name, data in records.items():
            archive.writestr(name, data)
        archive.writestr("archive/version", "3\n")


def test_pth_file_and_converted_npz_load_the_same_variables(
    tmp_path, monkeypatch, caplog, state_dict, variables
):
    pth = tmp_path / "weights.pth"
    _write_torch_zip(pth, state_dict)
    from_pth = inception_weights.load_inception_params(pth)
    jax.tree_util.tree_map(np.testing.assert_array_equal, from_pth, variables)
    npz = tmp_path / "converted.npz"
    inception_weights.main(["convert", str(pth), str(npz)])
    monkeypatch.setenv(inception_weights.WEIGHTS_ENV_VAR, str(npz))
    from_npz = inception_weights.load_inception_params()  # via the environment variable
    jax.tree_util.tree_map(np.testing.assert_array_equal, from_npz, variables)
    # A hash in the name that the content does not match is reported, not ignored.
    renamed = pth.rename(tmp_path / "pt_inception-2015-12-05-00000000.pth")
    with caplog.at_level(logging.WARNING):
        inception_weights.load_inception_params(renamed)
    assert "does not start with the 00000000" in caplog.text


def test_missing_weight_file_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.delenv(inception_weights.WEIGHTS_ENV_VAR, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    expected = tmp_path / ".cache" / "score_sde_jax" / "pt_inception-2015-12-05-6726825d.pth"
    with pytest.raises(FileNotFoundError) as error:
        inception_weights.load_inception_params()
    message = str(error.value)
    for needle in (str(expected), "SCORE_SDE_INCEPTION_WEIGHTS", "--inception_weights", "never"):
        assert needle in message
    monkeypatch.setenv(inception_weights.WEIGHTS_ENV_VAR, str(tmp_path / "elsewhere.pth"))
    with pytest.raises(FileNotFoundError, match="elsewhere.pth"):
        inception_weights.load_inception_params()
