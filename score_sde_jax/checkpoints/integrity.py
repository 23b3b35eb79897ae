"""Whether the files of a checkpoint item are complete, checked before orbax reads them.

Orbax reads an item with many concurrent tensorstore reads in a short-lived asyncio event loop.
When one read fails (a truncated or overwritten file), the loop is closed while the other reads
are still in flight, and each of them then reports ``RuntimeError: Event loop is closed`` from a
tensorstore thread: dozens of tracebacks for one damaged checkpoint. `check_item` reads the same
OCDBT index and the last byte of every stored value with blocking calls and no event loop, so a
damaged item is refused with one error before orbax touches it (docs/checkpoints.md#damaged-checkpoints).
"""

import json
import os

import tensorstore as ts

from score_sde_jax.checkpoints.errors import CorruptCheckpointError

_OCDBT_MANIFEST = "manifest.ocdbt"
_JSON_FILES = ("_METADATA", "metadata")  # orbax's tree metadata; a JSON item's value


def check_item(path: str) -> None:
    """Raises `CorruptCheckpointError` if the orbax item folder ``path`` is missing or damaged."""
    if not os.path.isdir(path):
        raise CorruptCheckpointError(f"{path} is missing")
    for name in _JSON_FILES:
        if os.path.isfile(os.path.join(path, name)):
            _check_json(os.path.join(path, name))
    if os.path.isfile(os.path.join(path, _OCDBT_MANIFEST)):
        _check_ocdbt(path)


def _check_json(path: str) -> None:
    try:
        with open(path, "rb") as f:
            json.load(f)
    except (OSError, ValueError) as e:
        raise CorruptCheckpointError(f"{path}: not JSON ({e})") from None


def _check_ocdbt(path: str) -> None:
    """Lists the OCDBT database of ``path`` and reads the last byte of each value."""
    spec = {"driver": "ocdbt", "base": f"file://{os.path.abspath(path)}/"}
    try:
        store = ts.KvStore.open(spec).result()
        reads = [store.read(key, byte_range=slice(-1, None)) for key in store.list().result()]
        for read in reads:
            read.result()
    except ValueError as e:  # tensorstore's errors: DATA_LOSS, OUT_OF_RANGE, NOT_FOUND, ...
        reason = str(e).split(" [tensorstore_spec=")[0]
        raise CorruptCheckpointError(f"{path}: {reason}") from None
