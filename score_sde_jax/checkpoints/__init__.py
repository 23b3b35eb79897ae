"""Checkpoints: this package's orbax run folders and readers of foreign checkpoint files.

* `manager`: `CheckpointManager`, the orbax checkpoints a training run writes and restores.
* `readers`: `load_original` (flax 0.3 msgpack files of the original code) and `load_pytorch`
  (the PyTorch port's ``.pth``, read by `torch_pickle` without torch and without running code).
"""

from score_sde_jax.checkpoints.manager import (
    CONFIG,
    EVAL_ITER,
    STATE,
    TRAIN_ITER,
    CheckpointManager,
    NonFiniteStateError,
    all_finite,
)
from score_sde_jax.checkpoints.readers import (
    CheckpointError,
    CheckpointFormatError,
    CheckpointMismatchError,
    TruncatedCheckpointError,
    UnsafeCheckpointError,
    load_original,
    load_pytorch,
    params_from_original,
)

__all__ = [
    "CONFIG",
    "EVAL_ITER",
    "STATE",
    "TRAIN_ITER",
    "CheckpointError",
    "CheckpointFormatError",
    "CheckpointManager",
    "CheckpointMismatchError",
    "NonFiniteStateError",
    "TruncatedCheckpointError",
    "UnsafeCheckpointError",
    "all_finite",
    "load_original",
    "load_pytorch",
    "params_from_original",
]
