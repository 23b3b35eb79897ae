"""Training the noise-conditional classifier p_φ(y | x, σ) (paper App. I.1): its objective, its
per-band evaluation, its task for `loop.train`, and `train_classifier` (docs/training.md).

The classifier (`score_sde_jax.models.wideresnet.WideResnet`) guides class-conditional sampling
through ∇_x log p_φ(y | x, σ) (`score_sde_jax.sampling.controllable.get_pc_conditional_sampler`);
its config keys live in ``config.classifier`` (docs/training.md#the-classifier).
"""

import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from score_sde_jax import checkpoints
from score_sde_jax.data import datasets, image_folder, pipeline
from score_sde_jax.errors import DataError, InputError, UsageError
from score_sde_jax.models import wideresnet
from score_sde_jax.training import loop
from score_sde_jax.training.optimizer import create_optimizer
from score_sde_jax.training.state import TrainState

# ----------------------------------------------------------------------------------------------
# Network and config.
# ----------------------------------------------------------------------------------------------


def create_classifier(config) -> wideresnet.WideResnet:
    """The `WideResnet` of ``config.classifier`` (blocks_per_group, channel_multiplier, classes)."""
    c = config.classifier
    return wideresnet.create_classifier(c.blocks_per_group, c.channel_multiplier, c.num_classes)


def get_logit_fn(config, classifier):
    """``logits_fn(params, y, sigmas)`` with the channel statistics of ``config.classifier``."""
    c = config.classifier
    return wideresnet.get_logit_fn(classifier, tuple(c.data_mean), tuple(c.data_std))


def get_classifier_fn(config, classifier, sde, centered: bool):
    """``classifier_fn(params, x, t)`` for guided sampling of a score model with SDE ``sde``.

    Args:
      config: the classifier's config (for its channel statistics).
      classifier: from `create_classifier`.
      sde: the score model's SDE.
      centered: whether the score model's data are centered (its ``config.data.centered``).
    """
    c = config.classifier
    return wideresnet.get_classifier_fn(
        classifier, sde, centered, tuple(c.data_mean), tuple(c.data_std)
    )


def init_params(classifier, rng, image_shape):
    """Initial parameters of ``classifier`` for images of ``image_shape`` (H, W, C)."""
    x = jnp.zeros((1, *image_shape), jnp.float32)
    return classifier.init(rng, x, jnp.ones((1,), jnp.float32))["params"]


def dataset_num_classes(config) -> int:
    """Number of classes of ``config.data.dataset``.

    Raises:
      UsageError: unknown dataset, or one without class labels (the message names those with).
      FileNotFoundError: a ``FOLDER`` dataset whose folder does not exist.
    """
    name = datasets.canonical_name(config.data.dataset)
    if datasets.DATASETS[name].num_classes:
        return datasets.DATASETS[name].num_classes
    if name == "FOLDER":
        classes = {}  # data.path / data.eval_path -> class subdirectory names
        for key in ("path", "eval_path"):
            root = config.data.get(key, None)
            if root:
                files, labels = image_folder.list_images(root)
                root = pathlib.Path(root).expanduser()
                # All labels 0: the images are not all in subdirectories, or in a single one.
                names = {f.relative_to(root).parts[0] for f in files} if labels.any() else ()
                classes[key] = sorted(names)
        if not classes or any(len(names) < 2 for names in classes.values()):
            raise UsageError(
                "A FOLDER dataset for the classifier needs data.path (and optionally "
                "data.eval_path) holding one subdirectory of images per class, at least two."
            )
        if len(set(map(tuple, classes.values()))) > 1:
            raise UsageError(
                f"data.path has the classes {classes['path']} but data.eval_path has "
                f"{classes['eval_path']}; both must hold the same class subdirectories."
            )
        return len(classes["path"])
    raise UsageError(
        f"data.dataset={config.data.dataset!r} has no class labels to train a classifier on; "
        f"use one of {', '.join(n for n, d in datasets.DATASETS.items() if d.num_classes)} or FOLDER (one subdirectory per class)."
    )


def validate_config(config, num_devices: int, num_processes: int) -> None:
    """Raises `UsageError` (a ValueError) for settings the classifier loop cannot run.

    On top of `loop.validate_config` (batch sizes, step frequencies, Adam): the dataset has
    ``classifier.num_classes`` classes, 0 < σ_min < σ_max, channel statistics match the images,
    the image size is a multiple of 4 (the WRN halves it twice) and there is no gradient
    accumulation (not implemented here).
    """
    if "classifier" not in config:
        raise UsageError(
            "The config has no 'classifier' section: it is not a classifier config. Use "
            "configs/classifier_digits.py or configs/classifier/*.py."
        )
    loop.validate_config(config, num_devices, num_processes)
    c = config.classifier
    if config.training.get("grad_accum_steps", 1) != 1:
        raise UsageError("training.grad_accum_steps must be 1 for the classifier.")
    num_classes = dataset_num_classes(config)
    if c.num_classes != num_classes:
        raise UsageError(
            f"classifier.num_classes={c.num_classes} but data.dataset={config.data.dataset!r} "
            f"has {num_classes} classes; set --config.classifier.num_classes={num_classes}."
        )
    if not 0 < c.sigma_min < c.sigma_max:
        raise UsageError(
            f"Need 0 < classifier.sigma_min < classifier.sigma_max, got {c.sigma_min} and "
            f"{c.sigma_max}."
        )
    if c.num_eval_bands < 1:
        raise UsageError(f"classifier.num_eval_bands={c.num_eval_bands} must be >= 1.")
    channels = config.data.num_channels
    if len(c.data_mean) != channels or len(c.data_std) != channels or min(c.data_std) <= 0:
        raise UsageError(
            f"classifier.data_mean / data_std must hold {channels} values (one per channel of "
            f"data.num_channels), the std ones positive; got {c.data_mean} / {c.data_std}."
        )
    if config.data.image_size % 4:
        raise UsageError(
            f"data.image_size={config.data.image_size} must be a multiple of 4 (the WRN "
            "downsamples twice by 2)."
        )


# ----------------------------------------------------------------------------------------------
# Objective and evaluation.
# ----------------------------------------------------------------------------------------------


def perturb(rng, y, sigma_min: float, sigma_max: float):
    """VE perturbation x = y + σ z with log σ ~ U[log σ_min, log σ_max] per example.

    The keys are ``sigma_rng, z_rng = jax.random.split(rng)``: σ from the first, z from the
    second.

    Returns:
      ``(x, sigmas)``: x of y's shape [B, ...], sigmas [B].
    """
    sigma_rng, z_rng = jax.random.split(rng)
    log_sigma = jax.random.uniform(
        sigma_rng, (y.shape[0],), minval=jnp.log(sigma_min), maxval=jnp.log(sigma_max)
    )
    sigmas = jnp.exp(log_sigma)
    z = jax.random.normal(z_rng, y.shape, y.dtype)
    return y + sigmas.reshape((-1,) + (1,) * (y.ndim - 1)) * z, sigmas


def get_loss_fn(logits_fn, sigma_min: float, sigma_max: float, inverse_scaler=lambda x: x):
    """``loss_fn(params, rng, images, labels) -> (loss, accuracy)`` (paper App. I.1).

    loss = mean_b −log softmax(logits_fn(params, y_b + σ_b z_b, σ_b))[label_b] with
    y = inverse_scaler(images) ∈ [0, 1] and (σ, z) from `perturb` (log-uniform σ).

    Args:
      logits_fn: ``logits_fn(params, x, sigmas)``, e.g. from `get_logit_fn`.
      sigma_min, sigma_max: the range of σ.
      inverse_scaler: maps the input pipeline's images to [0, 1] (undoes centering).
    """

    def loss_fn(params, rng, images, labels):
        x, sigmas = perturb(rng, inverse_scaler(images), sigma_min, sigma_max)
        logits = logits_fn(params, x, sigmas)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        accuracy = jnp.mean(jnp.argmax(logits, axis=-1) == labels)
        return loss, accuracy

    return loss_fn


def band_edges(sigma_min: float, sigma_max: float, num_bands: int) -> tuple[float, ...]:
    """``num_bands + 1`` edges splitting [σ_min, σ_max] into bands of equal width in log σ."""
    return tuple(float(s) for s in np.geomspace(sigma_min, sigma_max, num_bands + 1))


def get_eval_fn(logits_fn, edges, inverse_scaler=lambda x: x):
    """``eval_fn(params, rng, images, labels, mask)``: per-band sums over the unmasked examples.

    Band k perturbs every example with σ log-uniform in [edges[k], edges[k + 1]] (key
    fold_in(rng, k), see `perturb`); so the mean over bands estimates the training objective.

    Returns:
      ``{"correct": [K], "loss": [K], "count": []}``: correct predictions and summed
      cross-entropies per band, and the number of unmasked examples.
    """

    lows, highs = jnp.asarray(edges[:-1], jnp.float32), jnp.asarray(edges[1:], jnp.float32)

    def eval_fn(params, rng, images, labels, mask):
        y = inverse_scaler(images)
        weights = mask.astype(jnp.float32)

        def band(inputs):  # lax.map: the network is compiled once for all bands
            k, lo, hi = inputs
            x, sigmas = perturb(jax.random.fold_in(rng, k), y, lo, hi)
            logits = logits_fn(params, x, sigmas)
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
            correct = jnp.argmax(logits, axis=-1) == labels
            return jnp.sum(weights * correct), jnp.sum(weights * ce)

        correct, loss = jax.lax.map(band, (jnp.arange(len(lows)), lows, highs))
        return {"correct": correct, "loss": loss, "count": weights.sum()}

    return eval_fn


def band_name(lo: float, hi: float) -> str:
    """The metric suffix of a noise band, e.g. ``sigma_0.0362-0.263`` (3 significant digits)."""

    def fmt(x):
        return np.format_float_positional(x, precision=3, fractional=False, trim="-")

    return f"sigma_{fmt(lo)}-{fmt(hi)}"


def create_evaluator(config, mesh, data_dir: str | None = None):
    """``evaluate(params, rng) -> metrics``: one pass over the held-out split, every σ band.

    Every call sees the same examples and, for the same ``rng``, the same noise, so successive
    evaluations of a run differ only through the parameters. Metrics (floats):
    ``eval_loss`` and ``eval_accuracy`` (means over the bands) and, per band,
    ``eval_loss/<band>`` and ``eval_accuracy/<band>`` (see `band_name`).
    """
    c = config.classifier
    classifier = create_classifier(config)
    edges = band_edges(c.sigma_min, c.sigma_max, c.num_eval_bands)
    eval_fn = get_eval_fn(
        get_logit_fn(config, classifier), edges, pipeline.get_data_inverse_scaler(config)
    )
    replicated = NamedSharding(mesh, P())
    batch_sharding = NamedSharding(mesh, P("data"))
    p_eval = jax.jit(
        eval_fn,
        in_shardings=(replicated, replicated) + (batch_sharding,) * 3,
        out_shardings=replicated,
    )
    _, eval_iter = pipeline.create_datasets(
        config,
        seed=config.seed,
        data_dir=data_dir or config.data.get("data_dir", None),
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        evaluation=True,
    )
    start = eval_iter.get_state()

    def evaluate(params, rng):
        eval_iter.set_state(start)
        totals = None
        for i, batch in enumerate(eval_iter):
            arrays = [
                jax.make_array_from_process_local_data(batch_sharding, np.asarray(batch[k], dtype))
                for k, dtype in (("image", np.float32), ("label", np.int32), ("mask", bool))
            ]
            sums = jax.device_get(p_eval(params, jax.random.fold_in(rng, i), *arrays))
            totals = sums if totals is None else jax.tree.map(np.add, totals, sums)
        count = max(float(totals["count"]), 1.0)
        accuracy, loss = totals["correct"] / count, totals["loss"] / count
        metrics = {"eval_loss": float(loss.mean()), "eval_accuracy": float(accuracy.mean())}
        for k in range(len(edges) - 1):
            name = band_name(edges[k], edges[k + 1])
            metrics[f"eval_loss/{name}"] = float(loss[k])
            metrics[f"eval_accuracy/{name}"] = float(accuracy[k])
        return metrics

    return evaluate


def restore_params(config, workdir: str):
    """The EMA parameters of the newest checkpoint in ``<workdir>/checkpoints`` and its step.

    Raises:
      FileNotFoundError: there is no checkpoint.
      RuntimeError: none of the checkpoints fits ``config``'s network.
    """
    run = checkpoints.RunFolder(workdir)
    if not run.steps():
        raise InputError(f"No classifier checkpoints in {run.checkpoint_dir}", "train one first")
    classifier = create_classifier(config)
    optimizer = create_optimizer(config)
    rng = np.asarray(jax.random.PRNGKey(0))
    shape = pipeline.image_shape(config)
    abstract = jax.eval_shape(
        lambda rng: TrainState.create(init_params(classifier, rng, shape), optimizer), rng
    )
    with run.manager() as ckpt:
        restored = ckpt.restore_latest(abstract, rng)
    if restored is None:
        raise InputError(f"No classifier checkpoints in {run.checkpoint_dir}", "train one first")
    state, _, step = restored
    return state.ema_params, step


# ----------------------------------------------------------------------------------------------
# The task.
# ----------------------------------------------------------------------------------------------


class Classifier:
    """The noise-conditional classifier as a `loop.Task`: cross-entropy of VE-perturbed labelled
    images (`get_loss_fn`); the held-out loss and accuracy per σ band (`create_evaluator`) every
    ``eval_freq`` steps and at the end; no snapshots."""

    train_log = loop.TrainLog(
        metrics=("loss", "accuracy", "grad_norm"),
        line="step {step}/{total_steps} | loss {train_loss:.4g} | accuracy {train_accuracy:.3f} "
        "| lr {learning_rate:.3g} | grad_norm {train_grad_norm:.3g} | {speed}",
        speed="{steps_per_sec:.2f} steps/s",
    )
    eval_at_end = True
    validate_config = staticmethod(validate_config)

    def __init__(self, config, mesh, workdir: str, writer):
        del workdir  # nothing but checkpoints and scalars
        c = config.classifier
        self.config, self.writer = config, writer
        data_dir = config.data.get("data_dir", None)
        self.train_iter, _ = pipeline.create_datasets(
            config,
            seed=config.seed,
            data_dir=data_dir,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )
        self.iterators = {checkpoints.TRAIN_ITER: self.train_iter}
        self._evaluate = create_evaluator(config, mesh, data_dir)
        self.classifier = create_classifier(config)
        self.ema_rate = c.ema_rate
        loss_fn = get_loss_fn(
            get_logit_fn(config, self.classifier),
            c.sigma_min,
            c.sigma_max,
            pipeline.get_data_inverse_scaler(config),
        )

        def batch_loss(params, rng, batch):
            loss, accuracy = loss_fn(params, rng, batch["image"], batch["label"])
            return loss, {"accuracy": accuracy}

        self.loss_fn = batch_loss

    def init_params(self, rng):
        # Compiled without backend optimisations (`loop.compile_without_optimizations`): seconds.
        # `models.init_params` is no faster for the WideResNet and its values differ in the last
        # bits (its truncated normals compiled at -O1 instead of -O0).
        init = functools.partial(
            init_params, self.classifier, image_shape=pipeline.image_shape(self.config)
        )
        if isinstance(rng, jax.core.Tracer):  # under `jax.eval_shape` (the resume check)
            return init(rng)
        return loop.compile_without_optimizations(init, rng)(rng)

    def next_batches(self, num: int) -> dict[str, np.ndarray]:
        """Raises `DataError` for a label outside [0, classifier.num_classes)."""
        local = [next(self.train_iter) for _ in range(num)]
        labels = np.stack([b["label"] for b in local]).astype(np.int32)
        num_classes = self.config.classifier.num_classes
        if labels.min() < 0 or labels.max() >= num_classes:
            raise DataError(
                f"The data hold label {labels.max()} (or {labels.min()}), outside "
                f"[0, classifier.num_classes={num_classes})."
            )
        return {"image": np.stack([b["image"] for b in local]).astype(np.float32), "label": labels}

    def evaluate(self, state: TrainState, step: int, rng: jax.Array) -> None:
        metrics = self._evaluate(state.ema_params, rng)
        self.writer.write_scalars(step, metrics)
        bands = ", ".join(
            f"{k.split('/')[1]}: {v:.3f}" for k, v in metrics.items() if "accuracy/" in k
        )
        logging.info(
            "eval at step %d | loss %.4g | accuracy %.3f | per band %s",
            step,
            metrics["eval_loss"],
            metrics["eval_accuracy"],
            bands,
        )

    def snapshot(self, state: TrainState, step: int, rng: jax.Array) -> None:
        del state, step, rng  # a classifier has no samples


def train_classifier(config, workdir: str, mesh: jax.sharding.Mesh | None = None) -> TrainState:
    """Trains (or resumes training of) the classifier of ``config`` in ``workdir``.

    Writes ``checkpoints/`` (orbax; every ``training.snapshot_freq`` and
    ``snapshot_freq_for_preemption`` steps and at the end) and ``tensorboard/`` (train loss and
    accuracy every ``log_freq`` steps; held-out loss and accuracy per σ band every ``eval_freq``
    steps and at the end). Returns the final `TrainState`, whose ``ema_params`` are the
    classifier's parameters for sampling; arguments, resume and SIGTERM as in `loop.train`.

    Raises:
      ValueError: bad config (see `validate_config`) or labels outside [0, num_classes).
      loop.NonFiniteLossError: the training loss became NaN/inf.
    """
    return loop.train(Classifier, config, workdir, mesh)
