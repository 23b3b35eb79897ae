"""The dispatch loop shared by score-model and classifier training.

Each dispatch runs ``n_jitted_steps`` updates in one compiled program. Its metrics are read back
while the next dispatch runs, so the host never stalls the device; a non-finite loss still
stops the run before any checkpoint after it is written. The loop also owns the checkpoint
cadence (``training.snapshot_freq`` / ``snapshot_freq_for_preemption`` and the last step),
SIGTERM (save, then return), and the steps/s timer, which leaves out the time spent in
evaluation, checkpoints and snapshots.
"""

import dataclasses
import signal
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from score_sde_jax import checkpoints


class NonFiniteLossError(FloatingPointError):
    """Training stopped because the loss became NaN or infinite."""


class PreemptionWatcher:
    """Turns SIGTERM into a flag that the loop polls; all processes agree on it."""

    def __init__(self):
        self._flag = False
        self._previous = None
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: preemption is left to the caller.
            logging.warning("Not in the main thread: SIGTERM will not trigger a checkpoint.")

    def _handle(self, signum, frame):
        del signum, frame
        logging.warning("SIGTERM received: saving a checkpoint after the current step.")
        self._flag = True

    def reached(self) -> bool:
        if jax.process_count() == 1:
            return self._flag
        return bool(np.any(multihost_utils.process_allgather(np.int32(self._flag))))

    def close(self):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def format_duration(seconds: float) -> str:
    """``1h02m03s`` or ``2m05s``."""
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


@dataclasses.dataclass(frozen=True)
class Interval:
    """What a log line covers: host metrics concatenated over its steps, and their speed.

    ``steps_per_sec`` is None for the first dispatch of a run, whose time includes compilation.
    """

    metrics: dict[str, np.ndarray]
    seconds: float
    steps_per_sec: float | None


def run(
    state,
    step: int,
    *,
    training,
    total_steps: int,
    dispatch: Callable[[Any], tuple[Any, dict]],
    ckpt: checkpoints.CheckpointManager,
    save: Callable[[int, Any], None],
    saved_step: int | None,
    on_log: Callable[[int, Interval], None],
    on_eval: Callable[[int, Any], None],
    eval_at_end: bool,
    on_snapshot: Callable[[int, Any], None] | None = None,
):
    """Runs dispatches from ``step`` to ``total_steps``; returns the last state.

    Args:
      state: the train state at ``step``.
      step: the first step to run (0, or the restored checkpoint's step).
      training: ``config.training`` (``n_jitted_steps``, ``log_freq``, ``eval_freq``,
        ``snapshot_freq``, ``snapshot_freq_for_preemption``).
      total_steps: a multiple of ``training.n_jitted_steps``.
      dispatch: ``state -> (state, metrics)``, one compiled dispatch; ``metrics["loss"]`` has
        one entry per step.
      ckpt: the run's checkpoint manager (waited on and closed on the way out).
      save: ``(step, state) -> None`` writes a checkpoint.
      saved_step: the step already on disk (the restored one), so it is not saved again.
      on_log: called every ``log_freq`` steps, after the first dispatch and at the end.
      on_eval: called every ``eval_freq`` steps (and at the end if ``eval_at_end``).
      eval_at_end: whether the last step is also evaluated.
      on_snapshot: called every ``snapshot_freq`` steps and at the end (samples, say).

    Raises:
      NonFiniteLossError: a training loss became NaN/inf; no checkpoint after it is written.
    """
    n_jitted = training.n_jitted_steps
    initial_step = step
    pending = []  # (first step of the dispatch, device metrics [n_jitted]) not yet read back
    window = []  # host metrics since the last log line
    timer = {"start": time.time(), "side": 0.0, "steps": 0}
    saved = {"step": saved_step}

    def save_once(step, state, wait=False):
        if saved["step"] != step:  # e.g. SIGTERM right after a periodic save
            save(step, state)
            saved["step"] = step
        if wait:
            ckpt.wait_until_finished()

    def drain(keep: int):
        while len(pending) > keep:
            first, metrics = pending.pop(0)
            metrics = jax.device_get(metrics)
            bad = np.flatnonzero(~np.isfinite(metrics["loss"]))
            if bad.size:
                message = (
                    f"Non-finite training loss ({metrics['loss'][bad[0]]}) at step "
                    f"{first + int(bad[0])}; training stopped. Checkpoints on disk: "
                    f"{ckpt.all_steps()} (all finite)."
                )
                logging.error(message)
                raise NonFiniteLossError(message)
            window.append(metrics)

    def log(step):
        seconds = time.time() - timer["start"] - timer["side"]
        first = step == initial_step + n_jitted
        metrics = {k: np.concatenate([np.atleast_1d(m[k]) for m in window]) for k in window[0]}
        on_log(step, Interval(metrics, seconds, None if first else timer["steps"] / seconds))
        window.clear()
        timer.update(start=time.time(), side=0.0, steps=0)

    preemption = PreemptionWatcher()
    try:
        if step >= total_steps:
            logging.info("Training already finished at step %d (%s).", step, ckpt.directory)
        while step < total_steps:
            if preemption.reached():
                drain(0)
                save_once(step, state, wait=True)
                logging.warning(
                    "Preempted: saved checkpoint %d; run the same command again to resume.", step
                )
                return state
            state, metrics = dispatch(state)
            pending.append((step, metrics))
            step += n_jitted
            timer["steps"] += n_jitted
            drain(1)

            is_last = step == total_steps
            is_snapshot = step % training.snapshot_freq == 0 or is_last
            is_checkpoint = is_snapshot or step % training.snapshot_freq_for_preemption == 0
            is_log = step % training.log_freq == 0 or step == initial_step + n_jitted or is_last
            is_eval = step % training.eval_freq == 0 or (eval_at_end and is_last)
            if not (is_log or is_eval or is_checkpoint):
                continue
            drain(0)
            if is_log:
                log(step)
            side_start = time.time()
            if is_eval:
                on_eval(step, state)
            if is_checkpoint:
                save_once(step, state)
            if is_snapshot and on_snapshot is not None:
                on_snapshot(step, state)
            timer["side"] += time.time() - side_start
        drain(0)
    finally:
        preemption.close()
        ckpt.wait_until_finished()
        ckpt.close()
    return state
