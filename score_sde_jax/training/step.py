"""The train step: one optimizer update on a global batch, and ``n_jitted_steps`` of them per call.

A step's loss is ``loss_fn(params, rng, batch) -> (loss, metrics)`` with ``batch`` a dict of
arrays whose leading axis is the batch; whatever is trained (score model, classifier) only
changes that function (docs/training.md).
"""

import operator
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from score_sde_jax.training.optimizer import apply_update
from score_sde_jax.training.state import TrainState


def image_loss(loss_fn: Callable) -> Callable:
    """A score-model loss ``loss_fn(params, rng, x) -> loss`` as a step's loss of
    ``batch = {"image": x}``, with no further metrics."""
    return lambda params, rng, batch: (loss_fn(params, rng, batch["image"]), {})


def train_step(
    state: TrainState,
    batch: dict,
    rng: jax.Array,
    *,
    loss_fn: Callable,
    optimizer: optax.GradientTransformation,
    learning_rate_fn: Callable,
    ema_rate: float,
    grad_accum_steps: int = 1,
) -> tuple[TrainState, dict]:
    """One optimizer update on a global batch (docs/original_code.md#losses-optimizer-and-ema).

    Args:
      state: the current `TrainState`.
      batch: a dict of arrays [B, ...], e.g. ``{"image"}`` already in the network's input range.
      rng: this update's PRNG key.
      loss_fn: ``loss_fn(params, rng, batch) -> (loss, metrics)`` (train mode); see `image_loss`.
      optimizer: from `create_optimizer`.
      learning_rate_fn: from `create_learning_rate_fn`.
      ema_rate: EMA decay μ in ema ← μ·ema + (1 − μ)·params.
      grad_accum_steps: average gradients (and metrics) of this many equal micro-batches.

    Returns:
      The new state and ``{"loss", **metrics, "grad_norm", "learning_rate"}`` (grad norm before
      clipping).
    """
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    if grad_accum_steps == 1:
        (loss, metrics), grads = grad_fn(state.params, rng, batch)
    else:
        (loss, metrics), grads = _accumulate(grad_fn, state.params, rng, batch, grad_accum_steps)
    new_state, lr = apply_update(
        state, grads, optimizer=optimizer, learning_rate_fn=learning_rate_fn, ema_rate=ema_rate
    )
    return new_state, {
        "loss": loss,
        **metrics,
        "grad_norm": optax.tree.norm(grads),
        "learning_rate": lr,
    }


def _accumulate(grad_fn, params, rng, batch, num: int):
    """Mean of ``grad_fn``'s outputs over ``num`` micro-batches; micro-batch i has key
    fold_in(rng, i)."""
    # Micro-batch i takes every num-th example, so every device keeps working on its own rows
    # and no data moves between devices.
    micro = jax.tree.map(lambda a: jnp.swapaxes(a.reshape((-1, num) + a.shape[1:]), 0, 1), batch)

    def add(carry, inputs):
        i, micro_batch = inputs
        out = grad_fn(params, jax.random.fold_in(rng, i), micro_batch)
        return jax.tree.map(jnp.add, carry, out), None

    shapes = jax.eval_shape(grad_fn, params, rng, jax.tree.map(lambda a: a[0], micro))
    zeros = jax.tree.map(
        lambda s: jnp.zeros(s.shape, jnp.promote_types(s.dtype, jnp.float32)), shapes
    )
    total, _ = jax.lax.scan(add, zeros, (jnp.arange(num), micro))
    return jax.tree.map(lambda v: v / num, total)


def unrolls_on(platform: str) -> bool:
    """Whether `train_steps` unrolls its updates on devices of ``platform`` (``"cpu"``, ``"gpu"``, ...):
    on the CPU, where XLA runs a step inside a loop up to 14x slower."""
    return platform == "cpu"


def train_steps(
    state: TrainState, batches: dict, rng: jax.Array, *, unroll: bool = False, **step_kwargs
):
    """Runs `train_step` over the leading axis of ``batches`` with key fold_in(rng, step).

    A ``lax.scan`` of the updates, or with ``unroll`` (and always for one update) one copy of the
    step per update: inside a loop XLA:CPU ran the digits step 14x slower and a DDPM++ step with
    a donated state out of memory (docs/performance.md, "Steps per dispatch"). Both forms give the
    same updates.

    Returns:
      The last state and the metrics of every step, stacked.
    """

    def body(state, batch):
        return train_step(state, batch, jax.random.fold_in(rng, state.step), **step_kwargs)

    length = jax.tree.leaves(batches)[0].shape[0]
    if not unroll and length > 1:
        return jax.lax.scan(body, state, batches)
    metrics = []
    for i in range(length):
        state, step_metrics = body(state, jax.tree.map(operator.itemgetter(i), batches))
        metrics.append(step_metrics)
    return state, jax.tree.map(lambda *m: jnp.stack(m), *metrics)
