"""Errors the user can fix: a bad flag or config value, a missing or unusable file.

The commands print them as one line, ``error: <what is wrong> — <what to do>``, and exit with
`UserError.exit_code` (`score_sde_jax.commands`; docs/commands.md#exit-codes); any other exception
is a bug and keeps its traceback. Each class also derives from the built-in error it refines
(ValueError, FileNotFoundError, ...), so library callers can catch either.
"""

import contextlib

__all__ = [
    "DataError",
    "InputError",
    "OutputError",
    "UsageError",
    "UserError",
    "config_values",
]


class UserError(Exception):
    """A problem with what the user gave, with what to do about it.

    Args:
      message: what is wrong, naming the flag, key, value or path.
      fix: what to do (optional); ``str(error)`` is ``"<message> — <fix>"``.
    """

    exit_code = 1
    default_fix = "see docs/commands.md"  # what the commands print when ``fix`` is not given

    def __init__(self, message: str, fix: str | None = None):
        super().__init__(message if fix is None else f"{message} — {fix}")
        self.message, self.fix = message, fix


class UsageError(UserError, ValueError):
    """A bad flag, config key or config value (exit code 2)."""

    exit_code = 2
    default_fix = "fix it on the command line (see --help, docs/configs.md)"


class InputError(UserError, FileNotFoundError):
    """An input file or folder that does not exist or cannot be read."""

    default_fix = "check the path"


class DataError(UserError, ValueError):
    """Data that cannot be used: an unreadable image, a folder without images, ..."""

    default_fix = "check the data (docs/data.md)"


class OutputError(UserError, OSError):
    """An output file or folder that cannot be written."""

    default_fix = "choose another output path"


@contextlib.contextmanager
def config_values(what: str):
    """Reports a ValueError raised while ``what`` is built from the config as a `UsageError`.

    For builders that check the config's values with ValueError (networks, SDEs, samplers,
    losses); a `UserError` passes unchanged.
    """
    try:
        yield
    except UserError:
        raise
    except ValueError as error:
        raise UsageError(
            f"{what}: {error}", "fix that config value (--config.<section>.<key>=...)"
        ) from error
