"""Loads the original score_sde checkpoints and those of its PyTorch port into our networks.

* `load_original` reads a `checkpoint_<k>` file written by the original JAX code (flax 0.3.1 msgpack
  `State`, docs/checkpoints.md#file-formats) with `msgpack` alone: arrays are decoded from their raw
  bytes for a short list of numeric dtypes, nothing is unpickled or executed.
* `load_pytorch` reads a `.pth` file of the PyTorch port (`yang-song/score_sde_pytorch`) through
  the restricted reader `score_sde_jax.checkpoints.torch_pickle` (no torch needed).
* `params_from_original` maps a parameter tree in the original layout onto ours. Our networks
  reproduce the original module names and creation order, so the only difference is the shape of
  GroupNorm ``scale``/``bias``: (1, 1, 1, C) in flax <= 0.3.5, (C,) now
  (docs/checkpoints.md#file-formats).

Every loader checks that the mapping is total (each network parameter filled exactly once, with
the right shape, and nothing left over) and otherwise lists the offending paths.
"""

import collections
import functools
import os
import re
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import ml_dtypes
import msgpack
import numpy as np
from flax import traverse_util

from score_sde_jax.checkpoints import torch_pickle
from score_sde_jax.checkpoints.torch_pickle import UnsafeCheckpointError
from score_sde_jax.models import get_model

__all__ = [
    "CheckpointError",
    "CheckpointFormatError",
    "CheckpointMismatchError",
    "TruncatedCheckpointError",
    "UnsafeCheckpointError",
    "load_original",
    "load_pytorch",
    "params_from_original",
]


class CheckpointError(ValueError):
    """A checkpoint cannot be used (base class of the errors below)."""


class CheckpointFormatError(CheckpointError):
    """The file is not a checkpoint of the expected kind."""


class TruncatedCheckpointError(CheckpointFormatError):
    """The file ends early (an interrupted download or copy)."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint's parameters do not fit the network built from the config."""


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
# Buffers of the PyTorch port without a flax counterpart (constructor-computed σ table).
_PORT_BUFFERS = frozenset(["sigmas"])
_LISTED = 5  # offending paths quoted per category in a mismatch message

_TORCH_LEGACY_HEAD = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"


# ---------------------------------------------------------------------------------------------
# Parameter trees


def _input_shape(config):
    if config is None:  # convolutional parameter shapes do not depend on the image size
        return (1, 32, 32, 3)
    return (1, config.data.image_size, config.data.image_size, config.data.num_channels)


@functools.lru_cache(maxsize=16)
def _abstract_params(model, input_shape):
    """Parameter shapes of ``model`` and their paths in creation order.

    Returns ``(shapes, order)``: ``{path tuple: ShapeDtypeStruct}`` and the list of paths in the
    order the parameters were created. Flax fills its variable dicts in creation order, but jax
    rebuilds dicts with sorted keys when they leave a transformation, so the order is recorded
    inside the traced function.
    """
    order = []

    def init(rng):
        x = jnp.zeros(input_shape, jnp.float32)
        labels = jnp.zeros(input_shape[:1], jnp.int32)
        variables = model.init({"params": rng, "dropout": rng}, x, labels, train=False)
        order.extend(traverse_util.flatten_dict(variables["params"]))
        return variables["params"]

    shapes = jax.eval_shape(init, jax.random.PRNGKey(0))
    return traverse_util.flatten_dict(shapes), tuple(order)


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


def _fmt(path):
    return "/".join(map(str, path))


def _assemble(expected, given, description, extra_unexpected=()):
    """Checks that ``given`` fills ``expected`` exactly and returns the nested params dict.

    GroupNorm scale/bias stored as (1, 1, 1, C) are reshaped to the network's (C,).
    """
    params, wrong_shape = {}, []
    for path, value in given.items():
        want = expected.get(path)
        if want is None:
            continue
        value = np.asarray(value)
        if (
            value.shape != want.shape
            and _is_groupnorm_leaf(path)
            and value.shape == (1, 1, 1, *want.shape)
        ):
            value = value.reshape(want.shape)
        if value.shape != want.shape:
            wrong_shape.append(f"{_fmt(path)}: checkpoint {value.shape}, network {want.shape}")
        else:
            params[path] = value.astype(want.dtype, copy=False)
    missing = [f"{_fmt(p)} {expected[p].shape}" for p in expected if p not in given]
    unexpected = list(extra_unexpected) + [
        f"{_fmt(p)} {np.shape(v)}" for p, v in given.items() if p not in expected
    ]
    if missing or unexpected or wrong_shape:
        raise CheckpointMismatchError(
            _mismatch_message(description, missing, unexpected, wrong_shape)
        )
    return traverse_util.unflatten_dict({p: jnp.asarray(v) for p, v in params.items()})


def _mismatch_message(description, missing, unexpected, wrong_shape):
    lines = [
        f"{description} does not match the network built from the config: "
        f"{len(wrong_shape)} parameter(s) with another shape, {len(missing)} missing from the "
        f"checkpoint, {len(unexpected)} in the checkpoint but not in the network."
    ]
    for title, items in [
        ("different shape", wrong_shape),
        ("missing", missing),
        ("unexpected", unexpected),
    ]:
        if items:
            more = f" (and {len(items) - _LISTED} more)" if len(items) > _LISTED else ""
            lines.append(f"  {title}{more}:")
            lines.extend(f"    {item}" for item in items[:_LISTED])
    lines.append(
        "Use the config the checkpoint was trained with (model.name, nf, ch_mult, "
        "num_res_blocks, attn_resolutions, data.image_size, ...)."
    )
    return "\n".join(lines)


def params_from_original(config, tree, *, model=None):
    """Maps a parameter tree in the original code's layout onto our network's parameters.

    The original names parameters by flax auto-naming (docs/checkpoints.md#file-formats), which our
    modules reproduce; only GroupNorm ``scale``/``bias`` (modules ``GroupNorm_k``, and
    ``init_bn``/``bn_k``/``pre-pool-bn`` in the classifier) are reshaped from flax 0.3's
    (1, 1, 1, C) to (C,). Trees that already use (C,) are accepted too.

    Args:
      config: config with the original keys; the network is ``models.get_model(config)`` and the
        dummy input takes ``config.data.image_size``/``num_channels``. May be None when
        ``model`` is given (then a 32×32×3 input is used to trace the shapes).
      tree: nested mapping, e.g. ``params_ema`` of an original checkpoint; a single top-level
        ``'params'`` wrapper (as in ``{'params': ...}`` variable dicts) is removed.
      model: a Flax module to use instead of ``get_model(config)`` (e.g. the classifier).

    Returns:
      The nested ``params`` dict of jax arrays for ``model.apply({'params': params}, ...)``.

    Raises:
      CheckpointMismatchError: the tree does not fill the network exactly (lists the first
        parameters with another shape, missing or unexpected, with their shapes).
    """
    if model is None:
        if config is None:
            raise ValueError("params_from_original needs a config or a model.")
        model = get_model(config)
    expected, _ = _abstract_params(model, _input_shape(config))
    if set(tree) == {"params"} and not any(p[0] == "params" for p in expected):
        tree = tree["params"]
    return _assemble(expected, _flatten(tree), "The parameter tree")


# ---------------------------------------------------------------------------------------------
# Checking the file


def _sniff(head):
    """Guesses the kind of a file from its first bytes."""
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06") or head.startswith(_TORCH_LEGACY_HEAD):
        return "torch"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickle"
    if head and (0x80 <= head[0] <= 0x8F or head[0] in (0xDE, 0xDF)):
        return "msgpack_map"
    if head.lstrip()[:1] in (b"{", b"["):
        return "json"
    return "unknown"


def _open_checkpoint(path, what):
    """Checks that ``path`` is a file and returns its first bytes."""
    path = os.fspath(path)
    if os.path.isdir(path):
        found = sorted(os.listdir(path))[:10]
        raise CheckpointFormatError(
            f"{path} is a directory; pass the path of one {what} inside it (found: {found})."
        )
    if not os.path.exists(path):
        raise FileNotFoundError(f"No {what} at {path!r}: check the path (and download the file).")
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        raise TruncatedCheckpointError(f"{path} is empty; download the {what} again.")
    return head


# ---------------------------------------------------------------------------------------------
# Original JAX checkpoints (flax 0.3.1 msgpack)


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


def _read_state(path, wanted):
    """Reads the fields ``wanted`` of an original `State` file; other fields are skipped."""
    what = "original score_sde checkpoint file (checkpoint_<k>)"
    head = _open_checkpoint(path, what)
    kind = _sniff(head)
    not_state = (
        f"{path} is not a checkpoint of the original score_sde code: expected a flax msgpack "
        "`State` (a file named checkpoint_<k> from the original's checkpoints/ folder)"
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

    Layout (docs/checkpoints.md#file-formats): the file is one msgpack map with the `State` fields
    ``step``, ``optimizer`` (``target`` = raw parameters, ``state`` = Adam moments), ``lr``,
    ``model_state``, ``ema_rate``, ``params_ema`` and ``rng``; arrays are msgpack extension objects
    of type 1. Only the parameter tree that is asked for is decoded; the rest is skipped.

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
    expected, _ = _abstract_params(get_model(config), _input_shape(config))
    return _assemble(expected, _flatten(tree), f"Checkpoint {path} ({source})"), step


# ---------------------------------------------------------------------------------------------
# PyTorch port checkpoints


def _split_port_checkpoint(ck, path, use_ema):
    """Returns (state_dict, shadow_params or None, step) of a port checkpoint."""
    if isinstance(ck, Mapping) and "model" in ck:
        state_dict, step = ck["model"], ck.get("step")
        shadow = None
        if use_ema:
            ema = ck.get("ema")
            if not isinstance(ema, Mapping) or not isinstance(ema.get("shadow_params"), list):
                raise CheckpointFormatError(
                    f"{path} has no 'ema' entry with 'shadow_params'; pass use_ema=False to load "
                    "the raw weights."
                )
            shadow = ema["shadow_params"]
    elif isinstance(ck, Mapping) and ck and all(isinstance(v, np.ndarray) for v in ck.values()):
        if use_ema:
            raise CheckpointFormatError(
                f"{path} holds a bare state_dict (no EMA weights, no step); pass use_ema=False "
                "to load it."
            )
        state_dict, step, shadow = ck, None, None
    else:
        keys = list(ck)[:10] if isinstance(ck, Mapping) else type(ck).__name__
        raise CheckpointFormatError(
            f"{path} is not a checkpoint of the PyTorch port: expected a dict with 'model', "
            f"'ema', 'optimizer' and 'step' (from its utils.save_checkpoint), got {keys}."
        )
    if not isinstance(state_dict, Mapping):
        raise CheckpointFormatError(f"{path}: 'model' is not a state_dict.")
    if step is not None:
        step = int(np.asarray(step))
    return state_dict, shadow, step


def _flax_leaf(torch_leaf, flax_leaves):
    if torch_leaf == "weight" and "kernel" in flax_leaves:
        return "kernel"
    if torch_leaf == "weight" and "scale" in flax_leaves:
        return "scale"
    return torch_leaf


def _to_flax_layout(value, flax_leaf):
    # Conv weights OIHW -> HWIO (both sides cross-correlate, so no flip); Linear (out, in) -> (in, out).
    if flax_leaf in ("kernel", "weight") and value.ndim == 4:
        return value.transpose(2, 3, 1, 0)
    if flax_leaf == "kernel" and value.ndim == 2:
        return value.T
    return value


def _check_creation_order(names):
    """Raises unless every ``Class_k`` index grows along ``names`` (the creation order).

    Gaps are fine (modules without parameters); a smaller k after a larger one means the order
    was lost.
    """
    last = {}
    for name in names:
        match = re.fullmatch(r"(.+)_(\d+)", name)
        if match:
            if int(match[2]) <= last.get(match[1], -1):
                raise RuntimeError(
                    f"Could not recover the creation order of the network's modules ({names}); "
                    "the flax version in use may order parameter dicts differently."
                )
            last[match[1]] = int(match[2])


def _map_port_state_dict(state_dict, shadow, expected, order, path):
    """Maps the port's ``all_modules.<i>.<...>`` names onto our flax paths.

    The port registers the top-level layers in ``all_modules`` in the order the original flax
    code creates them (and uses them in that order in its forward pass); inside the blocks its
    attribute names are the flax auto-names. So the i-th parameterised entry of ``all_modules``
    is our i-th top-level module with parameters, in creation order. Returns the flat dict and
    the torch names that have no flax counterpart.
    """
    state_dict = collections.OrderedDict(
        (k.removeprefix("module."), np.asarray(v)) for k, v in state_dict.items()
    )
    entries, unexpected = [], []
    for name in state_dict:
        match = re.fullmatch(r"all_modules\.(\d+)\.(.+)", name)
        if match:
            entries.append((int(match[1]), tuple(match[2].split(".")), name))
        elif name not in _PORT_BUFFERS:
            unexpected.append(f"{name} {state_dict[name].shape} (PyTorch name)")
    tops = list(dict.fromkeys(p[0] for p in order))
    _check_creation_order(tops)
    indices = sorted({i for i, _, _ in entries})
    if len(indices) != len(tops):
        raise CheckpointMismatchError(
            f"PyTorch checkpoint {path} does not match the network built from the config: its "
            f"all_modules list has {len(indices)} layers with parameters, the network has "
            f"{len(tops)} top-level modules with parameters (first ones: {tops[:_LISTED]}). "
            + (
                "load_pytorch maps the port's networks that keep their layers in all_modules "
                "(ncsnpp, ddpm); this state_dict starts with "
                f"{list(state_dict)[:_LISTED]}. "
                if not indices
                else ""
            )
            + "Use the config the checkpoint was trained with."
        )
    top_of = dict(zip(indices, tops, strict=True))
    leaves = collections.defaultdict(set)
    for p in expected:
        leaves[p[:-1]].add(p[-1])

    flat, flax_path_of = {}, {}
    for i, parts, name in entries:
        module = (top_of[i], *parts[:-1])
        flax_path = (*module, _flax_leaf(parts[-1], leaves[module]))
        flax_path_of[name] = flax_path
        flat[flax_path] = _to_flax_layout(state_dict[name], flax_path[-1])

    if shadow is not None:
        # The port's EMA keeps only requires_grad parameters, in model.parameters() order (= the
        # state_dict order without buffers); the Gaussian-Fourier W is the one frozen parameter.
        trainable = [
            name
            for i, parts, name in entries
            if not (top_of[i].startswith("GaussianFourierProjection_") and parts[-1] == "W")
        ]
        if len(shadow) != len(trainable):
            raise CheckpointMismatchError(
                f"PyTorch checkpoint {path}: ema.shadow_params has {len(shadow)} tensors but its "
                f"state_dict has {len(trainable)} trainable parameters; the file is inconsistent."
            )
        for k, (name, value) in enumerate(zip(trainable, shadow, strict=True)):
            value = np.asarray(value)
            if value.shape != state_dict[name].shape:
                raise CheckpointMismatchError(
                    f"PyTorch checkpoint {path}: ema.shadow_params[{k}] has shape {value.shape} "
                    f"but the matching parameter {name} has {state_dict[name].shape}."
                )
            flat[flax_path_of[name]] = _to_flax_layout(value, flax_path_of[name][-1])
    return flat, unexpected


def load_pytorch(path, config, use_ema=True):
    """Loads a checkpoint of the PyTorch port (`score_sde_pytorch`) without torch.

    Layout and name mapping as in ``fixtures/pytorch_port/README.md`` (shared reference folder).

    The port saves ``{'optimizer', 'model', 'ema', 'step'}`` with ``torch.save``; ``'model'`` is
    the state_dict of ``DataParallel(net)`` (names start with ``module.``) and
    ``ema.shadow_params`` lists the EMA copies of the trainable parameters in
    ``model.parameters()`` order (the frozen Fourier ``W`` is not among them and comes from
    ``'model'``). Layouts are converted to flax: conv weights OIHW -> HWIO, linear weights
    transposed, GroupNorm ``weight`` -> ``scale``; NIN and Fourier parameters are identical.
    A bare state_dict (no EMA, no step) loads with ``use_ema=False`` and step None.

    Args:
      path: the `.pth` file (e.g. ``checkpoint_8.pth``).
      config: the config the checkpoint was trained with (original keys).
      use_ema: the EMA weights (used for sampling and evaluation) if True, the raw ones otherwise.

    Returns:
      ``(params, step)``: our nested params dict (jax arrays) and the training step.

    Raises:
      FileNotFoundError: no such file.
      UnsafeCheckpointError: the pickle references a global outside the tensor/container
        allow-list (see `score_sde_jax.checkpoints.torch_pickle`).
      CheckpointFormatError: not a PyTorch-port checkpoint (an original JAX checkpoint: the
        message points to `load_original`).
      torch_pickle.TorchCheckpointError: the .pth file is corrupt or truncated.
      CheckpointMismatchError: the checkpoint belongs to another architecture.
    """
    what = "PyTorch checkpoint file (.pth)"
    head = _open_checkpoint(path, what)
    if _sniff(head) == "msgpack_map":
        raise CheckpointFormatError(
            f"{path} looks like a checkpoint of the original JAX code (msgpack); load it with "
            "score_sde_jax.checkpoints.load_original(path, config)."
        )
    state_dict, shadow, step = _split_port_checkpoint(torch_pickle.load_pth(path), path, use_ema)
    expected, order = _abstract_params(get_model(config), _input_shape(config))
    flat, unexpected = _map_port_state_dict(state_dict, shadow, expected, order, path)
    source = "EMA weights" if use_ema else "raw weights"
    return _assemble(expected, flat, f"PyTorch checkpoint {path} ({source})", unexpected), step
