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
from flax import traverse_util
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from score_sde_jax import distributed, models
from score_sde_jax.checkpoints import formats
from score_sde_jax.checkpoints.errors import check_fit
from score_sde_jax.checkpoints.manager import CONFIG, STATE, CheckpointManager
from score_sde_jax.checkpoints.original import load_original
from score_sde_jax.checkpoints.pytorch import load_pytorch
from score_sde_jax.data import pipeline

__all__ = [
    "LoadedCheckpoint",
    "RunFolder",
    "config_from_json",
    "load_checkpoint_params",
    "load_file",
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
        raise ValueError(f"Unknown format {fmt!r}; valid: auto, {', '.join(formats.FORMATS)}.")
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

    def saved_config(self, step: int | None = None) -> ml_collections.ConfigDict:
        """The config saved with checkpoint ``step`` (default: the latest).

        Raises:
          FileNotFoundError: no checkpoint (or none with a saved config); the message says to
            pass ``--config``.
        """
        steps = self.steps()
        if step is None and steps:
            step = steps[-1]
        path = None if step is None else os.path.join(self.step_dir(step), CONFIG)
        if path is None or not os.path.isdir(path):
            raise FileNotFoundError(
                f"No config saved with the checkpoints in {self.checkpoint_dir} (steps found: "
                f"{steps}); pass --config=PATH (the config the model was trained with)."
            )
        return config_from_json(ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(path))

    def restore_ema_params(self, config, step: int, mesh: jax.sharding.Mesh):
        """The EMA parameters of checkpoint ``step``, replicated over ``mesh``.

        Only the EMA leaves are read (orbax partial restore), so neither the optimizer state nor
        the device count of the training run matter.

        Raises:
          FileNotFoundError: no such step (the message lists the available ones).
          CheckpointMismatchError: the checkpoint's network differs from ``config``'s.
        """
        path = os.path.join(self.step_dir(step), STATE)
        if step not in self.steps() or not os.path.isdir(path):
            raise FileNotFoundError(
                f"No checkpoint for step {step} in {self.checkpoint_dir}; available steps: "
                f"{self.steps()}."
            )
        checkpointer = ocp.PyTreeCheckpointer()
        tree = checkpointer.metadata(path).item_metadata.tree
        saved = traverse_util.flatten_dict(tree["train_state"]["ema_params"])
        model = models.get_model(config)
        expected = models.abstract_params(model, tuple(pipeline.image_shape(config)))
        check_fit(expected, saved, f"Checkpoint {path}")
        replicated = NamedSharding(mesh, P())
        ema_params = {
            k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=replicated)
            for k, v in expected.items()
        }
        item = {"train_state": {"ema_params": traverse_util.unflatten_dict(ema_params)}}
        restored = checkpointer.restore(
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


def resolve_config(config, workdir=None, checkpoint=None):
    """``config`` if given, else the config saved with the run's checkpoint to be used.

    Args:
      config: a ConfigDict or None.
      workdir: the training run.
      checkpoint: the ``--checkpoint`` value (a step number picks that step's saved config).

    Raises:
      ValueError: a foreign checkpoint file (which has no config) without ``config``.
      FileNotFoundError: no saved config in ``workdir``.
    """
    if config is not None:
        return config
    if checkpoint is not None and os.path.isfile(str(checkpoint)):
        raise ValueError(
            f"--checkpoint={checkpoint} is a released checkpoint file, which carries no config: "
            "pass --config=PATH (the config it was trained with)."
        )
    if workdir is None:
        raise ValueError("Pass --workdir (a training run), or --config and --checkpoint=PATH.")
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


def load_checkpoint_params(config, *, workdir=None, checkpoint=None, mesh=None):
    """Loads the EMA parameters named by ``checkpoint`` (the ``--checkpoint`` flag).

    Args:
      config: the model's config.
      workdir: a training run (needed unless ``checkpoint`` is a file).
      checkpoint: None (the run's latest checkpoint), a step number (int or digit string) of
        the run, or the path of a released file: an original ``checkpoint_<k>`` or a
        PyTorch-port ``.pth``, told apart by content.
      mesh: the mesh to replicate the parameters over (default: all devices).

    Returns:
      A `LoadedCheckpoint`.

    Raises:
      FileNotFoundError: nothing to load, e.g. an unknown step (the message lists the steps).
      ValueError: ``checkpoint`` is not a file and there is no ``workdir``; the checkpoint's
        network differs from ``config``'s (`CheckpointMismatchError`).
    """
    mesh = distributed.create_mesh() if mesh is None else mesh
    spec = None if checkpoint is None else str(checkpoint)
    if spec is not None and os.path.isfile(spec):
        fmt = formats.detect_format(spec)
        params, step = load_file(spec, config, fmt)
        tag = os.path.splitext(os.path.basename(spec))[0]
        params = jax.device_put(params, NamedSharding(mesh, P()))
        return LoadedCheckpoint(params, step, fmt, spec, tag)
    if workdir is None:
        raise ValueError(
            f"--checkpoint={spec!r} is not a file; pass --workdir of a training run (and a step "
            "number) or the path of a checkpoint file."
        )
    run = RunFolder(workdir)
    steps = run.steps()
    if spec is None and not steps:
        raise FileNotFoundError(
            f"No checkpoints in {run.checkpoint_dir}; train first or pass --checkpoint=PATH of a "
            "checkpoint file."
        )
    if spec is not None and not spec.isdigit():
        raise FileNotFoundError(
            f"--checkpoint={spec!r} is neither a step number nor an existing file; steps in "
            f"{run.checkpoint_dir}: {steps}."
        )
    step = steps[-1] if spec is None else int(spec)
    params = run.restore_ema_params(config, step, mesh)
    return LoadedCheckpoint(params, step, "train", run.step_dir(step), f"step_{step}")
