"""The command layer of every CLI: ``--config``, ``--verbose``, the error boundary, quiet logs.

`run(main)` runs a command like `absl.app.run`. A `errors.UserError`, a bad flag or an unknown
config key prints one line, ``error: <what is wrong> — <what to do>``, on stderr and exits with
1 (2 for usage errors); ``--verbose`` adds the traceback and turns the INFO logs of libraries
(orbax, JAX, TensorFlow) back on. Any other exception is a bug and keeps its traceback.
`define_config_flag` defines ``--config``: a config name of the package (``digits``,
``ve/cifar10_ncsnpp_continuous``) or a file, with ``--config.<key>=value`` overrides whose keys
are checked first. Only the CLIs import this module. See docs/commands.md.
"""

import contextlib
import difflib
import importlib.abc
import importlib.resources
import importlib.util
import logging as std_logging
import os
import re
import sys
import traceback

import jax
from absl import app, flags, logging
from ml_collections import config_dict
from ml_collections.config_flags import config_flags

from score_sde_jax import distributed, errors, outputs

FLAGS = flags.FLAGS
flags.DEFINE_boolean(
    "verbose",
    False,
    "Show the traceback of an error, and the INFO logs of libraries (orbax, JAX, TensorFlow).",
)

CONFIG_PACKAGE = "score_sde_jax.configs"
# Keys the package reads with a default when a config lacks them (docs/configs.md): an override
# of one adds it to the config instead of being refused as unknown.
OPTIONAL_KEYS = {
    "training.max_to_keep": int,
    "training.grad_accum_steps": int,
    "training.snapshot_batch_size": int,
    "sampling.eps": float,
    "eval.bpd_dataset": str,
    "eval.bpd_num_repeats": int,
    "eval.hutchinson_type": str,
    "eval.likelihood_rtol": float,
    "eval.likelihood_atol": float,
    "eval.sample_seeds": tuple,
    "eval.stats_path": str,
    "eval.inception_weights": str,
    "data.data_dir": str,
    "data.path": str,
    "data.eval_path": str,
    "data.tfrecords_path": str,
    "data.category": str,
    "data.resize": str,
    "data.convert_channels": bool,
    "data.skip_unreadable_images": bool,
    "data.num_threads": int,
    "data.prefetch_batches": int,
    "model.dtype": str,
    "model.remat": bool,
    "model.num_layers": int,
    "model.embedding_type": str,
    "model.num_classes": int,
    "model.interpolation": str,
    "model.scale_by_sigma": bool,
    "model.sigma_max": float,
}
_DEFERRED = []  # errors of parsing a default --config at import time, reported by `run`
SCORE_MODEL_HINT = (
    "this command needs a score-model config, e.g. digits or ve/cifar10_ncsnpp_continuous; "
    "classifiers train with score_sde_jax.train_classifier"
)


# ----------------------------------------------------------------------------------------------
# --config: names, files and overrides.
# ----------------------------------------------------------------------------------------------


def config_names() -> list[str]:
    """The configs shipped in `CONFIG_PACKAGE`, e.g. ``digits``, ``ve/cifar10_ncsnpp_continuous``:
    every module with a ``get_config`` function, by its path without ``.py``."""
    names = []

    def visit(folder, prefix):
        for entry in folder.iterdir():
            if entry.is_dir() and not entry.name.startswith(("_", ".")):
                visit(entry, f"{prefix}{entry.name}/")
            elif entry.name.endswith(".py") and not entry.name.startswith("_"):
                if "def get_config(" in entry.read_text(encoding="utf-8"):
                    names.append(prefix + entry.name[: -len(".py")])

    visit(importlib.resources.files(CONFIG_PACKAGE), "")
    return sorted(names)


def config_file(name: str) -> str:
    """The file of ``--config=name``: an existing file, else a config of `CONFIG_PACKAGE` by name
    (``ve/cifar10_ncsnpp_continuous`` or with ``.py``); a ``:argument`` suffix is kept.

    Raises:
      errors.UsageError: neither, with the closest config names.
    """
    path, colon, argument = name.partition(":")
    if os.path.isfile(os.path.expanduser(path)):
        return os.path.expanduser(path) + colon + argument
    stem = path.removesuffix(".py").strip("/")
    packaged = importlib.resources.files(CONFIG_PACKAGE).joinpath(*stem.split("/"))
    packaged = packaged.with_name(packaged.name + ".py") if stem else packaged
    if stem and packaged.is_file():
        return os.fspath(packaged) + colon + argument
    names = config_names()
    close = difflib.get_close_matches(stem, names, n=3, cutoff=0.5)
    hint = f"did you mean {' or '.join(close)}?" if close else f"config names: {', '.join(names)}"
    raise errors.UsageError(
        f"--config={name}: no such file, and no config of that name",
        f"pass a config file or a config name; {hint}",
    )


def _overrides(name: str) -> list[str]:
    """The keys given as ``--<name>.<key>=value`` on the command line, in order."""
    argv = FLAGS.read_flags_from_files(sys.argv, force_gnu=False)
    pattern = re.compile(rf"^--?(?:no)?{re.escape(name)}\.([^=]+)")
    return [m[1] for m in map(pattern.match, argv) if m]


def _check_override(config, key: str) -> None:
    """Raises `errors.UsageError` for an override of a key ``config`` does not have; adds the
    missing `OPTIONAL_KEYS` (typed, unset) so that ml_collections can parse their values."""
    node, path = config, []
    for part in key.split("."):
        if not isinstance(node, config_dict.ConfigDict):
            return  # inside a value (a tuple, a dict field): ml_collections checks it
        if part not in node:
            if ".".join([*path, part]) == key and key in OPTIONAL_KEYS:
                with config.unlocked():
                    node[part] = config_dict.placeholder(OPTIONAL_KEYS[key])
                return
            where = f"config.{'.'.join(path)}" if path else "the config"
            close = difflib.get_close_matches(part, list(node.keys()), n=3, cutoff=0.6)
            hint = f"did you mean {' or '.join(close)}?" if close else f"keys: {', '.join(node)}"
            raise errors.UsageError(
                f"--config.{key}: unknown config key ({where} has no {part!r})", hint
            )
        node, path = node[part], [*path, part]


class _ConfigParser(config_flags.ConfigFileFlagParser):
    """ml_collections' config-file parser, resolving names and checking the override keys."""

    def __init__(self, name, required_section=None, hint=None):
        super().__init__(name, lock_config=True)
        self._required_section, self._hint = required_section, hint

    def parse(self, path):
        config = super().parse(config_file(path))
        error = getattr(config, "_error", None)  # ml_collections defers file errors to first use
        if error is not None:
            raise errors.UsageError(f"--{self.name}={path}: {str(error).splitlines()[0]}")
        section = self._required_section
        if section is not None and section not in config:
            raise errors.UsageError(f"--{self.name}={path} has no {section!r} section", self._hint)
        for key in _overrides(self.name):
            _check_override(config, key)
        return config


def define_config_flag(default=None, help_string="Config: a name or a file.", **options):
    """Defines ``--config`` (`config_file` resolves it), a locked ConfigDict overridable with
    ``--config.<key>=value``.

    Args:
      default: a config name or file, or None.
      help_string: the flag's help.
      **options: ``required_section`` (a section the config must have) and ``hint`` (what to
        pass instead when it lacks it).
    """
    config_flags.DEFINE_config_file("config", None, help_string, lock_config=True)
    FLAGS["config"].parser = _ConfigParser("config", **options)
    if default is not None:
        try:
            FLAGS.set_default("config", default)  # parses it now when --config is not given
        except flags.Error as error:
            _DEFERRED.append(error)


# ----------------------------------------------------------------------------------------------
# The boundary.
# ----------------------------------------------------------------------------------------------


def run(main, *, num_args: int | None = 0):
    """Runs ``main(argv)`` like `absl.app.run`, behind the error boundary (module docstring).

    ``num_args``: how many positional arguments the command takes (None: ``main`` checks).
    """
    _show_flags_in_help(main)

    def checked_main(argv):
        _quiet_libraries(FLAGS.verbose)
        _use_compilation_cache()
        try:
            if num_args is not None and len(argv) - 1 != num_args:
                raise app.UsageError(f"unexpected arguments {argv[1:]}")
            return main(argv)
        except errors.UserError as error:
            _exit(error, FLAGS.verbose)
        except app.UsageError as error:
            _exit(errors.UsageError(str(error), "see --help"), FLAGS.verbose)

    app.run(checked_main, flags_parser=_parse_flags)


def _use_compilation_cache() -> None:
    """Keeps compiled programs on disk between runs (JAX's persistent compilation cache).

    A second run of a command then skips most compilation: the parameter initialiser, the train
    step, the samplers (docs/performance.md, "Start-up"). The folder is ``$JAX_COMPILATION_CACHE_DIR``
    when set, else ``$XDG_CACHE_HOME/score_sde_jax/jax`` (``~/.cache/...``);
    ``SCORE_SDE_COMPILATION_CACHE=0`` turns it off. Our folder keeps at most `CACHE_MAX_BYTES`
    (``JAX_COMPILATION_CACHE_MAX_SIZE`` overrides it).
    """
    if os.environ.get("SCORE_SDE_COMPILATION_CACHE", "1") == "0":
        return
    if jax.config.jax_compilation_cache_dir:  # the user's own (JAX_COMPILATION_CACHE_DIR)
        return
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    jax.config.update("jax_compilation_cache_dir", os.path.join(base, "score_sde_jax", "jax"))
    if "JAX_COMPILATION_CACHE_MAX_SIZE" not in os.environ:
        jax.config.update("jax_compilation_cache_max_size", CACHE_MAX_BYTES)


# The compilation cache's size: past it JAX removes the least recently used programs. With a
# size JAX also locks the folder (the filelock package), so concurrent runs never read an entry
# another one is still writing.
CACHE_MAX_BYTES = 4 * 2**30


def _parse_flags(argv):
    """``FLAGS(argv)``; a bad flag, config file or config key exits with one line."""
    try:
        for error in _DEFERRED:
            raise error
        return FLAGS(argv)
    except flags.UnrecognizedFlagError as error:
        if error.flagname.startswith("config.") and "config" in FLAGS:
            _exit(_override_without_config(error.flagname), "--verbose" in argv)
        _exit(errors.UsageError(str(error), "see --help for the flags"), "--verbose" in argv)
    except flags.Error as error:
        cause = error.__context__  # the UserError a parser raised, if any
        if not isinstance(cause, errors.UserError):
            message = str(error).splitlines()[0]
            missing = re.search(r"Flag --(\w+) must have a value other than None", message)
            message = f"--{missing[1]} is required" if missing else message
            cause = errors.UsageError(message, "see --help for the flags")
        _exit(cause, "--verbose" in argv)


def _override_without_config(flagname: str) -> errors.UsageError:
    return errors.UsageError(
        f"--{flagname} overrides a key of --config, which is not given",
        "pass --config=NAME|PATH too (e.g. the config the run was trained with)",
    )


def _exit(error: errors.UserError, verbose: bool):
    """Prints ``error: <what is wrong> — <what to do>`` (the class's default fix when the error
    names none) and exits with its code."""
    if verbose:
        traceback.print_exc()
    text = str(error)
    if getattr(error, "fix", None) is None:
        text = f"{text.rstrip().rstrip('.')} — {error.default_fix}"
    lines = " ".join(line.strip() for line in text.splitlines())
    sys.stderr.write(f"error: {lines}\n")
    sys.exit(error.exit_code)


def _show_flags_in_help(main) -> None:
    """Makes this package's flags (``--config``, ``--verbose``, the multi-process flags, ...)
    key flags of the command, so that ``--help`` lists them: absl shows only the main module's."""
    command = sys.argv[0]
    modules = {main.__module__, command} | {m for m in FLAGS.flags_by_module_dict() if m}
    for module in modules:
        if module in (main.__module__, command) or module.startswith("score_sde_jax"):
            for flag in FLAGS.get_flags_for_module(module):
                FLAGS.register_key_flag_for_module(command, flag)
    if "config" in FLAGS:
        FLAGS.register_key_flag_for_module(command, FLAGS["config"])


class _LibraryInfo(std_logging.Filter):
    """Drops the INFO lines of libraries (orbax's I/O throughput, JAX's backend probing, ...),
    keeping this package's and the metric lines of clu's TensorBoard writer."""

    _KEEP = (os.path.dirname(os.path.abspath(__file__)) + os.sep, f"clu{os.sep}metric_writers")

    def filter(self, record):
        return record.levelno >= std_logging.WARNING or any(
            k in record.pathname for k in self._KEEP
        )


def _quiet_libraries(verbose: bool) -> None:
    """Library INFO chatter off unless ``verbose``, TensorFlow's start-up banners too (TensorFlow
    is imported later, by the TensorBoard writer or tfds)."""
    if verbose:
        return
    logging.get_absl_handler().addFilter(_LibraryInfo())
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # TensorFlow announces its oneDNN kernels when it first runs an op (the TensorBoard writer's
    # thread, after the import): only turning them off silences it. TensorFlow computes nothing
    # of the model here, only writes logs and reads datasets.
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    if "tensorflow" not in sys.modules:
        sys.meta_path.insert(0, _MutedImport("tensorflow"))


class _MutedImport(importlib.abc.MetaPathFinder):
    """Imports one package with file descriptor 2 (C++ stderr) muted, once.

    TensorFlow prints its start-up banners (oneDNN, ``absl::InitializeLog``) through C++ absl
    logging at import time, which TF_CPP_MIN_LOG_LEVEL no longer silences; an import error still
    raises, and is reported once stderr is back."""

    def __init__(self, name: str):
        self.name = name

    def find_spec(self, name, path, target=None):
        if name != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        exec_module = spec.loader.exec_module

        def muted_exec_module(module):
            with _muted_stderr():
                exec_module(module)

        spec.loader.exec_module = muted_exec_module
        return spec


@contextlib.contextmanager
def _muted_stderr():
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


# ----------------------------------------------------------------------------------------------
# What the training commands share.
# ----------------------------------------------------------------------------------------------


def define_training_flags(default_config: str, config_help: str, **config_options) -> None:
    """``--workdir`` (required), ``--config`` and the multi-process flags of a training command."""
    flags.DEFINE_string("workdir", None, "Run folder: checkpoints, TensorBoard logs, samples.")
    define_config_flag(default_config, config_help, **config_options)
    distributed.define_flags()
    flags.mark_flags_as_required(["workdir"])


def prepare_training(task_type):
    """Checks the config of ``task_type`` (a `training.loop.Task`) and the workdir, connects the
    processes and starts the workdir's log; returns ``(config, workdir)`` to train."""
    distributed.initialize_from_flags()
    config = FLAGS.config
    task_type.validate_config(config, jax.device_count(), jax.process_count())
    workdir = outputs.check_dir(FLAGS.workdir, "--workdir")
    distributed.log_to_workdir(workdir)
    logging.info("Config:\n%s", config)
    return config, workdir
