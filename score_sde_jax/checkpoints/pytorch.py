"""Checkpoints of the PyTorch port (``score_sde_pytorch``): ``.pth`` files read without torch
through the restricted unpickler `score_sde_jax.checkpoints.torch_pickle`, mapped onto our flax
parameters (names, layouts and EMA: docs/checkpoints.md#file-formats).
"""

import collections
import re
from collections.abc import Mapping

import numpy as np

from score_sde_jax import models
from score_sde_jax.checkpoints import formats, torch_pickle
from score_sde_jax.checkpoints.errors import (
    CheckpointFormatError,
    CheckpointMismatchError,
    fit_params,
)
from score_sde_jax.checkpoints.original import example_shape

__all__ = ["load_pytorch"]

# Buffers of the PyTorch port without a flax counterpart (constructor-computed σ table).
_PORT_BUFFERS = frozenset(["sigmas"])
_LISTED = 5  # module names quoted in a mismatch message


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
    # Conv weights OIHW -> HWIO (both sides cross-correlate, so no flip);
    # Linear (out, in) -> (in, out).
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


def _map_port_state_dict(state_dict, shadow, expected, path):
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
    tops = list(dict.fromkeys(p[0] for p in expected))  # in creation order
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
        _overlay_ema(flat, shadow, entries, top_of, state_dict, flax_path_of, path)
    return flat, unexpected


def _overlay_ema(flat, shadow, entries, top_of, state_dict, flax_path_of, path):
    """Replaces the raw weights in ``flat`` by their EMA copies ``shadow`` (in place).

    The port's EMA keeps only requires_grad parameters, in model.parameters() order (= the
    state_dict order without buffers); the Gaussian-Fourier W is the one frozen parameter.
    """
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


def load_pytorch(path, config, use_ema=True):
    """Loads a checkpoint of the PyTorch port (`score_sde_pytorch`) without torch.

    The port saves ``{'optimizer', 'model', 'ema', 'step'}``; ``'model'`` holds the raw weights
    and ``ema.shadow_params`` the EMA copies of the trainable ones (the frozen Fourier ``W``
    comes from ``'model'``). A bare state_dict (no EMA, no step) loads with ``use_ema=False``
    and step None.

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
    head = formats.read_head(path, "PyTorch checkpoint file (.pth)")
    if formats.sniff(head) == "msgpack_map":
        raise CheckpointFormatError(
            f"{path} looks like a checkpoint of the original JAX code (msgpack); load it with "
            "score_sde_jax.checkpoints.load_original(path, config)."
        )
    state_dict, shadow, step = _split_port_checkpoint(torch_pickle.load_pth(path), path, use_ema)
    expected = models.abstract_params(models.get_model(config), example_shape(config))
    flat, unexpected = _map_port_state_dict(state_dict, shadow, expected, path)
    source = "EMA weights" if use_ema else "raw weights"
    return fit_params(expected, flat, f"PyTorch checkpoint {path} ({source})", unexpected), step
