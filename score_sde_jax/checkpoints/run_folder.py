"""The work directory of a training run, and the ``--checkpoint`` flag of the tools.

`RunFolder` owns the layout: ``<workdir>/checkpoints/<step>/`` orbax steps (items in
`score_sde_jax.checkpoints.manager`), the config saved with a step, and the original code's
``checkpoint_<k>`` files placed in the same folder. `load_checkpoint_params` resolves
``--checkpoint`` (a step of the run, or a foreign file loaded by `load_file`) to EMA parameters.
Layout and formats: docs/checkpoints.md#run-folders.
"""

import dataclasses
import json
import os

import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging
from flax import traverse_util
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from score_sde_jax import distributed, models
from score_sde_jax.checkpoints import formats, integrity
from score_sde_jax.checkpoints.errors import (
    CheckpointMismatchError,
    CorruptCheckpointError,
    check_fit,
)
from score_sde_jax.checkpoints.manager import (
    CONFIG,
    STATE,
    CheckpointManager,
    check_fits,
    saved_tree,
)
from score_sde_jax.checkpoints.original import load_original
from score_sde_jax.checkpoints.pytorch import load_pytorch
from score_sde_jax.data import pipeline
from score_sde_jax.errors import InputError, UsageError

__all__ = [
    "LoadedCheckpoint",
    "RunFolder",
    "checkpoint_tag",
    "config_from_json",
    "load_checkpoint_params",
    "load_file",
    "locate_checkpoint",
    "resolve_config",
]

_CHECKPOINTS = "checkpoints"  # the checkpoint folder inside a workdir
_LOADERS = {"original": load_original, "pytorch": load_pytorch}


def config_from_json(data) -> ml_collections.ConfigDict:
    """A ConfigDict from a JSON string or decoded dict (lists become tuples, as in the configs)."""
    if isinstance(data, str):
        data = json.loads(data)

    def convert(node):
        if isinstance(node, dict):
            return {k: convert(v) for k, v in node.items()}
        if isinstance(node, list):
            return tuple(convert(v) for v in node)
        return node

    return ml_collections.ConfigDict(convert(data))


def load_file(path, config, fmt: str = "auto", use_ema: bool = True):
    """Loads a checkpoint file of the original code or of its PyTorch port.

    Args:
      path: the file.
      config: the config it was trained with (original keys).
      fmt: 'original', 'pytorch' or 'auto' (`formats.detect_format`).
      use_ema: the EMA weights if True, the raw ones otherwise.

    Returns:
      ``(params, step)`` as `load_original` / `load_pytorch` return them.
    """
    if fmt == "auto":
        fmt = formats.detect_format(path)
    if fmt not in _LOADERS:
        raise UsageError(f"Unknown format {fmt!r}; valid: auto, {', '.join(formats.FORMATS)}.")
    return _LOADERS[fmt](path, config, use_ema=use_ema)


class RunFolder:
    """The work directory ``workdir`` of a training run (see the module docstring)."""

    def __init__(self, workdir):
        self.workdir = os.fspath(workdir)
        self.checkpoint_dir = os.path.join(self.workdir, _CHECKPOINTS)

    def manager(self, **options) -> CheckpointManager:
        """The `CheckpointManager` of `checkpoint_dir` (``options``: ``max_to_keep``,
        ``keep_period``, ``async_save``); it creates the folder."""
        return CheckpointManager(self.checkpoint_dir, **options)

    def steps(self) -> list[int]:
        """The steps of the finished (committed) checkpoints, ascending."""
        if not os.path.isdir(self.checkpoint_dir):
            return []
        return sorted(ocp.utils.checkpoint_steps(self.checkpoint_dir))

    def step_dir(self, step: int) -> str:
        return os.path.join(self.checkpoint_dir, str(step))

    def original_file(self, k: int) -> str:
        """Where evaluation looks for the original code's ``checkpoint_<k>``."""
        return os.path.join(self.checkpoint_dir, f"checkpoint_{k}")

    def find(self, step: int, k: int) -> int | str | None:
        """``step`` if that checkpoint is finished, else the path of the original code's
        ``checkpoint_<k>`` (`original_file`) if it exists, else None. Evaluation's checkpoint
        index k is the step k * snapshot_freq of a run, or the file k of the original."""
        if step in self.steps():
            return step
        return self.original_file(k) if os.path.isfile(self.original_file(k)) else None

    def check_step(self, step: int) -> None:
        """Raises `CorruptCheckpointError` if checkpoint ``step``'s state or config is damaged."""
        integrity.check_item(os.path.join(self.step_dir(step), STATE))
        if os.path.isdir(os.path.join(self.step_dir(step), CONFIG)):
            integrity.check_item(os.path.join(self.step_dir(step), CONFIG))

    def usable_step(self, step: int | None = None) -> int:
        """The checkpoint to read: ``step`` (which must exist and be intact), or by default the
        newest intact one, with a warning naming the damaged newer ones it passes over.

        Read-only: damaged checkpoints are reported, not renamed (training sets them aside).

        Raises:
          InputError: no checkpoints, or no checkpoint ``step`` (the message lists the steps).
          CorruptCheckpointError: checkpoint ``step`` is damaged, or all of them are (the
            message lists the intact ones).
        """
        steps = self.steps()
        if step is not None and step not in steps:
            raise InputError(
                f"No checkpoint for step {step} in {self.checkpoint_dir}; available steps: {steps}",
                _pick_a_step(steps),
            )
        if not steps:
            raise InputError(
                f"No checkpoints in {self.checkpoint_dir}",
                "train first, or pass --checkpoint=PATH of a checkpoint file",
            )
        damaged = {}
        for candidate in [step] if step is not None else reversed(steps):
            try:
                self.check_step(candidate)
            except CorruptCheckpointError as e:
                damaged[candidate] = e.message
                continue
            if damaged:
                logging.warning(
                    "Damaged checkpoint(s) %s in %s (%s); using checkpoint %d, the newest intact "
                    "one.",
                    sorted(damaged),
                    self.checkpoint_dir,
                    damaged[max(damaged)],
                    candidate,
                )
            return candidate
        intact = [s for s in self.intact_steps() if s not in damaged]
        raise CorruptCheckpointError(
            f"Checkpoint {max(damaged)} in {self.checkpoint_dir} is damaged "
            f"({damaged[max(damaged)]})",
            f"use an intact one: {_pick_a_step(intact)}"
            if intact
            else "no checkpoint of this run is intact; train again in a new --workdir",
        )

    def intact_steps(self) -> list[int]:
        """The steps whose checkpoints pass `check_step`, ascending."""
        intact = []
        for step in self.steps():
            try:
                self.check_step(step)
            except CorruptCheckpointError:
                continue
            intact.append(step)
        return intact

    def saved_config(self, step: int | None = None) -> ml_collections.ConfigDict:
        """The config saved with checkpoint ``step`` (default: the newest intact one).

        Raises:
          FileNotFoundError: no checkpoint (or none with a saved config); the message says to
            pass ``--config``.
          InputError, CorruptCheckpointError: as `usable_step`.
        """
        if not self.steps():
            raise InputError(
                f"No config saved with the checkpoints in {self.checkpoint_dir} (no checkpoints)",
                "pass --config=PATH (the config the model was trained with)",
            )
        step = self.usable_step(step)
        path = os.path.join(self.step_dir(step), CONFIG)
        if not os.path.isdir(path):
            raise InputError(
                f"No config saved with checkpoint {step} in {self.checkpoint_dir}",
                "pass --config=PATH (the config the model was trained with)",
            )
        return config_from_json(ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(path))

    def restore_ema_params(self, config, step: int, mesh: jax.sharding.Mesh):
        """The EMA parameters of checkpoint ``step``, replicated over ``mesh``.

        Only the EMA leaves are read (orbax partial restore), so neither the optimizer state nor
        the device count of the training run matter.

        Raises:
          FileNotFoundError: no such step (the message lists the available ones).
          CorruptCheckpointError: the checkpoint is damaged.
          CheckpointMismatchError: the checkpoint's network differs from ``config``'s.
        """
        path = os.path.join(self.step_dir(self.usable_step(step)), STATE)
        saved = traverse_util.flatten_dict(saved_tree(path)["train_state"]["ema_params"])
        model = models.get_model(config)
        expected = models.abstract_params(model, tuple(pipeline.image_shape(config)))
        check_fit(expected, saved, f"Checkpoint {path}")
        replicated = NamedSharding(mesh, P())
        ema_params = {
            k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=replicated)
            for k, v in expected.items()
        }
        item = {"train_state": {"ema_params": traverse_util.unflatten_dict(ema_params)}}
        restored = ocp.PyTreeCheckpointer().restore(
            path,
            args=ocp.args.PyTreeRestore(
                item=item,
                restore_args=jax.tree.map(
                    lambda a: ocp.ArrayRestoreArgs(sharding=a.sharding), item
                ),
                partial_restore=True,
            ),
        )
        return restored["train_state"]["ema_params"]

    def check_resumable(self, train_state, rng, config) -> None:
        """Raises `CheckpointMismatchError` if the newest intact checkpoint's state does not fit
        ``train_state`` and ``rng`` (concrete or abstract), naming the config keys in which the
        run's saved config differs from ``config``. Nothing to check without an intact
        checkpoint."""
        try:
            step = self.usable_step()
        except (InputError, CorruptCheckpointError):
            return  # a new run, or one whose damaged checkpoints restore_latest reports
        path = os.path.join(self.step_dir(step), STATE)
        try:
            check_fits(path, {"train_state": train_state, "rng": rng})
        except CheckpointMismatchError as e:
            try:
                differences = _config_differences(self.saved_config(step), config)
            except InputError:  # no config saved with the checkpoint
                differences = []
            found = e.message.split(": ", 1)[1]
            raise CheckpointMismatchError(
                f"{self.workdir} holds a run of another network (checkpoint {step}: {found}); "
                + (f"its config differs in {'; '.join(differences)}" if differences else ""),
                "resume with the config the run was trained with (saved in "
                f"{os.path.join(self.step_dir(step), CONFIG)}), or use a new --workdir",
            ) from None


def _pick_a_step(steps: list[int]) -> str:
    if not steps:
        return "train first, or pass --checkpoint=PATH of a checkpoint file"
    others = f" (or another of {steps})" if len(steps) > 1 else ""
    return f"pass --checkpoint={steps[-1]}{others}, or leave it out for the newest"


def _config_differences(saved, config, limit: int = 5) -> list[str]:
    """``key: run <saved value>, given <value>`` for the keys where two configs differ."""
    run, given = _flat_config(saved), _flat_config(config)
    keys = sorted(set(run) | set(given), key=lambda k: (not k.startswith(("model.", "data.")), k))
    differences = [
        f"{k}: run {run.get(k, '(absent)')!r}, given {given.get(k, '(absent)')!r}"
        for k in keys
        if run.get(k) != given.get(k)
    ]
    more = [f"and {len(differences) - limit} more"] if len(differences) > limit else []
    return differences[:limit] + more


def _flat_config(config) -> dict:
    """A config as ``{"section.key": value}`` with lists as tuples (as saved in JSON)."""
    flat = traverse_util.flatten_dict(json.loads(config.to_json_best_effort()), sep=".")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in flat.items()}


def resolve_config(config, workdir=None, checkpoint=None):
    """``config`` if given, else the config saved with the run's checkpoint to be used.

    Args:
      config: a ConfigDict or None.
      workdir: the training run.
      checkpoint: the ``--checkpoint`` value (a step number picks that step's saved config).

    Raises:
      UsageError: a foreign checkpoint file (which has no config) without ``config``.
      FileNotFoundError: no saved config in ``workdir``.
    """
    if config is not None:
        return config
    if checkpoint is not None and os.path.isfile(str(checkpoint)):
        raise UsageError(
            f"--checkpoint={checkpoint} is a released checkpoint file, which carries no config",
            "pass --config=PATH (the config it was trained with)",
        )
    if workdir is None:
        raise UsageError(
            "Nothing to load", "pass --workdir (a training run), or --config and --checkpoint=PATH"
        )
    step = int(checkpoint) if checkpoint is not None and str(checkpoint).isdigit() else None
    return RunFolder(workdir).saved_config(step)


@dataclasses.dataclass(frozen=True)
class LoadedCheckpoint:
    """EMA parameters and where they came from."""

    params: object
    step: int | None
    source: str  # 'train', 'original' or 'pytorch'
    path: str
    tag: str  # short name for output files


def locate_checkpoint(workdir=None, checkpoint=None) -> int | str:
    """The ``--checkpoint`` flag resolved: the path of a released file, or a step of the run in
    ``workdir`` (default: its newest intact checkpoint, `RunFolder.usable_step`).

    Raises:
      UsageError: ``checkpoint`` is not a file and there is no ``workdir``.
      FileNotFoundError: nothing to load, e.g. an unknown step (the message lists the steps).
      CorruptCheckpointError: the step is damaged (the message lists the intact ones).
    """
    spec = None if checkpoint is None else str(checkpoint)
    if spec is not None and os.path.isfile(spec):
        return spec
    if workdir is None and spec is None:
        raise UsageError(
            "Nothing to load",
            "pass --workdir (a training run) or --checkpoint=PATH of a checkpoint file",
        )
    if workdir is None:
        raise UsageError(
            f"--checkpoint={spec!r} is not a file",
            "pass --workdir of a training run (and a step number) or the path of a checkpoint file",
        )
    run = RunFolder(workdir)
    if spec is not None and not spec.isdigit():
        raise InputError(
            f"--checkpoint={spec!r} is neither a step number nor an existing file; steps in "
            f"{run.checkpoint_dir}: {run.steps()}",
            _pick_a_step(run.steps()),
        )
    return run.usable_step(None if spec is None else int(spec))


def load_checkpoint_params(config, *, workdir=None, checkpoint=None, mesh=None):
    """Loads the EMA parameters named by ``checkpoint`` (the ``--checkpoint`` flag).

    Args:
      config: the model's config.
      workdir: a training run (needed unless ``checkpoint`` is a file).
      checkpoint: None (the run's newest intact checkpoint), a step number (int or digit
        string) of the run, or the path of a released file: an original ``checkpoint_<k>`` or a
        PyTorch-port ``.pth``, told apart by content (`locate_checkpoint`).
      mesh: the mesh to replicate the parameters over (default: all devices).

    Returns:
      A `LoadedCheckpoint`.

    Raises:
      FileNotFoundError: nothing to load, e.g. an unknown step (the message lists the steps).
      ValueError: ``checkpoint`` is not a file and there is no ``workdir``; the checkpoint is
        damaged (`CorruptCheckpointError`) or its network differs from ``config``'s
        (`CheckpointMismatchError`).
    """
    mesh = distributed.create_mesh() if mesh is None else mesh
    location = locate_checkpoint(workdir, checkpoint)
    if isinstance(location, str):
        fmt = formats.detect_format(location)
        params, step = load_file(location, config, fmt)
        params = jax.device_put(params, NamedSharding(mesh, P()))
        return LoadedCheckpoint(params, step, fmt, location, checkpoint_tag(location))
    run = RunFolder(workdir)
    params = run.restore_ema_params(config, location, mesh)
    return LoadedCheckpoint(
        params, location, "train", run.step_dir(location), checkpoint_tag(location)
    )


def checkpoint_tag(location: int | str) -> str:
    """A short name for output files of a `locate_checkpoint` result: ``step_<k>`` or the file's
    name without extension."""
    if isinstance(location, int):
        return f"step_{location}"
    return os.path.splitext(os.path.basename(location))[0]
