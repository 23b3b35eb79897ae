"""Weights of the FID Inception-v3: locating, converting and loading them
(docs/original_code.md#training-evaluation-and-data).

The weights are the standard FID file ``pt_inception-2015-12-05-6726825d.pth`` (pytorch-fid's
port of TensorFlow's 2015 Inception graph). They are read from a local file only; nothing is ever
downloaded, and a missing file stops FID with a message saying where to put it.

Where the file is looked up (first match): an explicit path (``--inception_weights``), the
environment variable ``$SCORE_SDE_INCEPTION_WEIGHTS``, then
``~/.cache/score_sde_jax/pt_inception-2015-12-05-6726825d.pth``. Either the ``.pth`` itself
(read without torch by `score_sde_jax.checkpoints.torch_pickle.load_pth`) or an ``.npz`` written by this
module's converter may be used::

    python -m score_sde_jax.evaluation.inception_weights SRC.pth DST.npz

Name mapping (PyTorch state dict -> Flax variables of `inception.FIDInceptionV3`), for each of
the 94 ``BasicConv2d`` modules ``<m>`` (e.g. ``Mixed_6b.branch7x7_2``, path ``Mixed_6b/
branch7x7_2``) and the classifier:

==============================  =========================================  ==================
PyTorch                         Flax                                       transform
==============================  =========================================  ==================
``<m>.conv.weight`` (OIHW)      ``params/<m>/conv/kernel`` (HWIO)          transpose(2,3,1,0)
``<m>.bn.weight``               ``params/<m>/bn/scale``
``<m>.bn.bias``                 ``params/<m>/bn/bias``
``<m>.bn.running_mean``         ``batch_stats/<m>/bn/mean``
``<m>.bn.running_var``          ``batch_stats/<m>/bn/var``
``<m>.bn.num_batches_tracked``  (ignored; may be absent)
``fc.weight`` (out, in)         ``params/fc/kernel`` (in, out)              transpose
``fc.bias``                     ``params/fc/bias``
==============================  =========================================  ==================

Every other name, a missing name or a wrong shape is an error: the file must be exactly this
network.
"""

import functools
import hashlib
import os
import pathlib
import re
import sys
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, logging

from score_sde_jax.checkpoints.torch_pickle import load_pth
from score_sde_jax.errors import DataError, InputError, UserError
from score_sde_jax.evaluation import inception

WEIGHTS_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_ENV_VAR = "SCORE_SDE_INCEPTION_WEIGHTS"
# Where pytorch-fid publishes the file; only quoted in the error message, never fetched.
WEIGHTS_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + WEIGHTS_FILENAME
)
NPZ_FORMAT = "score_sde_jax/fid_inception_v3/1"

_TORCH_LEAF_TO_FLAX = {
    "conv.weight": ("params", ("conv", "kernel")),
    "bn.weight": ("params", ("bn", "scale")),
    "bn.bias": ("params", ("bn", "bias")),
    "bn.running_mean": ("batch_stats", ("bn", "mean")),
    "bn.running_var": ("batch_stats", ("bn", "var")),
    "fc.weight": ("params", ("kernel",)),
    "fc.bias": ("params", ("bias",)),
}
_FLAX_LEAF_TO_TORCH = {
    (c, p[-1]): leaf.split(".")[-1] for leaf, (c, p) in _TORCH_LEAF_TO_FLAX.items()
}
# Axis permutations PyTorch -> Flax and back.
_TO_FLAX_AXES = {"conv.weight": (2, 3, 1, 0), "fc.weight": (1, 0)}
_TO_TORCH_AXES = {"conv.weight": (3, 2, 0, 1), "fc.weight": (1, 0)}


def default_weights_path() -> pathlib.Path:
    """``$SCORE_SDE_INCEPTION_WEIGHTS`` if set, else ``~/.cache/score_sde_jax/<WEIGHTS_FILENAME>``."""
    env = os.environ.get(WEIGHTS_ENV_VAR)
    if env:
        return pathlib.Path(env).expanduser()
    return pathlib.Path("~/.cache/score_sde_jax").expanduser() / WEIGHTS_FILENAME


def resolve_weights_path(path: str | os.PathLike | None = None) -> pathlib.Path:
    """The weight file to use: ``path`` if given, else `default_weights_path`.

    Raises:
      FileNotFoundError: the file does not exist; the message says where to put it.
    """
    resolved = pathlib.Path(path).expanduser() if path else default_weights_path()
    if not resolved.is_file():
        raise InputError(
            f"FID Inception weights not found at {resolved}. FID, KID and IS need the standard "
            f"FID Inception-v3 weights {WEIGHTS_FILENAME} (published at {WEIGHTS_URL}); this "
            "package never downloads them. Put the file at "
            f"{pathlib.Path('~/.cache/score_sde_jax').expanduser() / WEIGHTS_FILENAME}, or set "
            f"${WEIGHTS_ENV_VAR} to its path, or pass --inception_weights=PATH (a converted .npz "
            "from `python -m score_sde_jax.evaluation.inception_weights SRC.pth DST.npz` works "
            "too)."
        )
    return resolved


def _split_torch_name(name: str) -> tuple[tuple[str, ...], str]:
    """'Mixed_6b.branch7x7_2.bn.weight' -> (('Mixed_6b', 'branch7x7_2'), 'bn.weight')."""
    if name.startswith("fc."):
        return ("fc",), name
    parts = name.split(".")
    return tuple(parts[:-2]), ".".join(parts[-2:])


def torch_name_to_flax(name: str) -> tuple[str, tuple[str, ...]] | None:
    """Maps a state-dict name to ``(collection, path)`` in the Flax variables; None if ignored.

    Raises:
      KeyError: the name is not one of the FID Inception's.
    """
    module, leaf = _split_torch_name(name)
    if leaf == "bn.num_batches_tracked":
        return None
    # fc.* leaves belong to the classifier only, conv/bn leaves to a named BasicConv2d only.
    if leaf not in _TORCH_LEAF_TO_FLAX or leaf.startswith("fc.") != (module == ("fc",)):
        raise KeyError(name)
    collection, leaf_path = _TORCH_LEAF_TO_FLAX[leaf]
    return collection, module + leaf_path


def flax_to_torch_name(collection: str, path: tuple[str, ...]) -> str:
    """Inverse of `torch_name_to_flax`."""
    if path[0] == "fc":
        return "fc." + _FLAX_LEAF_TO_TORCH[(collection, path[-1])]
    return ".".join(path[:-1] + (_FLAX_LEAF_TO_TORCH[(collection, path[-1])],))


def _torch_leaf(name: str) -> str:
    return _split_torch_name(name)[1]


@functools.cache
def _expected_shapes() -> dict[tuple[str, tuple[str, ...]], tuple[int, ...]]:
    """(collection, path) -> shape of every variable of `FIDInceptionV3`, by abstract init."""
    abstract = jax.eval_shape(
        inception.FIDInceptionV3().init,
        jax.random.PRNGKey(0),
        jax.ShapeDtypeStruct(
            (1, inception.INCEPTION_SIZE, inception.INCEPTION_SIZE, 3), jnp.float32
        ),
    )
    flat = {}
    for key_path, leaf in jax.tree_util.tree_leaves_with_path(abstract):
        keys = tuple(k.key for k in key_path)
        flat[(keys[0], keys[1:])] = tuple(leaf.shape)
    return flat


def _torch_shape(name: str, flax_shape: tuple[int, ...]) -> tuple[int, ...]:
    axes = _TO_TORCH_AXES.get(_torch_leaf(name))
    if axes is None or len(axes) != len(flax_shape):
        return flax_shape
    return tuple(flax_shape[a] for a in axes)


def _describe(key: tuple[str, tuple[str, ...]]) -> str:
    """PyTorch name of a variable, or its '/'-joined path when it has none."""
    try:
        return flax_to_torch_name(*key)
    except KeyError:
        return "/".join((key[0],) + key[1])


def _unflatten(flat: Mapping[tuple[str, tuple[str, ...]], np.ndarray]) -> dict:
    variables: dict = {}
    for (collection, path), value in flat.items():
        node = variables.setdefault(collection, {})
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return variables


def _check_complete(flat: Mapping[tuple[str, tuple[str, ...]], np.ndarray], source: str) -> None:
    expected = _expected_shapes()
    extra = sorted(_describe(k) for k in flat if k not in expected)
    if extra:
        raise DataError(
            f"{source} has {len(extra)} entries that are not FID Inception-v3 weights, e.g. "
            f"{extra[:5]}."
        )
    missing = [flax_to_torch_name(*k) for k in expected if k not in flat]
    if missing:
        raise DataError(
            f"{source} lacks {len(missing)} FID Inception weights, e.g. {missing[:5]}: it is not "
            f"the FID Inception-v3 ({WEIGHTS_FILENAME})."
        )
    wrong = [
        f"{flax_to_torch_name(*k)}: {_torch_shape(flax_to_torch_name(*k), flat[k].shape)} "
        f"(expected {_torch_shape(flax_to_torch_name(*k), shape)})"
        for k, shape in expected.items()
        if flat[k].shape != shape
    ]
    if wrong:
        raise DataError(f"{source} has weights of the wrong shape (PyTorch layout): {wrong[:5]}.")


def convert_state_dict(state_dict: Mapping[str, np.ndarray], source: str = "state dict") -> dict:
    """Converts the FID Inception's PyTorch state dict to Flax variables of `FIDInceptionV3`.

    Args:
      state_dict: name -> array, the names and PyTorch layouts of ``fid_inception_v3()`` (the
        module tree of the real weight file); ``*.num_batches_tracked`` is optional and ignored.
      source: description used in error messages.

    Returns:
      ``{'params': ..., 'batch_stats': ...}`` nested dicts of float32 NumPy arrays.

    Raises:
      ValueError: unknown, missing or misshapen entries (the file is some other network).
    """
    if any(name.startswith("blocks.") for name in state_dict):
        raise DataError(
            f"{source} is a state dict of pytorch-fid's InceptionV3 wrapper (names 'blocks.*'), "
            f"which has no 'fc' classifier (no logits / Inception Score). Use the Inception3 "
            f"weight file {WEIGHTS_FILENAME} instead."
        )
    flat = {}
    unknown = []
    for name, value in state_dict.items():
        try:
            target = torch_name_to_flax(name)
        except KeyError:
            unknown.append(name)
            continue
        if target is None:
            continue
        value = np.asarray(value, dtype=np.float32)
        axes = _TO_FLAX_AXES.get(_torch_leaf(name))
        if axes is not None:
            if value.ndim != len(axes):
                raise DataError(
                    f"{source}: {name} has shape {value.shape}, expected rank {len(axes)}."
                )
            value = np.ascontiguousarray(value.transpose(axes))
        flat[target] = value
    if unknown:
        raise DataError(
            f"{source} has {len(unknown)} entries that are not FID Inception-v3 weights, e.g. "
            f"{unknown[:5]}."
        )
    _check_complete(flat, source)
    return _unflatten(flat)


def _find_state_dict(obj, source: str) -> Mapping[str, np.ndarray]:
    """The state dict inside a loaded checkpoint (bare, or under 'state_dict' / 'model')."""
    if isinstance(obj, Mapping):
        if any(isinstance(v, np.ndarray) for v in obj.values()):
            return obj
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                return _find_state_dict(obj[key], source)
    raise DataError(f"{source} does not contain a PyTorch state dict of the FID Inception-v3.")


def _sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_hash_prefix(path: pathlib.Path, digest: str) -> None:
    # PyTorch-hub names carry the first hex digits of the file's SHA-256 (``name-<hash>.pth``).
    match = re.search(r"-([0-9a-f]{8,})\.pth$", path.name)
    if match and not digest.startswith(match.group(1)):
        logging.warning(
            "%s: SHA-256 %s does not start with the %s in its name; the file may be corrupt or "
            "not the published FID weights (FID values would not be comparable).",
            path,
            digest,
            match.group(1),
        )


def _load_pth(path: pathlib.Path) -> tuple[dict, str]:
    """(variables, SHA-256 of the file)."""
    digest = _sha256(path)
    _check_hash_prefix(path, digest)
    return convert_state_dict(_find_state_dict(load_pth(path), str(path)), str(path)), digest


def _load_npz(path: pathlib.Path) -> dict:
    with np.load(path) as npz:
        if str(npz.get("__format__", "")) != NPZ_FORMAT:
            raise DataError(
                f"{path} is not a converted FID Inception file (no __format__ == {NPZ_FORMAT!r}); "
                "convert the .pth with `python -m score_sde_jax.evaluation.inception_weights`."
            )
        flat = {}
        for key in npz.files:
            if key.startswith("__"):
                continue
            collection, *path_keys = key.split("/")
            flat[(collection, tuple(path_keys))] = npz[key].astype(np.float32)
    _check_complete(flat, str(path))
    return _unflatten(flat)


def load_inception_params(path: str | os.PathLike | None = None) -> dict:
    """Loads the FID Inception-v3 variables from a ``.pth`` weight file or a converted ``.npz``.

    Args:
      path: the file; None means `default_weights_path` (``$SCORE_SDE_INCEPTION_WEIGHTS`` or
        ``~/.cache/score_sde_jax/pt_inception-2015-12-05-6726825d.pth``).

    Returns:
      ``{'params': ..., 'batch_stats': ...}`` for `inception.FIDInceptionV3` /
      `inception.make_inception_fn`.

    Raises:
      FileNotFoundError: no file there (the message says where to put it).
      ValueError: the file is not the FID Inception-v3.
    """
    resolved = resolve_weights_path(path)
    if resolved.suffix == ".npz":
        return _load_npz(resolved)
    return _load_pth(resolved)[0]


def save_converted(path: str | os.PathLike, variables: Mapping, source_sha256: str = "") -> None:
    """Writes variables as an ``.npz`` (keys ``params/Mixed_5b/branch1x1/conv/kernel``, ...)."""
    arrays = {"__format__": np.array(NPZ_FORMAT), "__source_sha256__": np.array(source_sha256)}
    for key_path, leaf in jax.tree_util.tree_leaves_with_path(variables):
        arrays["/".join(k.key for k in key_path)] = np.asarray(leaf, np.float32)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def convert(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Converts the ``.pth`` weight file ``src`` to this package's ``.npz`` at ``dst``."""
    variables, digest = _load_pth(resolve_weights_path(src))
    save_converted(dst, variables, source_sha256=digest)


def main(argv):
    if len(argv) != 3:
        raise app.UsageError(
            "usage: python -m score_sde_jax.evaluation.inception_weights SRC.pth DST.npz"
        )
    try:
        convert(argv[1], argv[2])
    except UserError as error:
        sys.exit(f"error: {error}")
    logging.info("Wrote %s", argv[2])


if __name__ == "__main__":
    app.run(main)
