"""Turns a checkpoint of the original code or of its PyTorch port into one of ours.

``python -m score_sde_jax.convert_checkpoint --config CONFIG --input FILE|FOLDER --workdir DIR``
(console script ``score-sde-convert-checkpoint``; flags and exit codes: docs/commands.md)

writes checkpoint ``<step>`` of the run folder ``DIR`` (`score_sde_jax.checkpoints.RunFolder`):
``params`` = the file's raw weights, ``ema_params`` = its EMA weights (the raw weights stand in
for both when the file only has one set), a fresh optimizer state and the file's training
step. Training resumes from it with ``python -m score_sde_jax.train --config CONFIG --workdir
DIR`` (the data iterators start from the beginning); samplers read its EMA weights. A FOLDER of
``checkpoint_<k>`` files gives its newest readable one, like training's resume.
"""

import os
import re

import jax
from absl import flags, logging

from score_sde_jax import checkpoints, commands, errors, outputs, training

FORMATS = ("auto", *checkpoints.FORMATS)
# Damage that makes one file unusable while an older one may load (not a network mismatch).
_UNREADABLE = (checkpoints.CheckpointFormatError, checkpoints.TorchCheckpointError)

FLAGS = flags.FLAGS
commands.define_config_flag(
    None,
    "Config (name or file) the checkpoint was trained with.",
    required_section="model",
    hint=commands.SCORE_MODEL_HINT,
)
flags.DEFINE_string(
    "input",
    None,
    "checkpoint_<k> (original JAX) or .pth (PyTorch port) file, or a folder of them (its newest "
    "readable one).",
)
flags.DEFINE_string("workdir", None, "Run folder to create; its checkpoints/ must be empty.")
flags.DEFINE_enum("format", "auto", FORMATS, "Input format; 'auto' tells them apart by content.")
flags.mark_flags_as_required(["config", "input", "workdir"])


def convert(config, input_path: str, workdir: str, fmt: str = "auto") -> int:
    """Converts ``input_path`` into a checkpoint under ``workdir/checkpoints``.

    Args:
      config: the config the checkpoint was trained with (original keys).
      input_path: the foreign checkpoint file, or a folder of ``checkpoint_<k>`` files (the newest
        readable one is converted).
      workdir: the run folder to write (``checkpoints/`` inside it must be empty or absent).
      fmt: 'original', 'pytorch' or 'auto'.

    Returns:
      The training step stored in the new checkpoint (0 when the file has none).

    Raises:
      errors.OutputError: ``workdir`` cannot be written or already holds checkpoints.
      checkpoints.CheckpointError: the file is not a checkpoint of this config's network.
    """
    run = checkpoints.RunFolder(outputs.check_dir(workdir, "--workdir"))
    if run.steps():
        raise errors.OutputError(
            f"{run.checkpoint_dir} already holds checkpoints {run.steps()}",
            "convert into a new --workdir",
        )
    path, (ema_params, step) = _load_newest(input_path, config, fmt)
    try:
        params, _ = checkpoints.load_file(path, config, fmt, use_ema=False)
    except checkpoints.CheckpointError as e:
        logging.warning("No raw weights in %s (%s); using the EMA weights for both.", path, e)
        params = ema_params
    step = int(step or 0)
    state = training.TrainState.create(
        params, training.create_optimizer(config), ema_params=ema_params, step=step
    )
    with run.manager(max_to_keep=None, async_save=False) as manager:
        manager.save(step, state, jax.random.PRNGKey(config.seed), config=config, wait=True)
    logging.info("Wrote checkpoint %d of %s to %s.", step, path, run.checkpoint_dir)
    return step


def _candidates(input_path: str) -> list[str]:
    """``[input_path]``, or the ``checkpoint_<k>[.pth]`` files of a folder, newest first."""
    if not os.path.isdir(input_path):
        return [input_path]
    found = [
        (int(m[1]), os.path.join(input_path, name))
        for name in os.listdir(input_path)
        if (m := re.fullmatch(r"checkpoint_(\d+)(\.pth)?", name))
    ]
    if not found:
        raise errors.InputError(
            f"--input={input_path} is a folder without checkpoint_<k> files",
            "pass the path of one checkpoint file",
        )
    return [path for _, path in sorted(found, reverse=True)]


def _load_newest(input_path: str, config, fmt: str):
    """``(path, (ema_params, step))`` of the newest readable candidate (see `_candidates`)."""
    candidates, damaged = _candidates(input_path), []
    for path in candidates:
        try:
            loaded = checkpoints.load_file(path, config, fmt, use_ema=True)
        except _UNREADABLE as e:
            if len(candidates) == 1 or isinstance(e, checkpoints.UnsafeCheckpointError):
                raise _with_alternatives(e, path) from e
            logging.warning("%s is unreadable (%s); trying the previous checkpoint.", path, e)
            damaged.append(os.path.basename(path))
            continue
        if damaged:
            logging.warning(
                "Converting %s, the newest readable checkpoint (damaged: %s).", path, damaged
            )
        return path, loaded
    raise checkpoints.CheckpointFormatError(
        f"None of the checkpoints in {input_path} is readable: {damaged}"
    )


def _with_alternatives(error: errors.UserError, path: str) -> errors.UserError:
    """``error`` about the file ``path``, naming the other checkpoints of its folder."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        others = [p for p in _candidates(folder) if not os.path.samefile(p, path)]
    except errors.InputError:  # no checkpoint_<k> files there
        others = []
    if not others:
        return error
    names = ", ".join(os.path.basename(p) for p in others[:5])
    return type(error)(
        error.message,
        f"the folder also holds {names}: pass one of them, or --input={folder} to convert the "
        "newest readable one",
    )


def main(argv):
    del argv
    convert(FLAGS.config, FLAGS.input, FLAGS.workdir, FLAGS.format)


def main_cli():
    commands.run(main)


if __name__ == "__main__":
    main_cli()
