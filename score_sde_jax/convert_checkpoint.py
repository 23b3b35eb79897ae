"""Turns a checkpoint of the original code or of its PyTorch port into one of ours.

``python -m score_sde_jax.convert_checkpoint --config CONFIG --input FILE --workdir DIR``

writes checkpoint ``<step>`` of the run folder ``DIR`` (`score_sde_jax.checkpoints.RunFolder`):
``params`` = the file's raw weights, ``ema_params`` = its EMA weights (the raw weights stand in
for both when the file only has one set), a fresh optimizer state and the file's training
step. Training resumes from it with ``python -m score_sde_jax.train --config CONFIG --workdir
DIR`` (the data iterators start from the beginning); samplers read its EMA weights.
"""

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from score_sde_jax import checkpoints, training

FORMATS = ("auto", *checkpoints.FORMATS)

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config the checkpoint was trained with.")
flags.DEFINE_string("input", None, "checkpoint_<k> (original JAX) or .pth (PyTorch port) file.")
flags.DEFINE_string("workdir", None, "Run folder to create; its checkpoints/ must be empty.")
flags.DEFINE_enum("format", "auto", FORMATS, "Input format; 'auto' tells them apart by content.")
flags.mark_flags_as_required(["config", "input", "workdir"])


def convert(config, input_path: str, workdir: str, fmt: str = "auto") -> int:
    """Converts ``input_path`` into a checkpoint under ``workdir/checkpoints``.

    Args:
      config: the config the checkpoint was trained with (original keys).
      input_path: the foreign checkpoint file.
      workdir: the run folder to write (``checkpoints/`` inside it must be empty or absent).
      fmt: 'original', 'pytorch' or 'auto'.

    Returns:
      The training step stored in the new checkpoint (0 when the file has none).

    Raises:
      ValueError: unknown format, or ``workdir`` already holds checkpoints.
      checkpoints.CheckpointError: the file is not a checkpoint of this config's network.
    """
    run = checkpoints.RunFolder(workdir)
    if run.steps():
        raise ValueError(
            f"{run.checkpoint_dir} already holds checkpoints {run.steps()}; convert into a new "
            "workdir."
        )
    ema_params, step = checkpoints.load_file(input_path, config, fmt, use_ema=True)
    try:
        params, _ = checkpoints.load_file(input_path, config, fmt, use_ema=False)
    except checkpoints.CheckpointError as e:
        logging.warning("No raw weights in %s (%s); using the EMA weights for both.", input_path, e)
        params = ema_params
    step = int(step or 0)
    state = training.TrainState.create(
        params, training.create_optimizer(config), ema_params=ema_params, step=step
    )
    with run.manager(max_to_keep=None, async_save=False) as manager:
        manager.save(step, state, jax.random.PRNGKey(config.seed), config=config, wait=True)
    logging.info("Wrote checkpoint %d to %s.", step, run.checkpoint_dir)
    return step


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    convert(FLAGS.config, FLAGS.input, FLAGS.workdir, FLAGS.format)


if __name__ == "__main__":
    app.run(main)
