"""Training: the train step, one loop for everything that is trained, and what is trained.

* `state`: `TrainState` (parameters, EMA, optimizer state, step) and its one constructor.
* `optimizer`: `create_optimizer` (clipping, Adam), `create_learning_rate_fn` (warm-up),
  `apply_update` (the update and the EMA).
* `step`: `train_step` (one update, gradient accumulation), `train_steps` (several per call:
  a scan, or unrolled where `unrolls_on` says so).
* `loop`: `train(task_type, config, workdir)`, the driver: resume, dispatches, non-finite stop,
  checkpoint cadence, SIGTERM, logs.
* `score_model`: the score model's task and `train_and_evaluate` (``python -m
  score_sde_jax.train``).
* `classifier`: the noise-conditional classifier's objective, evaluation, task and
  `train_classifier` (``python -m score_sde_jax.train_classifier``).

See docs/training.md.
"""

from score_sde_jax.training import classifier
from score_sde_jax.training.classifier import train_classifier
from score_sde_jax.training.loop import (
    NonFiniteLossError,
    TrainLog,
    compile_without_optimizations,
    train,
    validate_config,
)
from score_sde_jax.training.optimizer import (
    apply_update,
    create_learning_rate_fn,
    create_optimizer,
)
from score_sde_jax.training.score_model import (
    ScoreModel,
    create_loss_fn,
    create_train_state,
    eval_step,
    train_and_evaluate,
)
from score_sde_jax.training.state import TrainState
from score_sde_jax.training.step import image_loss, train_step, train_steps, unrolls_on

__all__ = [
    "NonFiniteLossError",
    "ScoreModel",
    "TrainLog",
    "TrainState",
    "apply_update",
    "classifier",
    "compile_without_optimizations",
    "create_learning_rate_fn",
    "create_loss_fn",
    "create_optimizer",
    "create_train_state",
    "eval_step",
    "image_loss",
    "train",
    "train_and_evaluate",
    "train_classifier",
    "train_step",
    "train_steps",
    "unrolls_on",
    "validate_config",
]
