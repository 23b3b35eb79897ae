"""Checkpoints: training-run folders and readers of foreign checkpoint files (docs/checkpoints.md).

* `run_folder`: `RunFolder`, a workdir's layout (checkpoint steps, saved config, EMA restore);
  `load_checkpoint_params`, the tools' ``--checkpoint`` flag; `load_file`, a foreign file;
* `manager`: `CheckpointManager`, the orbax checkpoints a training run writes and restores;
* `formats`: `detect_format`, which of the two foreign formats a file is in;
* `original`: `load_original`, the original code's flax 0.3 msgpack ``checkpoint_<k>``;
* `pytorch`: `load_pytorch`, the PyTorch port's ``.pth``, read by `torch_pickle` (no torch, no
  code run);
* `errors`: the error classes and the check that parameters fit the config's network;
* `pretrained`: `load_pretrained`, the small models embedded in the package.
"""

from score_sde_jax.checkpoints.errors import (
    CheckpointError,
    CheckpointFormatError,
    CheckpointMismatchError,
    TorchCheckpointError,
    TruncatedCheckpointError,
    UnsafeCheckpointError,
)
from score_sde_jax.checkpoints.formats import FORMATS, detect_format
from score_sde_jax.checkpoints.manager import (
    CONFIG,
    EVAL_ITER,
    STATE,
    TRAIN_ITER,
    CheckpointManager,
    NonFiniteStateError,
    all_finite,
)
from score_sde_jax.checkpoints.original import load_original, params_from_original
from score_sde_jax.checkpoints.pretrained import Pretrained, load_pretrained, save_pretrained
from score_sde_jax.checkpoints.pytorch import load_pytorch
from score_sde_jax.checkpoints.run_folder import (
    LoadedCheckpoint,
    RunFolder,
    config_from_json,
    load_checkpoint_params,
    load_file,
    resolve_config,
)

__all__ = [
    "Pretrained",
    "load_pretrained",
    "save_pretrained",
    "CONFIG",
    "EVAL_ITER",
    "FORMATS",
    "STATE",
    "TRAIN_ITER",
    "CheckpointError",
    "CheckpointFormatError",
    "CheckpointManager",
    "CheckpointMismatchError",
    "LoadedCheckpoint",
    "NonFiniteStateError",
    "RunFolder",
    "TorchCheckpointError",
    "TruncatedCheckpointError",
    "UnsafeCheckpointError",
    "all_finite",
    "config_from_json",
    "detect_format",
    "load_checkpoint_params",
    "load_file",
    "load_original",
    "load_pytorch",
    "params_from_original",
    "resolve_config",
]
