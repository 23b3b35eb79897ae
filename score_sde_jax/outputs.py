"""Where the commands write: checks, made before any work, that an output can be written."""

import os

from score_sde_jax.errors import OutputError


def check_dir(path, flag: str) -> str:
    """Raises `OutputError` unless the folder ``path`` exists or can be created, writable.

    ``flag`` names the setting in the message (e.g. ``--workdir``). Creates nothing; returns the
    absolute path.
    """
    path = os.path.abspath(os.path.expanduser(os.fspath(path)))
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise OutputError(
            f"{flag}={path} cannot be created: {existing} is a file",
            f"choose a {flag} that is not inside a file",
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(
            f"{flag}={path} cannot be written: no write permission in {existing}",
            f"choose a {flag} you can write to",
        )
    return path


def check_file(path, flag: str) -> str:
    """Raises `OutputError` unless the file ``path`` can be written (its folder created).

    Creates nothing; returns the absolute path.
    """
    path = os.path.abspath(os.path.expanduser(os.fspath(path)))
    if os.path.isdir(path):
        raise OutputError(f"{flag}={path} is a folder", f"pass a file name as {flag}")
    try:
        check_dir(os.path.dirname(path), flag)
    except OutputError as e:
        raise OutputError(
            e.message.replace(f"={os.path.dirname(path)}", f"={path}"), e.fix
        ) from None
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise OutputError(f"{flag}={path} cannot be overwritten: no write permission")
    return path
