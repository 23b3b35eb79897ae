"""`TrainState`: everything an optimizer update changes (docs/training.md)."""

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
    """Parameters, their EMA and the optimizer state after ``step`` updates.

    Attributes:
      step: int32 scalar, the number of optimizer updates applied so far.
      params: the network parameters.
      ema_params: exponential moving average of ``params``, used for evaluation and sampling.
      opt_state: the optax state of `score_sde_jax.training.create_optimizer`.
    """

    step: jax.Array
    params: Any
    ema_params: Any
    opt_state: Any

    @classmethod
    def create(
        cls, params, optimizer: optax.GradientTransformation, *, ema_params=None, step=0
    ) -> "TrainState":
        """The state at ``step`` with a fresh optimizer state; the EMA is a copy of ``params``
        unless ``ema_params`` are given (e.g. by a converted checkpoint)."""
        return cls(
            step=jnp.asarray(step, jnp.int32),
            params=params,
            ema_params=jax.tree.map(jnp.copy, params) if ema_params is None else ema_params,
            opt_state=optimizer.init(params),
        )
