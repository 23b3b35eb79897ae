"""Why a checkpoint cannot be used: the error classes, and the check that a parameter set fits
the network built from the config, reporting what is missing, extra or of another shape."""

import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from score_sde_jax.checkpoints.torch_pickle import TorchCheckpointError, UnsafeCheckpointError

__all__ = [
    "CheckpointError",
    "CheckpointFormatError",
    "CheckpointMismatchError",
    "TorchCheckpointError",
    "TruncatedCheckpointError",
    "UnsafeCheckpointError",
    "check_fit",
    "fit_params",
]

_LISTED = 5  # offending paths quoted per category in a mismatch message


class CheckpointError(ValueError):
    """A checkpoint cannot be used (base class of the errors below)."""


class CheckpointFormatError(CheckpointError):
    """The file is not a checkpoint of the expected kind."""


class TruncatedCheckpointError(CheckpointFormatError):
    """The file ends early (an interrupted download or copy)."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint's parameters do not fit the network built from the config."""


def _fmt(path):
    return "/".join(map(str, path))


def check_fit(expected, given, description, extra_unexpected=()):
    """Raises `CheckpointMismatchError` unless ``given`` has exactly the paths and shapes of
    ``expected`` (flat ``{path tuple: array or ShapeDtypeStruct}`` dicts).

    ``extra_unexpected``: descriptions of further checkpoint entries that have no place in the
    network (e.g. PyTorch names that map to no flax path).
    """
    wrong_shape = [
        f"{_fmt(p)}: checkpoint {tuple(np.shape(v))}, network {tuple(expected[p].shape)}"
        for p, v in given.items()
        if p in expected and tuple(np.shape(v)) != tuple(expected[p].shape)
    ]
    missing = [f"{_fmt(p)} {tuple(expected[p].shape)}" for p in expected if p not in given]
    unexpected = list(extra_unexpected) + [
        f"{_fmt(p)} {tuple(np.shape(v))}" for p, v in given.items() if p not in expected
    ]
    if missing or unexpected or wrong_shape:
        raise CheckpointMismatchError(
            _mismatch_message(description, missing, unexpected, wrong_shape)
        )


def fit_params(expected, given, description, extra_unexpected=()):
    """`check_fit`, then the nested params dict of ``given`` as jax arrays of ``expected``'s
    dtypes."""
    check_fit(expected, given, description, extra_unexpected)
    return traverse_util.unflatten_dict(
        {
            p: jnp.asarray(np.asarray(v).astype(expected[p].dtype, copy=False))
            for p, v in given.items()
        }
    )


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
