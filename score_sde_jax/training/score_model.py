"""Training the score model s_θ(x, t) (paper Eq. (7)): its task for `loop.train`, and
`train_and_evaluate`, the ``python -m score_sde_jax.train`` run (docs/training.md)."""

import functools
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from score_sde_jax import checkpoints, distributed, losses, models, score_fns, sde_lib
from score_sde_jax.data import image_io, pipeline
from score_sde_jax.sampling import registry
from score_sde_jax.training import loop
from score_sde_jax.training.state import TrainState
from score_sde_jax.training.step import image_loss


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


def init_params(config, model, rng):
    """Initial parameters of the score network ``model`` of ``config`` (`models.init_params`:
    ``model.init``'s values, fast for a concrete ``rng``)."""
    params_rng, dropout_rng = jax.random.split(rng)
    x = jnp.zeros((1, *pipeline.image_shape(config)), jnp.float32)
    # Labels of the dtype training feeds: discrete VE networks (NCSN, NCSNv2) index σ with ints.
    t = jnp.ones((1,), jnp.float32)
    labels = score_fns.get_labels(sde_lib.get_sde(config), t, config.training.continuous)
    return models.init_params(model, {"params": params_rng, "dropout": dropout_rng}, x, labels)


def create_train_state(config, model, rng, optimizer) -> TrainState:
    """Initialises parameters (EMA = a copy of them) and the optimizer state."""
    return TrainState.create(init_params(config, model, rng), optimizer)


def eval_step(state: TrainState, batch: dict, rng: jax.Array, *, loss_fn: Callable) -> dict:
    """Loss of the EMA parameters on ``batch`` without dropout.

    See docs/original_code.md#losses-optimizer-and-ema.
    """
    return {"loss": loss_fn(state.ema_params, rng, batch["image"])}


def _write_snapshot(config, samples, step, workdir, writer):
    """Saves ``samples/iter_<step>/sample.{png,npz}`` (process 0) and logs the grid image."""
    folder = os.path.join(workdir, "samples", f"iter_{step}")
    os.makedirs(folder, exist_ok=True)
    if samples.ndim == 2:  # TOY2D points
        np.savez_compressed(os.path.join(folder, "sample.npz"), samples=samples)
        image = image_io.save_scatter_png(samples, os.path.join(folder, "sample.png"))
    else:
        images = image_io.to_uint8(pipeline.get_data_inverse_scaler(config)(samples))
        np.savez_compressed(os.path.join(folder, "sample.npz"), samples=images)
        image = image_io.save_image_grid(images, os.path.join(folder, "sample.png"))
    writer.write_images(step, {"samples": image[None]})
    logging.info("Wrote %s", os.path.join(folder, "sample.png"))


class ScoreModel:
    """The score model as a `loop.Task`: denoising score matching on the config's images.

    Evaluation: the EMA loss of one held-out batch every ``eval_freq`` steps. Snapshots (with
    ``training.snapshot_sampling``): ``snapshot_batch_size`` samples of the config's sampler.
    """

    train_log = loop.TrainLog(
        metrics=("loss", "grad_norm"),
        line="step {step}/{total_steps} ({percent:.1f}%) | loss {train_loss:.5g} | "
        "lr {learning_rate:.3g} | grad_norm {train_grad_norm:.3g} | {speed}",
        speed="{steps_per_sec:.2f} steps/s | ETA {eta}",
        examples_per_sec=True,
    )
    eval_at_end = False
    validate_config = staticmethod(loop.validate_config)

    def __init__(self, config, mesh, workdir: str, writer):
        self.config, self.mesh, self.workdir, self.writer = config, mesh, workdir, writer
        # Every process reads only its share of each global batch.
        self.train_iter, self.eval_iter = pipeline.create_datasets(
            config,
            seed=config.seed,
            data_dir=config.data.get("data_dir", None),
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )
        iterators = {checkpoints.TRAIN_ITER: self.train_iter, checkpoints.EVAL_ITER: self.eval_iter}
        self.iterators = {k: v for k, v in iterators.items() if hasattr(v, "get_state")}
        self.model = models.get_model(config)
        self.sde = sde_lib.get_sde(config)
        self.ema_rate = config.model.ema_rate
        self.loss_fn = image_loss(create_loss_fn(config, self.sde, self.model, train=True))
        self.replicated = NamedSharding(mesh, P())
        self.split = NamedSharding(mesh, P("data"))  # [B, ...]
        self._eval_step = jax.jit(
            functools.partial(
                eval_step, loss_fn=create_loss_fn(config, self.sde, self.model, train=False)
            ),
            in_shardings=(self.replicated, self.split, self.replicated),
            out_shardings=self.replicated,
        )
        # Built now, so that a bad sampling setting stops the run before it starts.
        self._sampler = self._create_sampler() if config.training.snapshot_sampling else None

    def init_params(self, rng):
        return init_params(self.config, self.model, rng)

    def next_batches(self, num: int) -> dict[str, np.ndarray]:
        images = [np.asarray(next(self.train_iter)["image"], np.float32) for _ in range(num)]
        return {"image": np.stack(images)}

    def evaluate(self, state: TrainState, step: int, rng: jax.Array) -> None:
        local = np.asarray(next(self.eval_iter)["image"], np.float32)
        batch = {"image": jax.make_array_from_process_local_data(self.split, local)}
        loss = self._eval_step(state, batch, jax.random.fold_in(rng, step))
        self.writer.write_scalars(step, {"eval_loss": float(loss["loss"])})

    def snapshot(self, state: TrainState, step: int, rng: jax.Array) -> None:
        if self._sampler is None:  # training.snapshot_sampling is off
            return
        samples = distributed.to_host(
            self._sampler(jax.random.fold_in(rng, step), state.ema_params)
        )
        if jax.process_index() == 0:
            _write_snapshot(self.config, samples, step, self.workdir, self.writer)

    def _create_sampler(self):
        """The snapshot sampler ``(rng, params) -> x``, its samples split over the devices."""
        t = self.config.training
        num = t.get("snapshot_batch_size", None) or t.batch_size
        shape = (num, *pipeline.image_shape(self.config))
        sampler = registry.get_sampler(self.config, models.get_model_fn(self.model), shape)
        sharding = self.split if num % self.mesh.devices.size == 0 else self.replicated
        return jax.jit(lambda rng, params: sampler(rng, params)[0], out_shardings=sharding)


def train_and_evaluate(config, workdir: str, mesh: jax.sharding.Mesh | None = None) -> TrainState:
    """Trains (or resumes training of) the score model of ``config`` in ``workdir``.

    Writes ``checkpoints/`` (orbax), ``tensorboard/`` (clu event files) and
    ``samples/iter_<step>/`` under ``workdir`` and returns the final `TrainState`; arguments,
    resume, SIGTERM, the number of steps and errors as in `loop.train`.
    """
    return loop.train(ScoreModel, config, workdir, mesh)
