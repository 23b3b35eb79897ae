"""The optimizer of Song et al. (2021): clipping, Adam, warm-up, and the EMA of the parameters.

See docs/original_code.md#losses-optimizer-and-ema.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from score_sde_jax.training.state import TrainState


def create_learning_rate_fn(config) -> Callable[[jax.Array], jax.Array]:
    """lr(step) = lr · min(step / warmup, 1) with ``step`` the updates done so far.

    As in the original the very first update has learning rate 0 (docs/original_code.md, D15):
    Adam's moments still see its gradient. Kept so that runs match the original update for update.
    """
    lr, warmup = config.optim.lr, config.optim.warmup

    def learning_rate_fn(step):
        if warmup <= 0:
            return jnp.asarray(lr, jnp.float32)
        return lr * jnp.minimum(step / warmup, 1.0).astype(jnp.float32)

    return learning_rate_fn


def create_optimizer(config) -> optax.GradientTransformation:
    """Global-norm clipping then Adam (β₂ = 0.999) and decoupled weight decay.

    The transformation yields unit-learning-rate steps; `apply_update` multiplies them by
    ``-create_learning_rate_fn(config)(state.step)``, so the schedule follows the training step even
    when the optimizer state is fresh (e.g. after converting a foreign checkpoint). Clipping is off
    when ``optim.grad_clip < 0``, as in the original.
    """
    o = config.optim
    chain = []
    if o.grad_clip >= 0:
        chain.append(optax.clip_by_global_norm(o.grad_clip))
    chain.append(optax.scale_by_adam(b1=o.beta1, b2=0.999, eps=o.eps))
    if o.weight_decay:
        chain.append(optax.add_decayed_weights(o.weight_decay))
    return optax.chain(*chain)


def apply_update(state: TrainState, grads, *, optimizer, learning_rate_fn, ema_rate):
    """The update of ``grads`` and the EMA -> (new state, learning rate).

    params ← params − lr(step) · optimizer direction; ema ← μ·ema + (1 − μ)·params with μ =
    ``ema_rate``.
    """
    lr = learning_rate_fn(state.step)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = jax.tree.map(lambda p, u: p - lr * u, state.params, updates)
    ema_params = jax.tree.map(
        lambda e, p: e * ema_rate + p * (1.0 - ema_rate), state.ema_params, params
    )
    new_state = state.replace(
        step=state.step + 1, params=params, ema_params=ema_params, opt_state=opt_state
    )
    return new_state, lr
