"""Checkpoint index k of the original's evaluation <-> a checkpoint of the run folder.

Checkpoint k is the one at step ``k * training.snapshot_freq``, the step at which the original
wrote its ``checkpoint_k``; the original's files ``checkpoints/checkpoint_<k>`` are read as well
(docs/evaluation.md#checkpoints), and so is a converted one, which keeps the original's count of
``k * snapshot_freq + n_jitted_steps`` updates (docs/original_code.md, D16).
"""

import time

from absl import logging

from score_sde_jax import checkpoints
from score_sde_jax.errors import InputError, UsageError


def checkpoint_step(config, ckpt: int) -> int:
    """Training step of checkpoint index ``ckpt``: ``ckpt * training.snapshot_freq``."""
    return int(ckpt) * int(config.training.snapshot_freq)


def checkpoint_indices(config) -> list[int]:
    """``range(eval.begin_ckpt, eval.end_ckpt + 1)``."""
    begin, end = int(config.eval.begin_ckpt), int(config.eval.end_ckpt)
    if begin < 1 or end < begin:
        raise UsageError(
            f"Need 1 <= eval.begin_ckpt <= eval.end_ckpt, got begin_ckpt={begin}, end_ckpt={end}."
        )
    return list(range(begin, end + 1))


def find_checkpoint(config, workdir, ckpt: int, timeout: float = 0.0, poll: float = 60.0):
    """The ``--checkpoint`` value of checkpoint index ``ckpt``: a ``train`` step or a file.

    Looks for the ``train`` checkpoint at step `checkpoint_step`, then for the original's
    ``checkpoints/checkpoint_<ckpt>`` file, then for a converted original checkpoint (its step is
    ``n_jitted_steps`` later), polling every ``poll`` seconds for up to ``timeout``.

    Raises:
      FileNotFoundError: none of them exists after ``timeout`` seconds.
    """
    step = checkpoint_step(config, ckpt)
    converted = step + int(config.training.n_jitted_steps)
    if converted % int(config.training.snapshot_freq) == 0:
        converted = None  # that step is a later checkpoint index of this run, never this one
    run = checkpoints.RunFolder(workdir)
    deadline = time.time() + timeout
    while True:
        location = run.find(step, ckpt)
        if location is None and converted is not None and converted in run.steps():
            logging.info(
                "Checkpoint %d: step %d, the original's count for it (D16).", ckpt, converted
            )
            location = converted
        if location is not None:
            return location
        if time.time() >= deadline:
            raise InputError(
                f"Checkpoint {ckpt} not found: no step {step} (= {ckpt} x training.snapshot_freq "
                f"{config.training.snapshot_freq})"
                + (f" or {converted} (converted from the original)" if converted else "")
                + f" among the steps {run.steps()} in "
                f"{run.checkpoint_dir}, and no original file {run.original_file(ckpt)}",
                "check eval.begin_ckpt / eval.end_ckpt, or pass --checkpoint_timeout to wait for "
                "a running training job",
            )
        logging.info("Waiting for checkpoint %d (step %d) in %s ...", ckpt, step, workdir)
        time.sleep(max(0.0, min(poll, deadline - time.time())))


def checkpoint_path(workdir, location) -> str:
    """The path of a `find_checkpoint` result, for the report."""
    if isinstance(location, int):
        return checkpoints.RunFolder(workdir).step_dir(location)
    return str(location)


def load_params(config, workdir, ckpt: int, location, mesh):
    """The evaluated (EMA) parameters of checkpoint ``ckpt`` at ``location``, on ``mesh``."""
    loaded = checkpoints.load_checkpoint_params(
        config, workdir=workdir, checkpoint=location, mesh=mesh
    )
    logging.info("Checkpoint %d: %s (%s).", ckpt, loaded.path, loaded.source)
    return loaded.params
