"""The training loop shared by everything that is trained: `train(task_type, config, workdir)`.

A task (`score_model.ScoreModel`, `classifier.Classifier`) says what is trained: its data, initial
parameters, loss and metrics, evaluation and snapshots. This module runs it over a 1-D
``("data",)`` mesh: resume, ``n_jitted_steps`` updates per dispatch with metrics read back one
dispatch late, the non-finite stop, the checkpoint cadence, SIGTERM and the log lines
(docs/training.md).
"""

import contextlib
import dataclasses
import functools
import math
import os
import signal
import time
from typing import Any, NamedTuple, Protocol

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from score_sde_jax import checkpoints, distributed, errors, outputs
from score_sde_jax.training.optimizer import create_learning_rate_fn, create_optimizer
from score_sde_jax.training.state import TrainState
from score_sde_jax.training.step import train_steps, unrolls_on

# training.* step intervals; each must be a multiple of training.n_jitted_steps
# (docs/original_code.md#training-evaluation-and-data).
_STEP_FREQUENCIES = ("log_freq", "eval_freq", "snapshot_freq", "snapshot_freq_for_preemption")
# A network above this size, or images of this size and more, make a paper-size run: far too
# slow for a CPU (README, benchmarks).
_CPU_MAX_PARAMS = 5_000_000
_CPU_PAPER_IMAGE_SIZE = 32


class NonFiniteLossError(errors.UserError, FloatingPointError):
    """Training stopped because the loss became NaN or infinite."""


@dataclasses.dataclass(frozen=True)
class TrainLog:
    """A task's log line every ``training.log_freq`` steps, and its TensorBoard scalars.

    Attributes:
      metrics: train-step metrics averaged over the steps of the line, as scalars ``train_<name>``.
      line: `str.format` template with ``step``, ``total_steps``, ``percent``, ``speed`` and the
        scalars (``train_<name>``, ``learning_rate``).
      speed: template of ``speed`` with ``steps_per_sec`` and ``eta``, once the speed is known.
      examples_per_sec: whether the scalars include ``examples_per_sec``.
    """

    metrics: tuple[str, ...]
    line: str
    speed: str
    examples_per_sec: bool = False


class Task(Protocol):
    """What `train` trains, built as ``task_type(config, mesh, workdir, writer)``.

    ``validate_config(config, num_devices, num_processes)`` is a static method that raises
    ValueError for a config the task cannot train; the rest is below.
    """

    train_log: TrainLog
    ema_rate: float  # EMA decay of the parameters used for evaluation and sampling
    eval_at_end: bool  # whether the last step is evaluated too (not only every eval_freq)
    iterators: dict  # grain data iterators saved with the checkpoints, by checkpoint item name
    loss_fn: Any  # loss_fn(params, rng, batch) -> (loss, metrics), in train mode

    def init_params(self, rng: jax.Array) -> Any:
        """The network's initial parameters for the concrete key ``rng`` (computed eagerly; a
        network's ``model.init`` under `jax.jit` compiles for minutes, see `models.init_params`)."""

    def next_batches(self, num: int) -> dict[str, np.ndarray]:
        """This process's next ``num`` training batches stacked to [num, per-process batch, ...]."""

    def evaluate(self, state: TrainState, step: int, rng: jax.Array) -> None:
        """Evaluates ``state`` at ``step`` and writes the metrics; ``rng`` is the run's
        evaluation key (docs/training.md#randomness)."""

    def snapshot(self, state: TrainState, step: int, rng: jax.Array) -> None:
        """Writes what the task shows at ``step``, e.g. samples, with the run's snapshot key."""


def validate_config(config, num_devices: int, num_processes: int) -> None:
    """Raises `errors.UsageError` (a ValueError) for settings the sharded loop cannot run.

    Checks that there is a step to run, that the global batch is positive and splits evenly over
    devices, processes and accumulation micro-batches, that the step frequencies are multiples of
    ``n_jitted_steps`` and that the optimizer is Adam.
    """
    t = config.training
    accum = t.get("grad_accum_steps", 1)
    if t.n_iters < 1:
        raise errors.UsageError(
            f"training.n_iters={t.n_iters} must be >= 1", "pass --config.training.n_iters=N, N >= 1"
        )
    if t.n_jitted_steps < 1 or accum < 1:
        raise errors.UsageError(
            f"training.n_jitted_steps={t.n_jitted_steps} and training.grad_accum_steps={accum} "
            "must be >= 1",
            "set them to 1 or more",
        )
    for name in _STEP_FREQUENCIES:
        if t[name] <= 0 or t[name] % t.n_jitted_steps:
            raise errors.UsageError(
                f"training.{name}={t[name]} must be a positive multiple of "
                f"training.n_jitted_steps={t.n_jitted_steps}",
                f"pass --config.training.{name}=k*{t.n_jitted_steps}",
            )
    for key, size in (
        ("training.batch_size", t.batch_size),
        ("eval.batch_size", config.eval.batch_size),
    ):
        multiple = math.lcm(num_devices, num_processes)
        if size <= 0:
            raise errors.UsageError(
                f"{key}={size} must be positive", f"pass --config.{key}=k*{multiple}"
            )
        if size % num_devices or size % num_processes:
            raise errors.UsageError(
                f"{key}={size} must be divisible by the number of devices ({num_devices}) and "
                f"processes ({num_processes})",
                f"pass --config.{key}=k*{multiple}",
            )
    if (t.batch_size // num_devices) % accum:
        raise errors.UsageError(
            f"The per-device batch {t.batch_size // num_devices} must be divisible by "
            f"training.grad_accum_steps={accum}",
            "change training.batch_size or training.grad_accum_steps",
        )
    if config.optim.optimizer.lower() != "adam":
        raise errors.UsageError(
            f"optim.optimizer={config.optim.optimizer!r}: only 'Adam' is supported",
            "pass --config.optim.optimizer=Adam",
        )


def cpu_warning(config, num_params: int, platform: str) -> str | None:
    """The one log line for a paper-size run (more than a few million parameters, or images
    of 32 px and more) about to train on the CPU, with the fix; None for any other run."""
    image_size = config.data.get("image_size", 0)
    if platform != "cpu" or (num_params <= _CPU_MAX_PARAMS and image_size < _CPU_PAPER_IMAGE_SIZE):
        return None
    return (
        f"Training a {num_params / 1e6:.1f}M-parameter network on {config.data.dataset}"
        f"{f' ({image_size} px)' if image_size else ''} on the CPU: expect well under 1 step/s "
        "(CIFAR-10 NCSN++: ~0.15 "
        "steps/s at batch 8 on 2 cores). For a GPU or TPU install JAX for it: "
        "pip install -e '.[cuda12]' or '.[tpu]' (README, Install)."
    )


def compile_without_optimizations(fn, *args, **jit_kwargs):
    """``jax.jit(fn, **jit_kwargs)`` compiled for ``args`` without XLA's backend optimisations.

    For functions that run once, such as initialisation: optimising the WRN's truncated-normal
    initialisers makes XLA:CPU compile them about ten times longer than a whole training step.
    """
    lowered = jax.jit(fn, **jit_kwargs).lower(*args)
    return lowered.compile(compiler_options={"xla_backend_optimization_level": 0})


def train(task_type, config, workdir: str, mesh: jax.sharding.Mesh | None = None) -> TrainState:
    """Trains (or resumes training of) ``task_type`` with ``config`` in ``workdir``.

    Writes ``checkpoints/`` (orbax) and ``tensorboard/`` (clu) under ``workdir``, plus what the
    task writes. A re-run with the same workdir resumes from the newest readable checkpoint and
    continues bit for bit; SIGTERM saves a checkpoint and returns early. Runs ``training.n_iters``
    steps rounded up to a multiple of ``training.n_jitted_steps`` (docs/original_code.md, D16).

    Args:
      task_type: a `Task` class.
      config: a ConfigDict with the original's keys (docs/configs.md).
      workdir: output folder (created if needed).
      mesh: a 1-D ``("data",)`` mesh; default `distributed.create_mesh()` over all devices.

    Returns:
      The final `TrainState` (replicated over ``mesh``).

    Raises:
      ValueError: a config the task cannot train (`errors.UsageError`), data that cannot be read
        (`errors.DataError`), a run folder holding another network's checkpoints
        (`checkpoints.CheckpointMismatchError`); all of them before anything is compiled.
      NonFiniteLossError: the training loss became NaN/inf; no checkpoint after it is written.
    """
    t = config.training
    mesh = distributed.create_mesh() if mesh is None else mesh
    task_type.validate_config(config, mesh.devices.size, jax.process_count())
    os.makedirs(outputs.check_dir(workdir, "--workdir"), exist_ok=True)
    writer = _LazyWriter(workdir)
    try:
        with errors.config_values(f"building the {task_type.__name__} of the config"):
            task = task_type(config, mesh, workdir, writer)
        optimizer = create_optimizer(config)
        # The base key lives on the host: every key is derived from it inside jitted functions,
        # so it must not be committed to one device.
        rng = np.asarray(jax.random.PRNGKey(config.seed))
        init_rng = jax.random.fold_in(rng, 0)
        run = checkpoints.RunFolder(workdir)
        if run.steps():  # resuming: the saved state must fit before anything is compiled
            run.check_resumable(jax.eval_shape(_init_fn(task, optimizer), init_rng), rng, config)
        state = _initial_state(task, optimizer, init_rng, mesh)
        num_params = sum(leaf.size for leaf in jax.tree.leaves(state.params))
        warning = cpu_warning(config, num_params, mesh.devices.flat[0].platform)
        if warning:  # before the train step compiles
            logging.warning(warning)
        with run.manager(max_to_keep=t.get("max_to_keep", 2), keep_period=t.snapshot_freq) as ckpt:
            try:
                state, rng, step, resumed = _restore(ckpt, config, task, state, rng, writer)
                return _loop(
                    task,
                    config,
                    state,
                    step,
                    saved_step=step if resumed else None,
                    train_steps_fn=_train_steps_fn(config, task, optimizer, mesh),
                    batches_sharding=NamedSharding(mesh, P(None, "data")),
                    ckpt=ckpt,
                    rng=rng,
                    writer=writer,
                )
            finally:
                ckpt.wait_until_finished()
    finally:
        writer.flush()


class _LazyWriter:
    """The clu TensorBoard writer of ``<workdir>/tensorboard`` (only process 0 writes files),
    created when first written to: a run refused before its first step (e.g. resumed with another
    network's config) leaves the run folder as it was, and TensorFlow is imported only then."""

    def __init__(self, workdir: str):
        self._workdir, self._writer = workdir, None

    def __getattr__(self, name):
        if self._writer is None:
            from clu import metric_writers  # noqa: PLC0415 (imports TensorFlow)

            self._writer = metric_writers.create_default_writer(
                os.path.join(self._workdir, "tensorboard"), just_logging=jax.process_index() != 0
            )
        return getattr(self._writer, name)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()


def _init_fn(task, optimizer):
    """``init(rng) -> TrainState`` with the task's initial parameters."""
    return lambda rng: TrainState.create(task.init_params(rng), optimizer)


def _initial_state(task, optimizer, rng, mesh) -> TrainState:
    """The task's initial parameters in a new `TrainState`, replicated over ``mesh``."""
    params = jax.device_get(task.init_params(rng))  # the same on every process: from ``rng``

    def create(params):
        return TrainState.create(params, optimizer)

    return jax.jit(create, out_shardings=NamedSharding(mesh, P()))(params)


def _restore(ckpt, config, task, state, rng, writer):
    """The newest readable checkpoint -> ``(state, host rng, step, resumed)``.

    A new run logs the parameter overview and writes the config as hyperparameters instead.
    """
    restored = ckpt.restore_latest(state, rng, iterators=task.iterators)
    if restored is None:
        from clu import parameter_overview  # noqa: PLC0415 (only a new run prints it)

        if jax.process_index() == 0:
            parameter_overview.log_parameter_overview(state.params, include_stats=False)
        writer.write_hparams(_flat_hparams(config))
        return state, rng, 0, False
    state, rng, step = restored
    logging.info("Resumed from checkpoint %d in %s.", step, ckpt.directory)
    return state, np.asarray(jax.device_get(rng)), step, True


def _train_steps_fn(config, task, optimizer, mesh):
    """`train_steps` of the task, compiled for a replicated state and batches split over
    ``mesh``: ``(state, batches [n_jitted_steps, B, ...], rng) -> (state, metrics)``."""
    replicated = NamedSharding(mesh, P())
    batches = NamedSharding(mesh, P(None, "data"))
    return jax.jit(
        functools.partial(
            train_steps,
            loss_fn=task.loss_fn,
            optimizer=optimizer,
            learning_rate_fn=create_learning_rate_fn(config),
            ema_rate=task.ema_rate,
            grad_accum_steps=config.training.get("grad_accum_steps", 1),
            unroll=unrolls_on(mesh.devices.flat[0].platform),
        ),
        in_shardings=(replicated, batches, replicated),
        out_shardings=(replicated, replicated),
        donate_argnums=0,
    )


def _loop(
    task, config, state, step, *, saved_step, train_steps_fn, batches_sharding, ckpt, rng, writer
):
    """Runs dispatches of ``n_jitted_steps`` updates from ``step`` to the last step.

    ``saved_step`` is the step already on disk (the restored one), so it is not saved again.
    Returns the last state, or the state saved on SIGTERM.
    """
    t = config.training
    n = t.n_jitted_steps
    total_steps = math.ceil(t.n_iters / n) * n
    first_log_step = step + n
    train_rng, eval_rng, sample_rng = (jax.random.fold_in(rng, k) for k in (1, 2, 3))
    save = functools.partial(ckpt.save, rng=rng, iterators=task.iterators, config=config)
    log = functools.partial(
        _log_train, task.train_log, writer, total_steps=total_steps, batch_size=t.batch_size
    )
    metrics, stopwatch = _Metrics(ckpt), _Stopwatch()
    with _Preemption() as preemption:
        if step >= total_steps:
            logging.info("Training already finished at step %d (%s).", step, ckpt.directory)
        while step < total_steps:
            if preemption.requested():
                metrics.read()
                if saved_step != step:  # e.g. SIGTERM right after a periodic save
                    save(step, state)
                ckpt.wait_until_finished()
                logging.warning(
                    "Preempted: saved checkpoint %d; run the same command again to resume.", step
                )
                return state
            batches = _global_batches(task.next_batches(n), batches_sharding, t.batch_size)
            state, step_metrics = train_steps_fn(state, batches, train_rng)
            metrics.add(step, step_metrics)
            step += n
            stopwatch.steps += n
            metrics.read(keep=1)  # the previous dispatch's, while this one runs

            due = _due(t, step, total_steps, first_log_step, task.eval_at_end)
            if not (due.log or due.eval or due.checkpoint):
                continue
            metrics.read()  # a non-finite loss stops the run before any later checkpoint
            if due.log:
                seconds = stopwatch.seconds()
                speed = None if step == first_log_step else stopwatch.steps / seconds
                log(step, metrics.take(), seconds, speed)
                stopwatch.restart()
            with stopwatch.side_work():
                if due.eval:
                    task.evaluate(state, step, eval_rng)
                if due.checkpoint and saved_step != step:
                    save(step, state)
                    saved_step = step
                if due.snapshot:
                    task.snapshot(state, step, sample_rng)
        metrics.read()
    return state


class _Due(NamedTuple):
    """What happens after a dispatch."""

    log: bool
    eval: bool
    checkpoint: bool
    snapshot: bool


def _due(t, step: int, total_steps: int, first_log_step: int, eval_at_end: bool) -> _Due:
    """The events at ``step`` of ``config.training`` ``t`` (docs/training.md#cadence)."""
    is_last = step == total_steps
    snapshot = step % t.snapshot_freq == 0 or is_last
    return _Due(
        log=step % t.log_freq == 0 or step == first_log_step or is_last,
        eval=step % t.eval_freq == 0 or (eval_at_end and is_last),
        checkpoint=snapshot or step % t.snapshot_freq_for_preemption == 0,
        snapshot=snapshot,
    )


def _global_batches(local: dict, sharding: NamedSharding, batch_size: int) -> dict:
    """Global arrays [num, batch_size, ...] from every process's stacked share of the batches."""
    return {
        k: jax.make_array_from_process_local_data(
            sharding, v, (v.shape[0], batch_size, *v.shape[2:])
        )
        for k, v in local.items()
    }


class _Metrics:
    """Step metrics of past dispatches: on the device until read, then on the host until logged."""

    def __init__(self, ckpt: checkpoints.CheckpointManager):
        self._ckpt = ckpt
        self._pending = []  # (first step of the dispatch, device metrics [n_jitted]) not yet read
        self._window = []  # host metrics since the last log line

    def add(self, first_step: int, metrics: dict) -> None:
        self._pending.append((first_step, metrics))

    def read(self, keep: int = 0) -> None:
        """Reads back all but the ``keep`` newest dispatches' metrics.

        Raises:
          NonFiniteLossError: a loss among them is NaN or infinite.
        """
        while len(self._pending) > keep:
            first, metrics = self._pending.pop(0)
            metrics = jax.device_get(metrics)
            bad = np.flatnonzero(~np.isfinite(metrics["loss"]))
            if bad.size:
                message = (
                    f"Non-finite training loss ({metrics['loss'][bad[0]]}) at step "
                    f"{first + int(bad[0])}; training stopped. Checkpoints on disk: "
                    f"{self._ckpt.all_steps()} (all finite)."
                )
                logging.error(message)
                raise NonFiniteLossError(
                    message,
                    "lower optim.lr or raise optim.warmup (or check the data), then rerun: "
                    "training resumes from the last checkpoint",
                )
            self._window.append(metrics)

    def take(self) -> dict[str, np.ndarray]:
        """The metrics read since the last call, concatenated over their steps."""
        window, self._window = self._window, []
        return {k: np.concatenate([np.atleast_1d(m[k]) for m in window]) for k in window[0]}


class _Stopwatch:
    """Seconds and steps since the last log line, leaving out side work (evaluation,
    checkpoints, snapshots) so that steps/s measures training alone."""

    def __init__(self):
        self.restart()

    def restart(self) -> None:
        self.start, self.side, self.steps = time.time(), 0.0, 0

    def seconds(self) -> float:
        return time.time() - self.start - self.side

    @contextlib.contextmanager
    def side_work(self):
        start = time.time()
        yield
        self.side += time.time() - start


class _Preemption:
    """SIGTERM as a flag that the loop polls; all processes agree on it."""

    def __enter__(self):
        self._flag, self._previous = False, None
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: preemption is left to the caller.
            logging.warning("Not in the main thread: SIGTERM will not trigger a checkpoint.")
        return self

    def __exit__(self, *exc_info):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

    def _handle(self, signum, frame):
        del signum, frame
        logging.warning("SIGTERM received: saving a checkpoint after the current step.")
        self._flag = True

    def requested(self) -> bool:
        if jax.process_count() == 1:
            return self._flag
        return bool(np.any(multihost_utils.process_allgather(np.int32(self._flag))))


def _log_train(log, writer, step, metrics, seconds, steps_per_sec, *, total_steps, batch_size):
    """Writes the scalars and the line of `TrainLog` ``log``; ``steps_per_sec`` is None for the
    first dispatch of a run, whose ``seconds`` include compilation."""
    scalars = {f"train_{k}": float(np.mean(metrics[k])) for k in log.metrics}
    scalars["learning_rate"] = float(metrics["learning_rate"][-1])
    if steps_per_sec is None:
        speed = f"first step incl. compilation {_format_duration(seconds)}"
    else:
        scalars["steps_per_sec"] = steps_per_sec
        if log.examples_per_sec:
            scalars["examples_per_sec"] = steps_per_sec * batch_size
        eta = _format_duration((total_steps - step) / max(steps_per_sec, 1e-9))
        speed = log.speed.format(steps_per_sec=steps_per_sec, eta=eta)
    writer.write_scalars(step, scalars)
    percent = 100.0 * step / total_steps
    logging.info(
        log.line.format(step=step, total_steps=total_steps, percent=percent, speed=speed, **scalars)
    )


def _format_duration(seconds: float) -> str:
    """``1h02m03s`` or ``2m05s``."""
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def _flat_hparams(config) -> dict:
    """``config`` as flat ``{"section.key": value}`` hyperparameters for TensorBoard."""
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
