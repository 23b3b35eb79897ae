"""Orbax checkpoints of a training run (docs/checkpoints.md#run-folders).

A checkpoint is one orbax step directory ``<directory>/<step>/`` (the directory is
`RunFolder.checkpoint_dir`) with the items

* ``state``: ``{"train_state": TrainState, "rng": uint32[2]}`` — parameters, EMA parameters,
  optimizer state and step, plus the run's base PRNG key (all randomness is folded from it);
* ``train_iter`` / ``eval_iter``: the grain data-iterator positions (one JSON file per process);
* ``config``: the run's config as JSON, for people and for tools that only get a workdir.

Kept checkpoints: the ``max_to_keep`` most recent ones plus every multiple of ``keep_period``
(``training.snapshot_freq``). Saves are asynchronous; a save refuses non-finite parameters,
so no checkpoint on disk ever holds NaNs. `restore_latest` falls back to the previous
checkpoint, with a log line, when the latest one cannot be read, and raises when none can.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

STATE = "state"
TRAIN_ITER = "train_iter"
EVAL_ITER = "eval_iter"
CONFIG = "config"
_ITERATORS = (TRAIN_ITER, EVAL_ITER)


class NonFiniteStateError(FloatingPointError):
    """Raised instead of writing a checkpoint whose arrays hold NaN or infinity."""


@jax.jit
def _all_finite(tree) -> jax.Array:
    leaves = [
        jnp.all(jnp.isfinite(x))
        for x in jax.tree.leaves(tree)
        if jnp.issubdtype(x.dtype, jnp.inexact)
    ]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def all_finite(tree) -> bool:
    """Whether every floating-point leaf of ``tree`` is finite (one device reduction)."""
    return bool(_all_finite(tree))


def _abstract_leaf(x):
    """Shape, dtype and sharding to restore ``x`` into (replicated if ``x`` has no sharding)."""
    if isinstance(x, jax.ShapeDtypeStruct) and x.sharding is None:
        mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ("data",))
        replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated)
    return ocp.utils.to_shape_dtype_struct(x)


def _grain_args(iterators: dict, save: bool) -> dict:
    import grain  # noqa: PLC0415 (grain is only needed when iterators are checkpointed)

    make = grain.checkpoint.CheckpointSave if save else grain.checkpoint.CheckpointRestore
    return {name: make(it) for name, it in iterators.items() if it is not None}


def _agree(flag: bool) -> bool:
    """True on every process iff ``flag`` is True on every process."""
    if jax.process_count() == 1:
        return flag
    return bool(np.all(multihost_utils.process_allgather(np.int32(flag))))


class CheckpointManager:
    """Saves and restores training checkpoints under ``directory`` (see the module docstring).

    Args:
      directory: the checkpoint folder, normally `RunFolder.checkpoint_dir` (which opens it).
      max_to_keep: how many of the most recent checkpoints to keep.
      keep_period: checkpoints whose step is a multiple of this are never deleted (None: off).
      async_save: write in a background thread (the device-to-host copy is synchronous).
    """

    def __init__(self, directory, *, max_to_keep=2, keep_period=None, async_save=True):
        self.directory = os.fspath(directory)
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep,
                keep_period=keep_period,
                create=True,
                cleanup_tmp_directories=True,
                enable_async_checkpointing=async_save,
            ),
        )

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step, train_state, rng, *, iterators=None, config=None, wait=False):
        """Writes checkpoint ``step`` unless its parameters are non-finite.

        Args:
          step: the number of optimizer updates ``train_state`` has seen.
          train_state: the `TrainState` pytree (sharded or host arrays).
          rng: the run's base PRNG key (uint32[2]).
          iterators: ``{"train_iter": it, "eval_iter": it}`` grain iterators (None entries skip).
          config: the run's ConfigDict, stored as JSON.
          wait: block until the write has finished (used before exiting).

        Raises:
          NonFiniteStateError: some floating-point array of ``train_state`` is NaN or infinite.
        """
        if not all_finite(train_state):
            raise NonFiniteStateError(
                f"Refusing to write checkpoint {step}: the training state holds NaN or inf."
            )
        items = {STATE: ocp.args.StandardSave({"train_state": train_state, "rng": rng})}
        items.update(_grain_args(iterators or {}, save=True))
        if config is not None:
            items[CONFIG] = ocp.args.JsonSave(json.loads(config.to_json_best_effort()))
        self._manager.save(int(step), args=ocp.args.Composite(**items), force=True)
        if wait:
            self._manager.wait_until_finished()

    def _restore(self, step, abstract, iterators, initial_states):
        step_dir = os.path.join(self.directory, str(step))
        items = {STATE: ocp.args.StandardRestore(abstract)}
        present = dict(iterators)
        own_file = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
        for name in list(present):
            item_dir = os.path.join(step_dir, name)
            if not os.path.isdir(item_dir):
                logging.warning(
                    "Checkpoint %d has no %s item; that data iterator starts from the beginning.",
                    step,
                    name,
                )
                present.pop(name).set_state(initial_states[name])
            elif not os.path.exists(os.path.join(item_dir, own_file)):
                # Written by another number of processes. The input pipeline's position is the
                # global step, the same in every process's file, so process 0's file serves.
                files = sorted(f for f in os.listdir(item_dir) if f.startswith("process_0-of-"))
                if not files:
                    raise FileNotFoundError(f"No data-iterator state in {item_dir}.")
                logging.warning(
                    "Checkpoint %d was written by another number of processes; %s resumes from %s.",
                    step,
                    name,
                    files[0],
                )
                with open(os.path.join(item_dir, files[0])) as f:
                    present.pop(name).set_state(json.load(f))
        items.update(_grain_args(present, save=False))
        restored = self._manager.restore(step, args=ocp.args.Composite(**items))
        return restored[STATE]

    def restore_latest(self, train_state, rng, *, iterators=None):
        """Restores the newest readable checkpoint into the layout of ``train_state``.

        Checkpoints are tried newest first. When one fails to load (or holds non-finite values)
        but an older one loads, the failed ones are logged and renamed to ``<step>.corrupt``.
        When none loads, nothing is renamed and an error is raised: a failure common to every
        checkpoint (say, a config whose network differs from the saved one) is not corruption.

        Args:
          train_state: a `TrainState`, concrete or abstract (`jax.eval_shape`), whose shapes,
            dtypes and shardings the restored arrays take; leaves without a sharding are
            restored replicated over all devices.
          rng: a PRNG key of the saved key's shape and dtype.
          iterators: grain iterators to set to their saved positions (restored in place).

        Returns:
          ``(train_state, rng, step)``, or ``None`` if the directory holds no checkpoint.

        Raises:
          RuntimeError: there are checkpoints but none of them can be restored.
        """
        abstract = jax.tree.map(_abstract_leaf, {"train_state": train_state, "rng": rng})
        iterators = {k: v for k, v in (iterators or {}).items() if v is not None}
        initial_states = {k: v.get_state() for k, v in iterators.items()}
        failed = []
        for step in reversed(self.all_steps()):
            try:
                restored = self._restore(step, abstract, iterators, initial_states)
                ok = all_finite(restored["train_state"])
                error = None if ok else "it holds NaN or inf"
            except Exception as e:  # noqa: BLE001 (any read failure means "unusable checkpoint")
                ok, error = False, f"{type(e).__name__}: {e}"
            if _agree(ok):
                for bad_step, _ in failed:
                    self._set_aside(bad_step)
                return restored["train_state"], restored["rng"], step
            error = error or "unreadable on another process"
            logging.warning(
                "Checkpoint %d in %s is unusable (%s); falling back to the previous checkpoint.",
                step,
                self.directory,
                error,
            )
            failed.append((step, error))
        if failed:
            raise RuntimeError(
                f"None of the checkpoints {sorted(s for s, _ in failed)} in {self.directory} can "
                f"be restored; the newest failed with: {failed[0][1]}. Check that the config "
                "matches the one the run was started with, or use a new workdir."
            )
        return None

    def _set_aside(self, step):
        """Renames an unusable step directory so that it is neither loaded nor overwritten."""
        if jax.process_index() == 0:
            path = os.path.join(self.directory, str(step))
            target, n = f"{path}.corrupt", 1
            while os.path.exists(target):
                target, n = f"{path}.corrupt{n}", n + 1
            os.replace(path, target)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"checkpoint_set_aside_{step}")
        self._manager.reload()

    def wait_until_finished(self):
        self._manager.wait_until_finished()

    def close(self):
        self._manager.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
