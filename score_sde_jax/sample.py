"""Command line sampling: ``python -m score_sde_jax.sample --workdir DIR [flags]``.

Examples::

    # latest checkpoint of a training run, its saved config and sampler (config.sampling)
    python -m score_sde_jax.sample --workdir=runs/digits --num_samples=64
    # a given step, with the probability-flow ODE
    python -m score_sde_jax.sample --workdir=runs/digits --checkpoint=4000 --sampler=ode
    # a released checkpoint of the original code (or a PyTorch-port .pth), few-step sampler
    python -m score_sde_jax.sample --workdir=out --checkpoint=exp/checkpoint_26 \\
        --config=configs/ve/cifar10_ncsnpp_deep_continuous.py --sampler=heun --num_steps=18

Writes ``images`` (uint8 NHWC), ``nfe`` (per sample) and ``metadata`` (JSON) to an ``.npz``
(``--output``, default ``<workdir>/samples/<checkpoint>_<sampler>_seed<seed>.npz``) and a PNG
grid next to it. Sample i always comes from (``--seed``, i), whatever the batch size and the
number of devices or hosts (see `score_sde_jax.sampling.generation`). Thin wrapper: the work is in
`score_sde_jax.sampling.generation`.
"""

import sys

from absl import app, flags
from ml_collections import config_flags

from score_sde_jax import distributed
from score_sde_jax.sampling import generation, registry

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Training run folder (checkpoints; default output place).")
config_flags.DEFINE_config_file(
    "config", None, "Config file (default: the config saved with the run).", lock_config=True
)
flags.DEFINE_string(
    "checkpoint",
    None,
    "Step of a checkpoint in --workdir (default: the latest), or the path of a released "
    "checkpoint file (original 'checkpoint_<k>' or PyTorch-port '.pth'; needs --config).",
)
registry.define_flags()
flags.DEFINE_integer("num_samples", 64, "Number of samples.")
flags.DEFINE_integer(
    "batch_size",
    None,
    "Samples per step over all devices (a multiple of the device count; default "
    "min(eval.batch_size, num_samples) rounded up to one).",
)
flags.DEFINE_integer("seed", 0, "Sampling seed: sample i uses fold_in(PRNGKey(seed), i).")
flags.DEFINE_string("output", None, "Output .npz (a .png grid is written next to it).")
distributed.define_flags()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    distributed.initialize_from_flags()
    spec = registry.spec_from_flags()
    try:
        generation.sample_to_file(
            FLAGS.config,
            workdir=FLAGS.workdir,
            checkpoint=FLAGS.checkpoint,
            spec=spec,
            num_samples=FLAGS.num_samples,
            batch_size=FLAGS.batch_size,
            seed=FLAGS.seed,
            output=FLAGS.output,
        )
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    app.run(main)
