"""Checkpoints of the original JAX code: flax 0.3.1 msgpack ``checkpoint_<k>`` files of its
training `State` (docs/checkpoints.md#file-formats), read with `msgpack` alone (arrays decoded
from raw bytes for a fixed list of numeric dtypes; nothing is unpickled or executed).

Our networks reproduce the original's module names and creation order, so the one difference is
the shape of GroupNorm ``scale``/``bias``: (1, 1, 1, C) in flax <= 0.3.5, (C,) now.
"""

import os
import re
from collections.abc import Mapping

import ml_dtypes
import msgpack
import numpy as np

from score_sde_jax import models
from score_sde_jax.checkpoints import formats
from score_sde_jax.checkpoints.errors import (
    CheckpointError,
    CheckpointFormatError,
    TruncatedCheckpointError,
    fit_params,
)

__all__ = ["load_original", "params_from_original"]

# Modules whose scale/bias the original code stored as (1, 1, 1, C): nn.GroupNorm everywhere,
# named like batch norms in the noise-conditional classifier.
_GROUPNORM_MODULE = re.compile(r"GroupNorm_\d+|init_bn|bn_\d+|pre-pool-bn")
# Fields of the original `models/utils.State`, in file order.
_STATE_FIELDS = ("step", "optimizer", "lr", "model_state", "ema_rate", "params_ema", "rng")
# dtype names flax's msgpack encoding may carry (`ndarray.dtype.name`).
_MSGPACK_DTYPES = {
    name: np.dtype(name)
    for name in [
        "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
        "float16", "float32", "float64", "complex64", "complex128",
    ]
} | {"bfloat16": np.dtype(ml_dtypes.bfloat16)}  # fmt: skip
# flax.serialization's msgpack extension codes.
_EXT_NDARRAY, _EXT_COMPLEX, _EXT_NPSCALAR = 1, 2, 3


# ---------------------------------------------------------------------------------------------
# Parameter trees


def example_shape(config) -> tuple[int, ...]:
    """One input image of ``config`` (H, W, C); 32×32×3 without a config (convolutional
    parameter shapes do not depend on the image size)."""
    if config is None:
        return (32, 32, 3)
    return (config.data.image_size, config.data.image_size, config.data.num_channels)


def _flatten(tree, prefix=()):
    flat = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, (*prefix, key)))
        else:
            flat[(*prefix, key)] = value
    return flat


def _is_groupnorm_leaf(path):
    return (
        len(path) >= 2 and path[-1] in ("scale", "bias") and _GROUPNORM_MODULE.fullmatch(path[-2])
    )


def _fit_original_tree(expected, tree, description):
    """`fit_params` of an original-layout tree, GroupNorm (1, 1, 1, C) leaves reshaped to (C,)."""
    flat = {}
    for path, value in _flatten(tree).items():
        value = np.asarray(value)
        want = expected.get(path)
        if want is not None and _is_groupnorm_leaf(path) and value.shape == (1, 1, 1, *want.shape):
            value = value.reshape(want.shape)
        flat[path] = value
    return fit_params(expected, flat, description)


def params_from_original(config, tree, *, model=None):
    """Maps a parameter tree in the original code's layout onto our network's parameters.

    Only GroupNorm ``scale``/``bias`` (modules ``GroupNorm_k``, and ``init_bn``/``bn_k``/
    ``pre-pool-bn`` in the classifier) are reshaped from flax 0.3's (1, 1, 1, C) to (C,); trees
    that already use (C,) are accepted too.

    Args:
      config: config with the original keys (network and input size). May be None when
        ``model`` is given (then a 32×32×3 input traces the shapes).
      tree: nested mapping, e.g. ``params_ema`` of an original checkpoint; a single top-level
        ``'params'`` wrapper (as in ``{'params': ...}`` variable dicts) is removed.
      model: a Flax module to use instead of ``models.get_model(config)`` (e.g. the classifier).

    Returns:
      The nested ``params`` dict of jax arrays for ``model.apply({'params': params}, ...)``.

    Raises:
      CheckpointMismatchError: the tree does not fill the network exactly (lists the first
        parameters with another shape, missing or unexpected, with their shapes).
    """
    if model is None:
        if config is None:
            raise ValueError("params_from_original needs a config or a model.")
        model = models.get_model(config)
    expected = models.abstract_params(model, example_shape(config))
    if set(tree) == {"params"} and not any(p[0] == "params" for p in expected):
        tree = tree["params"]
    return _fit_original_tree(expected, tree, "The parameter tree")


# ---------------------------------------------------------------------------------------------
# The msgpack file


def _decode_ndarray(data):
    """flax 0.3.1 array encoding: msgpack ``[shape, dtype name, raw little-endian C bytes]``."""
    try:
        shape, dtype_name, buffer = msgpack.unpackb(data, raw=False)
    except (ValueError, TypeError, msgpack.UnpackException):
        raise CheckpointFormatError("corrupt array record in the msgpack checkpoint") from None
    if dtype_name not in _MSGPACK_DTYPES:
        raise CheckpointFormatError(
            f"array of dtype {dtype_name!r} in the checkpoint; allowed: {sorted(_MSGPACK_DTYPES)}"
        )
    dtype = _MSGPACK_DTYPES[dtype_name].newbyteorder("<")
    if (
        not isinstance(shape, list)
        or not all(isinstance(n, int) and n >= 0 for n in shape)
        or not isinstance(buffer, bytes)
        or len(buffer) != int(np.prod(shape)) * dtype.itemsize
    ):
        raise CheckpointFormatError("corrupt array record in the msgpack checkpoint")
    return np.frombuffer(buffer, dtype).reshape(shape)


def _ext_hook(code, data):
    if code == _EXT_NDARRAY:
        return _decode_ndarray(data)
    if code == _EXT_NPSCALAR:
        return _decode_ndarray(data)[()]
    if code == _EXT_COMPLEX:
        real, imag = msgpack.unpackb(data)
        return complex(real, imag)
    raise CheckpointFormatError(f"unknown msgpack extension type {code} in the checkpoint")


def _check_kind(path, not_state):
    """Raises unless ``path`` starts like a msgpack map (naming the format it looks like)."""
    kind = formats.sniff(
        formats.read_head(path, "original score_sde checkpoint file (checkpoint_<k>)")
    )
    if kind == "torch":
        raise CheckpointFormatError(
            f"{path} is a PyTorch checkpoint (torch.save file), not one of the original JAX "
            "code; load it with score_sde_jax.checkpoints.load_pytorch(path, config)."
        )
    if kind == "json":
        raise CheckpointFormatError(f"{not_state}; this looks like a JSON/text file.")
    if kind != "msgpack_map":
        raise CheckpointFormatError(f"{not_state}.")


def _read_state(path, wanted):
    """Reads the fields ``wanted`` of an original `State` file; other fields are skipped."""
    not_state = (
        f"{path} is not a checkpoint of the original score_sde code: expected a flax msgpack "
        "`State` (a file named checkpoint_<k> from the original's checkpoints/ folder)"
    )
    _check_kind(path, not_state)
    size = os.path.getsize(path)
    state, keys = {}, []
    with open(path, "rb") as f:
        unpacker = msgpack.Unpacker(
            f, raw=False, ext_hook=_ext_hook, max_buffer_size=max(size, 1 << 20)
        )
        try:
            for i in range(unpacker.read_map_header()):
                key = unpacker.unpack()
                if i == 0 and key not in _STATE_FIELDS:
                    raise CheckpointFormatError(
                        f"{not_state}; its top-level map starts with key {key!r}, a State has "
                        f"{list(_STATE_FIELDS)}."
                    )
                keys.append(key)
                if key in wanted:
                    state[key] = unpacker.unpack()
                else:
                    unpacker.skip()
        except msgpack.OutOfData:
            raise TruncatedCheckpointError(
                f"{path} is truncated or corrupt (the data ends after {size} bytes, inside the "
                "State); download or copy the checkpoint again."
            ) from None
        except (ValueError, msgpack.UnpackException) as err:
            if isinstance(err, CheckpointError):
                raise
            raise CheckpointFormatError(f"{not_state}; msgpack decoding failed: {err}") from None
        trailing = size - unpacker.tell()
    if trailing:
        raise CheckpointFormatError(f"{not_state}; {trailing} bytes follow the top-level map.")
    absent = [k for k in wanted if k not in keys]
    if absent:
        raise CheckpointFormatError(f"{not_state}; it lacks {absent} (it has {keys}).")
    return state


def load_original(path, config, use_ema=True):
    """Loads a checkpoint written by the original JAX code (flax 0.3.1 msgpack `State`).

    Only the ``step`` and the parameter tree asked for are decoded; the other `State` fields
    are skipped.

    Args:
      path: the checkpoint file, e.g. ``exp/ve/cifar10_ncsnpp_continuous/checkpoint_24``.
      config: the config the checkpoint was trained with (original keys).
      use_ema: return the EMA parameters ``params_ema`` (what the original samples and evaluates
        with) if True, the raw ``optimizer.target`` otherwise.

    Returns:
      ``(params, step)``: our nested params dict (jax arrays) and the training step (int).

    Raises:
      FileNotFoundError: no such file.
      CheckpointFormatError: not an original `State` checkpoint (e.g. a PyTorch file: the message
        points to `load_pytorch`).
      TruncatedCheckpointError: the file ends early.
      CheckpointMismatchError: the checkpoint belongs to another architecture (lists the first
        mismatching paths and shapes).
    """
    field = "params_ema" if use_ema else "optimizer"
    state = _read_state(path, wanted=("step", field))
    tree = state[field]
    if not use_ema:
        tree = tree.get("target") if isinstance(tree, Mapping) else None
    if not isinstance(tree, Mapping):
        raise CheckpointFormatError(f"{path}: the State holds no parameter tree under {field!r}.")
    try:
        step = int(np.asarray(state["step"]))
    except (TypeError, ValueError):
        raise CheckpointFormatError(
            f"{path}: the State's step {state['step']!r} is not a number."
        ) from None
    source = "params_ema" if use_ema else "optimizer.target"
    expected = models.abstract_params(models.get_model(config), example_shape(config))
    return _fit_original_tree(expected, tree, f"Checkpoint {path} ({source})"), step
