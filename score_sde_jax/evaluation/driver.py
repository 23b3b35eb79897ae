"""Evaluation of a training run, checkpoint by checkpoint: `evaluate` (docs/evaluation.md).

For every checkpoint index in ``[eval.begin_ckpt, eval.end_ckpt]`` it runs the modes the config
enables (eval loss, bits/dim, samples with FID / IS / KID), records every finished unit so that a
rerun resumes, and writes the report.
"""

import dataclasses
import os
from collections.abc import Callable

import jax
from jax.experimental import multihost_utils

from score_sde_jax import distributed
from score_sde_jax.evaluation import checkpoint_index, data_passes, protocol, report, sample_quality
from score_sde_jax.evaluation.bits_per_dim import BitsPerDim
from score_sde_jax.evaluation.held_out_loss import HeldOutLoss
from score_sde_jax.evaluation.progress import Progress, write_json


def evaluate(
    config,
    workdir,
    eval_folder: str = "eval",
    *,
    sampler=None,
    inception_weights_path=None,
    stats_path=None,
    inception_batch_size: int = 250,
    checkpoint_timeout: float = 0.0,
    mesh=None,
    callback: Callable[[str, dict], None] | None = None,
) -> dict:
    """Evaluates checkpoints ``eval.begin_ckpt .. eval.end_ckpt`` of ``workdir``.

    Args:
      config: the run's config (original keys plus the ``eval`` keys of docs/evaluation.md).
      workdir: the training work directory (``<workdir>/checkpoints``).
      eval_folder: results go to ``<workdir>/<eval_folder>``.
      sampler: the `registry.SamplerSpec` of the sampling mode (default:
        ``config.sampling.method``).
      inception_weights_path: FID Inception weights (default ``eval.inception_weights``, then
        ``$SCORE_SDE_INCEPTION_WEIGHTS``, then ``~/.cache/score_sde_jax/...``).
      stats_path: dataset statistics (default ``eval.stats_path``, then
        ``assets/stats/<name>_stats.npz``).
      inception_batch_size: images per Inception call.
      checkpoint_timeout: seconds to wait for a checkpoint that does not exist yet.
      mesh: 1-D ``('data',)`` mesh (default: every device of every process).
      callback: ``callback(unit, result)`` after every finished unit (progress display, tests).

    Returns:
      The report (also written to ``<workdir>/<eval_folder>/report.json``).

    Raises:
      FileNotFoundError: missing Inception weights / statistics (checked before any work), a
        missing checkpoint.
      ValueError: inconsistent settings, or results of other settings in the eval folder.
    """
    mesh = distributed.create_mesh() if mesh is None else mesh
    spec = sample_quality.sampler_spec(config, sampler)
    ckpts = checkpoint_index.checkpoint_indices(config)
    eval_dir = os.path.join(os.fspath(workdir), eval_folder)
    fid_options = (inception_weights_path, stats_path, inception_batch_size)
    modes = _modes(config, mesh, spec, eval_dir, *fid_options)
    os.makedirs(eval_dir, exist_ok=True)
    sampling, bpd = modes.get("sampling"), modes.get("bpd")
    run_settings = protocol.settings(config, sampling.settings() if sampling else None)
    progress = Progress(eval_dir, run_settings, callback)
    per_ckpt = {}
    for k in ckpts:
        location = checkpoint_index.find_checkpoint(config, workdir, k, timeout=checkpoint_timeout)
        per_ckpt[k] = _evaluate_checkpoint(config, workdir, k, location, modes, progress, mesh)
    seeds = {
        "eval_seed": protocol.eval_seed(config),
        "sample_seeds": sampling.seeds if sampling else [],
        "bpd_data_seeds": bpd.data_seeds if bpd else [],
    }
    summary = report.summarize(per_ckpt, ckpts[-1], seeds)
    summary.update(
        sampler=spec.describe(),
        num_samples=sampling.num_samples if sampling else None,
        checkpoint_step_rule="step = ckpt * training.snapshot_freq",
        fid_resources=dataclasses.asdict(sampling.fid) if sampling else None,
    )
    write_json(os.path.join(eval_dir, report.REPORT_FILE), summary)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("evaluate_done")
    return summary


def _modes(config, mesh, spec, eval_dir, inception_weights_path, stats_path, inception_batch_size):
    """The enabled modes by name, in report order; missing FID files fail before any work."""
    loss, bpd, sampling = (
        config.eval.get(f"enable_{m}", False) for m in ("loss", "bpd", "sampling")
    )
    if sampling:
        fid = sample_quality.resolve_fid_resources(config, inception_weights_path, stats_path)
    data_passes.check_batch_size(config, mesh)
    modes = {}
    if loss:
        modes["loss"] = HeldOutLoss(config, mesh, eval_dir)
    if bpd:
        modes["bpd"] = BitsPerDim(config, mesh, eval_dir)
    if sampling:
        modes["sampling"] = sample_quality.SampleQuality(
            config, spec, fid, mesh, eval_dir, inception_batch_size
        )
    return modes


def _evaluate_checkpoint(config, workdir, k, location, modes, progress, mesh) -> dict:
    """Checkpoint ``k``'s numbers; its parameters are loaded only if a unit is missing."""
    params = None
    if any(unit not in progress for mode in modes.values() for unit in mode.units(k)):
        params = checkpoint_index.load_params(config, workdir, k, location, mesh)
    step = location if isinstance(location, int) else checkpoint_index.checkpoint_step(config, k)
    result = {"step": step, "checkpoint": checkpoint_index.checkpoint_path(workdir, location)}
    for mode in modes.values():
        result.update(mode.run(params, k, progress))
    return result
