"""Command line evaluation: ``python -m score_sde_jax.evaluate --workdir DIR [--config PATH]``.

The original's evaluation modes (docs/original_code.md#training-evaluation-and-data), for every
checkpoint index in ``[eval.begin_ckpt, eval.end_ckpt]`` (checkpoint k = training step k x
training.snapshot_freq): eval loss (``eval.enable_loss``), bits/dim (``eval.enable_bpd``) and
samples with FID / IS / KID (``eval.enable_sampling``). Results go to ``<workdir>/<eval_folder>``:
per-unit files, a ``progress.json`` that makes a rerun resume after preemption, and ``report.json``
with the last and the best checkpoints' numbers and the seeds. Details: docs/evaluation.md.

Examples::

    python -m score_sde_jax.evaluate --workdir=runs/cifar10 \\
        --config=configs/ve/cifar10_ncsnpp_continuous.py --config.eval.enable_sampling=True \\
        --stats=assets/stats/cifar10_stats.npz --sample_seeds=1,2,3
    python -m score_sde_jax.evaluate --workdir=runs/digits --config.eval.enable_bpd=True \\
        --bpd_num_repeats=2 --hutchinson_type=gaussian

Without ``--config`` the config saved with the run's latest checkpoint is used. The flags
below that mirror ``eval`` keys (``--bpd_num_repeats`` etc.) override the config. The FID Inception
weights are never downloaded: without the file the command stops and says where to put it.
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from score_sde_jax import checkpoints, distributed
from score_sde_jax.evaluation import driver
from score_sde_jax.sampling import registry

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Training run folder (reads <workdir>/checkpoints).")
config_flags.DEFINE_config_file(
    "config", None, "Config file (default: the config saved with the run).", lock_config=True
)
flags.DEFINE_string("eval_folder", "eval", "Results go to <workdir>/<eval_folder>.")
flags.DEFINE_string(
    "inception_weights",
    None,
    "FID Inception weights (.pth or converted .npz); default eval.inception_weights, "
    "$SCORE_SDE_INCEPTION_WEIGHTS, ~/.cache/score_sde_jax/pt_inception-2015-12-05-6726825d.pth.",
)
flags.DEFINE_string(
    "stats",
    None,
    "Dataset statistics .npz (python -m score_sde_jax.tools.stats); default eval.stats_path, "
    "then assets/stats/<name>_stats.npz.",
)
flags.DEFINE_integer("inception_batch_size", 250, "Images per Inception call.")
flags.DEFINE_float(
    "checkpoint_timeout", 0.0, "Seconds to wait for a checkpoint that does not exist yet."
)
flags.DEFINE_integer(
    "bpd_num_repeats", None, "eval.bpd_num_repeats: dequantized passes (default 5 test / 1 train)."
)
flags.DEFINE_enum(
    "hutchinson_type",
    None,
    ["rademacher", "gaussian", "exact"],
    "eval.hutchinson_type: divergence estimator of the bpd ODE (default rademacher).",
)
flags.DEFINE_list("sample_seeds", None, "eval.sample_seeds: sampling seeds (default seed + 1).")
registry.define_flags()
distributed.define_flags()
flags.mark_flags_as_required(["workdir"])


def apply_overrides(config):
    """A copy of ``config`` with the ``eval`` keys given as flags."""
    overrides = {
        "bpd_num_repeats": FLAGS.bpd_num_repeats,
        "hutchinson_type": FLAGS.hutchinson_type,
        "sample_seeds": None
        if FLAGS.sample_seeds is None
        else [int(s) for s in FLAGS.sample_seeds],
    }
    config = config.copy_and_resolve_references()
    config.unlock()
    for key, value in overrides.items():
        if value is not None:
            config.eval[key] = value
    config.lock()
    return config


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    distributed.initialize_from_flags()
    try:
        config = apply_overrides(checkpoints.resolve_config(FLAGS.config, FLAGS.workdir))
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"error: {error}")
    spec = registry.spec_from_flags()
    try:
        report = driver.evaluate(
            config,
            FLAGS.workdir,
            FLAGS.eval_folder,
            sampler=spec,
            inception_weights_path=FLAGS.inception_weights,
            stats_path=FLAGS.stats,
            inception_batch_size=FLAGS.inception_batch_size,
            checkpoint_timeout=FLAGS.checkpoint_timeout,
        )
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"error: {error}")
    logging.info("Last checkpoint: %s", report["last"])
    logging.info("Best checkpoints: %s", report["best"])


if __name__ == "__main__":
    app.run(main)
