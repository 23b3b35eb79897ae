"""The pretrained models embedded in the package: `load_pretrained(name)` and `save_pretrained`.

The parameters are stored as float16 (half the size; sampling quality is unchanged, see
docs/pretrained.md) and returned as float32.
"""

import dataclasses
import importlib.resources
import json
import pathlib

import jax
import numpy as np
from flax import serialization

from score_sde_jax.checkpoints.run_folder import config_from_json

_PACKAGE = "score_sde_jax.pretrained"


@dataclasses.dataclass(frozen=True)
class Pretrained:
    """An embedded model: its name, config, float32 EMA parameters and provenance (``info``)."""

    name: str
    config: object
    params: dict
    info: dict


def _folder():
    return importlib.resources.files(_PACKAGE)


def names() -> list[str]:
    """The names of the embedded models."""
    return sorted(f.name[: -len(".json")] for f in _folder().iterdir() if f.name.endswith(".json"))


def load_pretrained(name: str) -> Pretrained:
    """The embedded model ``name``.

    Raises:
      FileNotFoundError: no such model (the message lists the available ones).
    """
    if name not in names():
        raise FileNotFoundError(f"No pretrained model {name!r}; available: {', '.join(names())}.")
    info = json.loads((_folder() / f"{name}.json").read_text())
    stored = serialization.msgpack_restore((_folder() / f"{name}.msgpack").read_bytes())
    params = jax.tree.map(lambda a: np.asarray(a, np.float32), stored)
    config = config_from_json(info.pop("config"))
    return Pretrained(name, config, params, info)


def save_pretrained(folder, name: str, config, params, info: dict) -> list[pathlib.Path]:
    """Writes ``<folder>/<name>.msgpack`` (float16 parameters) and ``<name>.json``.

    Returns:
      The two paths.
    """
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    half = jax.tree.map(lambda a: np.asarray(a, np.float16), params)
    weights, meta = folder / f"{name}.msgpack", folder / f"{name}.json"
    weights.write_bytes(serialization.msgpack_serialize(half))
    record = {"config": json.loads(config.to_json_best_effort()), **info}
    meta.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    return [weights, meta]
