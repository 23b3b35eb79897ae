"""Exports a finished training run as an embedded pretrained model (docs/pretrained.md).

``python -m score_sde_jax.tools.export_pretrained --workdir RUN --name NAME --made_by "COMMAND"``

writes ``NAME.msgpack`` (the newest checkpoint's EMA parameters, float16) and ``NAME.json`` (the
run's config, the step and ``--made_by``) into ``--out`` (default: the package's
``score_sde_jax/pretrained`` folder), for `score_sde_jax.checkpoints.load_pretrained`.
"""

import os

import jax
from absl import app, flags, logging

from score_sde_jax import checkpoints, distributed, pretrained, training

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "The training run (score model or classifier).")
flags.DEFINE_string("name", None, "Name of the embedded model, e.g. 'digits'.")
flags.DEFINE_multi_string("made_by", [], "The command(s) that produced the run, recorded.")
flags.DEFINE_string("out", os.path.dirname(pretrained.__file__), "Folder to write to.")
flags.mark_flags_as_required(["workdir", "name"])


def ema_params(workdir):
    """``(config, EMA parameters on the host, step)`` of the newest checkpoint of ``workdir``."""
    run = checkpoints.RunFolder(workdir)
    config = run.saved_config()
    if "classifier" in config:
        params, step = training.classifier.restore_params(config, workdir)
    else:
        step = run.steps()[-1]
        params = run.restore_ema_params(config, step, distributed.create_mesh())
    return config, jax.device_get(params), int(step)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    config, params, step = ema_params(FLAGS.workdir)
    info = {"step": step, "made_by": list(FLAGS.made_by)}
    paths = checkpoints.save_pretrained(FLAGS.out, FLAGS.name, config, params, info)
    logging.info("Wrote %s (step %d).", ", ".join(map(str, paths)), step)


if __name__ == "__main__":
    app.run(main)
