"""The eval folder's record of finished units, ``progress.json``, and its atomic file writers.

Every unit's file is written first and then recorded, so a rerun skips what is recorded and
resumes after a preemption; results of other settings in the folder are refused
(docs/evaluation.md#resuming).
"""

import json
import os
from collections.abc import Callable

import jax
import numpy as np
from absl import logging

PROGRESS_FILE = "progress.json"
_PROGRESS_VERSION = 1


def save_npz(path: str, **arrays) -> None:
    """Writes an ``.npz`` atomically (process 0 only)."""
    if jax.process_index() != 0:
        return
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"Not JSON serializable: {type(value).__name__}")


def write_json(path: str, data: dict) -> None:
    """Writes ``data`` as JSON atomically (process 0 only); NumPy scalars become numbers."""
    if jax.process_index() != 0:
        return
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, default=_json_default, allow_nan=True)
    os.replace(tmp, path)


class Progress:
    """The record of finished units in ``<eval_dir>/progress.json``.

    Args:
      eval_dir: the eval folder.
      run_settings: `protocol.settings` of this run.
      callback: ``callback(unit, result)`` after every recorded unit.

    Raises (on creation):
      ValueError: the folder holds results made with other settings.
    """

    def __init__(
        self,
        eval_dir: str,
        run_settings: dict,
        callback: Callable[[str, dict], None] | None = None,
    ):
        self.path = os.path.join(eval_dir, PROGRESS_FILE)
        self.done: dict[str, dict] = {}
        self.settings = dict(run_settings)
        self.callback = callback
        if os.path.isfile(self.path):
            with open(self.path) as f:
                stored = json.load(f)
            # A group absent on one side (e.g. sampling enabled only now) does not conflict.
            for group, value in stored.get("settings", {}).items():
                if group in run_settings and run_settings[group] != value:
                    raise ValueError(
                        f"{eval_dir} holds evaluation results made with different settings "
                        f"({_first_difference(value, run_settings[group], group + '.')}); pass "
                        "another --eval_folder or delete that folder."
                    )
                self.settings.setdefault(group, value)
            self.done = stored.get("done", {})
            if self.done:
                logging.info(
                    "Resuming: %d finished units recorded in %s.", len(self.done), self.path
                )

    def __contains__(self, unit: str) -> bool:
        return unit in self.done

    def __getitem__(self, unit: str) -> dict:
        return self.done[unit]

    def record(self, unit: str, result: dict) -> None:
        """Records a finished unit (its file already written), then calls the callback."""
        self.done[unit] = result
        write_json(
            self.path, {"version": _PROGRESS_VERSION, "settings": self.settings, "done": self.done}
        )
        if self.callback is not None:
            self.callback(unit, result)


def _first_difference(a, b, prefix="") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{prefix}{key}.")
    return f"{prefix.rstrip('.')}: stored {a!r}, now {b!r}"
