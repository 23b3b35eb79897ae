"""Training loop of Song et al. (2021): `train_and_evaluate(config, workdir)`.

One jitted step function runs over a 1-D ``("data",)`` mesh of every device of every process:
the `TrainState` is replicated, batches are sharded along their batch axis and assembled from
each process's share with `jax.make_array_from_process_local_data`, and the compiler inserts the
gradient all-reduce. ``training.n_jitted_steps`` optimizer updates run per dispatch (`lax.scan`).
Randomness is stateless: update ``k`` uses ``fold_in(rng, k)``, so a resumed run draws exactly
the numbers an uninterrupted one draws.
"""

import functools
import math
import os
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from clu import metric_writers, parameter_overview
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from score_sde_jax import (
    checkpoints,
    distributed,
    losses,
    models,
    sampling,
    score_fns,
    sde_lib,
    train_loop,
)
from score_sde_jax.data import image_io, pipeline

# training.* step intervals; each must be a multiple of training.n_jitted_steps
# (docs/original_code.md#training-evaluation-and-data).
_STEP_FREQUENCIES = ("log_freq", "eval_freq", "snapshot_freq", "snapshot_freq_for_preemption")


# Raised by `train_and_evaluate`; defined with the loop that detects it.
NonFiniteLossError = train_loop.NonFiniteLossError


@flax.struct.dataclass
class TrainState:
    """Everything an optimizer update changes (docs/original_code.md#losses-optimizer-and-ema).

    Attributes:
      step: int32 scalar, the number of optimizer updates applied so far.
      params: the network parameters.
      ema_params: exponential moving average of ``params``, used for evaluation and sampling.
      opt_state: the optax state of `create_optimizer`.
    """

    step: jax.Array
    params: Any
    ema_params: Any
    opt_state: Any


# ----------------------------------------------------------------------------------------------
# Building blocks.
# ----------------------------------------------------------------------------------------------


def validate_config(config, num_devices: int, num_processes: int) -> None:
    """Raises ValueError for settings the sharded loop cannot run.

    Checks that the global batch splits evenly over devices, processes and accumulation
    micro-batches, that the step frequencies are multiples of ``n_jitted_steps`` and that the
    optimizer is Adam.
    """
    t = config.training
    accum = t.get("grad_accum_steps", 1)
    if t.n_jitted_steps < 1 or accum < 1:
        raise ValueError("training.n_jitted_steps and training.grad_accum_steps must be >= 1.")
    for name in _STEP_FREQUENCIES:
        if t[name] <= 0 or t[name] % t.n_jitted_steps:
            raise ValueError(
                f"training.{name}={t[name]} must be a positive multiple of "
                f"training.n_jitted_steps={t.n_jitted_steps}."
            )
    for key, size in (
        ("training.batch_size", t.batch_size),
        ("eval.batch_size", config.eval.batch_size),
    ):
        if size % num_devices or size % num_processes:
            raise ValueError(
                f"{key}={size} must be divisible by the number of devices ({num_devices}) and "
                f"processes ({num_processes})."
            )
    if (t.batch_size // num_devices) % accum:
        raise ValueError(
            f"The per-device batch {t.batch_size // num_devices} must be divisible by "
            f"training.grad_accum_steps={accum}."
        )
    if config.optim.optimizer.lower() != "adam":
        raise ValueError(f"optim.optimizer={config.optim.optimizer!r}; only 'Adam' is supported.")


def create_learning_rate_fn(config) -> Callable[[jax.Array], jax.Array]:
    """lr(step) = lr · min(step / warmup, 1) with ``step`` the updates done so far.

    As in the original the very first update has learning rate 0 (docs/original_code.md, D15):
    Adam's moments still see its gradient. Kept so that runs match the original update for update.
    See docs/original_code.md#losses-optimizer-and-ema.
    """
    lr, warmup = config.optim.lr, config.optim.warmup

    def learning_rate_fn(step):
        if warmup <= 0:
            return jnp.asarray(lr, jnp.float32)
        return lr * jnp.minimum(step / warmup, 1.0).astype(jnp.float32)

    return learning_rate_fn


def create_optimizer(config) -> optax.GradientTransformation:
    """Global-norm clipping then Adam (β₂ = 0.999) and decoupled weight decay.

    The transformation yields unit-learning-rate steps; `train_step` multiplies them by
    ``-create_learning_rate_fn(config)(state.step)``, so the schedule follows the training step even
    when the optimizer state is fresh (e.g. after converting a foreign checkpoint). Clipping is off
    when ``optim.grad_clip < 0``, as in the original. See
    docs/original_code.md#losses-optimizer-and-ema.
    """
    o = config.optim
    chain = []
    if o.grad_clip >= 0:
        chain.append(optax.clip_by_global_norm(o.grad_clip))
    chain.append(optax.scale_by_adam(b1=o.beta1, b2=0.999, eps=o.eps))
    if o.weight_decay:
        chain.append(optax.add_decayed_weights(o.weight_decay))
    return optax.chain(*chain)


def create_loss_fn(config, sde, model, *, train: bool, per_example: bool = False) -> Callable:
    """The config's loss ``loss_fn(params, rng, x)`` (see `losses.get_loss_fn`).

    ``training.continuous``, ``reduce_mean`` and ``likelihood_weighting`` choose it; ``train``
    turns dropout on.
    """
    t = config.training
    return losses.get_loss_fn(
        sde,
        models.get_model_fn(model),
        continuous=t.continuous,
        reduce_mean=t.reduce_mean,
        likelihood_weighting=t.likelihood_weighting,
        train=train,
        per_example=per_example,
    )


def create_train_state(config, model, rng, optimizer) -> TrainState:
    """Initialises parameters (EMA = a copy of them) and the optimizer state."""
    params_rng, dropout_rng = jax.random.split(rng)
    x = jnp.zeros((1, *pipeline.image_shape(config)), jnp.float32)
    # Labels of the dtype training feeds: discrete VE networks (NCSN, NCSNv2) index σ with ints.
    t = jnp.ones((1,), jnp.float32)
    labels = score_fns.get_labels(sde_lib.get_sde(config), t, config.training.continuous)
    variables = model.init({"params": params_rng, "dropout": dropout_rng}, x, labels, train=False)
    params = variables["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        ema_params=jax.tree.map(jnp.copy, params),
        opt_state=optimizer.init(params),
    )


# ----------------------------------------------------------------------------------------------
# Step functions.
# ----------------------------------------------------------------------------------------------


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
      batch: ``{"image": [B, ...]}`` already in the network's input range.
      rng: this update's PRNG key.
      loss_fn: ``loss_fn(params, rng, x) -> scalar`` (train mode).
      optimizer: from `create_optimizer`.
      learning_rate_fn: from `create_learning_rate_fn`.
      ema_rate: EMA decay μ in ema ← μ·ema + (1 − μ)·params.
      grad_accum_steps: average gradients of this many equal micro-batches.

    Returns:
      The new state and ``{"loss", "grad_norm", "learning_rate"}`` (grad norm before clipping).
    """
    x = batch["image"]
    grad_fn = jax.value_and_grad(loss_fn)
    if grad_accum_steps == 1:
        loss, grads = grad_fn(state.params, rng, x)
    else:
        # Micro-batch i takes every grad_accum_steps-th example, so every device keeps working
        # on its own rows and no data moves between devices.
        micro = jnp.swapaxes(x.reshape((-1, grad_accum_steps) + x.shape[1:]), 0, 1)

        def accumulate(carry, inputs):
            i, xb = inputs
            loss_i, grads_i = grad_fn(state.params, jax.random.fold_in(rng, i), xb)
            return jax.tree.map(jnp.add, carry, (loss_i, grads_i)), None

        zeros = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, state.params))
        (loss, grads), _ = jax.lax.scan(accumulate, zeros, (jnp.arange(grad_accum_steps), micro))
        loss, grads = jax.tree.map(lambda v: v / grad_accum_steps, (loss, grads))

    new_state, lr = apply_update(
        state, grads, optimizer=optimizer, learning_rate_fn=learning_rate_fn, ema_rate=ema_rate
    )
    return new_state, {"loss": loss, "grad_norm": optax.tree.norm(grads), "learning_rate": lr}


def apply_update(state: TrainState, grads, *, optimizer, learning_rate_fn, ema_rate):
    """The update of ``grads`` and the EMA -> (new state, learning rate).

    The optimizer yields the update direction; the learning rate of ``state.step`` scales it.
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


def train_steps(state: TrainState, batches: dict, rng: jax.Array, **step_kwargs):
    """Runs `train_step` over the leading axis of ``batches`` with key fold_in(rng, step)."""

    def body(state, batch):
        return train_step(state, batch, jax.random.fold_in(rng, state.step), **step_kwargs)

    return jax.lax.scan(body, state, batches)


def eval_step(state: TrainState, batch: dict, rng: jax.Array, *, loss_fn: Callable) -> dict:
    """Loss of the EMA parameters on ``batch`` without dropout.

    See docs/original_code.md#losses-optimizer-and-ema.
    """
    return {"loss": loss_fn(state.ema_params, rng, batch["image"])}


# ----------------------------------------------------------------------------------------------
# Host-side helpers of the loop.
# ----------------------------------------------------------------------------------------------


def _next_batches(iterator, num: int) -> np.ndarray:
    """``num`` consecutive per-process batches stacked to [num, per_process_batch, ...]."""
    return np.stack([np.asarray(next(iterator)["image"], np.float32) for _ in range(num)])


def _flat_hparams(config) -> dict:
    flat = {}

    def visit(prefix, node):
        for key, value in node.items():
            name = f"{prefix}{key}"
            if hasattr(value, "items"):
                visit(f"{name}.", value)
            elif isinstance(value, bool | int | float | str):
                flat[name] = value
            else:
                flat[name] = str(value)

    visit("", config)
    return flat


def create_snapshot_sampler(config, sde, model, shape):
    """The config's sampler ``sample(rng, params) -> (x, nfe)`` for snapshot grids.

    See docs/configs.md.
    """
    score_fn = models.get_score_fn(sde, model, continuous=config.training.continuous)
    s = config.sampling
    eps = sde_lib.get_sampling_eps(config)
    method = s.method.lower()
    if method == "pc":
        return sampling.get_pc_sampler(
            sde,
            score_fn,
            shape,
            predictor=s.predictor.lower(),
            corrector=s.corrector.lower(),
            snr=s.snr,
            n_steps=s.n_steps_each,
            probability_flow=s.probability_flow,
            denoise=s.noise_removal,
            eps=eps,
        )
    if method == "ode":
        return sampling.get_ode_sampler(sde, score_fn, shape, eps=eps, denoise=s.noise_removal)
    raise ValueError(f"sampling.method={s.method!r}; valid methods: 'pc', 'ode'.")


def _sharded_sampler(sampler, sharding):
    """``sampler`` jitted so that its samples are split over the devices of ``sharding``."""
    return jax.jit(lambda rng, params: sampler(rng, params)[0], out_shardings=sharding)


def _write_snapshot(config, samples, step, workdir, writer):
    """Saves ``samples/iter_<step>/sample.{png,npz}`` (process 0) and logs the grid image."""
    folder = os.path.join(workdir, "samples", f"iter_{step}")
    os.makedirs(folder, exist_ok=True)
    if samples.ndim == 2:  # TOY2D points
        np.savez_compressed(os.path.join(folder, "sample.npz"), samples=samples)
        image = image_io.save_scatter_png(samples, os.path.join(folder, "sample.png"))
    else:
        images = np.clip(pipeline.get_data_inverse_scaler(config)(samples), 0.0, 1.0)
        images = np.round(images * 255.0).astype(np.uint8)
        np.savez_compressed(os.path.join(folder, "sample.npz"), samples=images)
        image = image_io.save_image_grid(images, os.path.join(folder, "sample.png"))
    writer.write_images(step, {"samples": image[None]})
    logging.info("Wrote %s", os.path.join(folder, "sample.png"))


# ----------------------------------------------------------------------------------------------
# The driver.
# ----------------------------------------------------------------------------------------------


def open_checkpoints(config, workdir: str, state, rng, iterators: dict, writer):
    """Opens ``workdir/checkpoints`` and restores its newest readable checkpoint, if any.

    A new run logs the parameter overview and writes the config as hyperparameters instead.

    Returns:
      ``(manager, state, host rng, step, resumed)``; the caller closes the manager (the training
      loop does), except when this raises (no checkpoint fits the config), where it is closed here.
    """
    t = config.training
    ckpt = checkpoints.CheckpointManager(
        os.path.join(workdir, "checkpoints"),
        max_to_keep=t.get("max_to_keep", 2),
        keep_period=t.snapshot_freq,
    )
    try:
        restored = ckpt.restore_latest(state, rng, iterators=iterators)
    except BaseException:
        ckpt.close()
        raise
    if restored is None:
        if jax.process_index() == 0:
            parameter_overview.log_parameter_overview(state.params, include_stats=False)
        writer.write_hparams(_flat_hparams(config))
        return ckpt, state, rng, 0, False
    state, rng, step = restored
    logging.info("Resumed from checkpoint %d in %s.", step, ckpt.directory)
    return ckpt, state, np.asarray(jax.device_get(rng)), step, True


def train_and_evaluate(config, workdir: str, mesh: jax.sharding.Mesh | None = None) -> TrainState:
    """Trains (or resumes training of) the model described by ``config`` in ``workdir``.

    Writes ``checkpoints/`` (orbax), ``tensorboard/`` (clu event files) and
    ``samples/iter_<step>/`` under ``workdir``. A re-run with the same workdir resumes from the
    newest readable checkpoint and continues bit for bit as if never stopped. SIGTERM saves a
    checkpoint and returns early. Steps: ``training.n_iters`` rounded up to a multiple of
    ``training.n_jitted_steps`` (the original's count, docs/original_code.md, D16).

    Args:
      config: a ConfigDict with the original's keys (docs/configs.md).
      workdir: output folder (created if needed).
      mesh: a 1-D ``("data",)`` mesh; default `distributed.create_mesh()` over all devices.

    Returns:
      The final `TrainState` (replicated over ``mesh``).

    Raises:
      NonFiniteLossError: the training loss became NaN/inf; no checkpoint after it is written.
    """
    t = config.training
    mesh = distributed.create_mesh() if mesh is None else mesh
    num_devices = mesh.devices.size
    validate_config(config, num_devices, jax.process_count())
    is_main = jax.process_index() == 0
    os.makedirs(workdir, exist_ok=True)

    # ---- Shardings: state replicated, batches split along their batch axis. ----
    replicated = NamedSharding(mesh, P())
    batches_sharding = NamedSharding(mesh, P(None, "data"))  # [n_jitted_steps, B, ...]
    batch_sharding = NamedSharding(mesh, P("data"))  # [B, ...]
    shape = pipeline.image_shape(config)
    n_jitted = t.n_jitted_steps
    total_steps = math.ceil(t.n_iters / n_jitted) * n_jitted

    writer = metric_writers.create_default_writer(
        os.path.join(workdir, "tensorboard"), just_logging=not is_main
    )

    # ---- Input pipeline: every process reads only its share of each global batch. ----
    train_iter, eval_iter = pipeline.create_datasets(
        config,
        seed=config.seed,
        data_dir=config.data.get("data_dir", None),
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )

    # ---- Model, SDE, losses, optimizer. ----
    model = models.get_model(config)
    sde = sde_lib.get_sde(config)
    train_loss_fn = create_loss_fn(config, sde, model, train=True)
    eval_loss_fn = create_loss_fn(config, sde, model, train=False)
    optimizer = create_optimizer(config)

    # The base key lives on the host: every key is derived from it inside jitted functions, so it
    # must not be committed to one device.
    rng = np.asarray(jax.random.PRNGKey(config.seed))
    init_rng = jax.random.fold_in(rng, 0)
    state = jax.jit(
        functools.partial(create_train_state, config, model, optimizer=optimizer),
        out_shardings=replicated,
    )(init_rng)

    # ---- Restore the newest readable checkpoint, if any. ----
    iterators = {checkpoints.TRAIN_ITER: train_iter, checkpoints.EVAL_ITER: eval_iter}
    iterators = {k: v for k, v in iterators.items() if hasattr(v, "get_state")}
    ckpt, state, rng, initial_step, resumed = open_checkpoints(
        config, workdir, state, rng, iterators, writer
    )
    train_rng = jax.random.fold_in(rng, 1)
    eval_rng = jax.random.fold_in(rng, 2)
    sample_rng = jax.random.fold_in(rng, 3)

    # ---- Compiled step functions. ----
    p_train_steps = jax.jit(
        functools.partial(
            train_steps,
            loss_fn=train_loss_fn,
            optimizer=optimizer,
            learning_rate_fn=create_learning_rate_fn(config),
            ema_rate=config.model.ema_rate,
            grad_accum_steps=t.get("grad_accum_steps", 1),
        ),
        in_shardings=(replicated, batches_sharding, replicated),
        out_shardings=(replicated, replicated),
        donate_argnums=0,
    )
    p_eval_step = jax.jit(
        functools.partial(eval_step, loss_fn=eval_loss_fn),
        in_shardings=(replicated, batch_sharding, replicated),
        out_shardings=replicated,
    )
    num_snapshot = t.get("snapshot_batch_size", None) or t.batch_size

    def global_batches(iterator, num):
        local = _next_batches(iterator, num)
        return {
            "image": jax.make_array_from_process_local_data(
                batches_sharding, local, (num, t.batch_size, *shape)
            )
        }

    def save(step, state):
        ckpt.save(step, state, rng, iterators=iterators, config=config)

    def on_log(step, interval):
        scalars = {f"train_{k}": float(np.mean(interval.metrics[k])) for k in ("loss", "grad_norm")}
        scalars["learning_rate"] = float(interval.metrics["learning_rate"][-1])
        if interval.steps_per_sec is None:
            speed = f"first step incl. compilation {train_loop.format_duration(interval.seconds)}"
        else:
            scalars["steps_per_sec"] = interval.steps_per_sec
            scalars["examples_per_sec"] = interval.steps_per_sec * t.batch_size
            eta = (total_steps - step) / max(interval.steps_per_sec, 1e-9)
            speed = f"{interval.steps_per_sec:.2f} steps/s | ETA {train_loop.format_duration(eta)}"
        writer.write_scalars(step, scalars)
        logging.info(
            "step %d/%d (%.1f%%) | loss %.5g | lr %.3g | grad_norm %.3g | %s",
            step,
            total_steps,
            100.0 * step / total_steps,
            scalars["train_loss"],
            scalars["learning_rate"],
            scalars["train_grad_norm"],
            speed,
        )

    def on_eval(step, state):
        local = np.asarray(next(eval_iter)["image"], np.float32)
        eval_batch = {"image": jax.make_array_from_process_local_data(batch_sharding, local)}
        loss = p_eval_step(state, eval_batch, jax.random.fold_in(eval_rng, step))
        writer.write_scalars(step, {"eval_loss": float(loss["loss"])})

    sampler = None

    def on_snapshot(step, state):
        nonlocal sampler
        if sampler is None:
            sampler = _sharded_sampler(
                create_snapshot_sampler(config, sde, model, (num_snapshot, *shape)),
                batch_sharding if num_snapshot % num_devices == 0 else replicated,
            )
        samples = distributed.to_host(
            sampler(jax.random.fold_in(sample_rng, step), state.ema_params)
        )
        if is_main:
            _write_snapshot(config, samples, step, workdir, writer)

    try:
        return train_loop.run(
            state,
            initial_step,
            training=t,
            total_steps=total_steps,
            dispatch=lambda state: p_train_steps(
                state, global_batches(train_iter, n_jitted), train_rng
            ),
            ckpt=ckpt,
            save=save,
            saved_step=initial_step if resumed else None,
            on_log=on_log,
            on_eval=on_eval,
            eval_at_end=False,
            on_snapshot=on_snapshot if t.snapshot_sampling else None,
        )
    finally:
        writer.flush()
