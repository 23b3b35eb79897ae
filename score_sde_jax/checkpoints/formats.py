"""Which format a checkpoint file is in, told from its first bytes
(docs/checkpoints.md#file-formats).

`detect_format` is 'pytorch' for a ``torch.save`` file of the PyTorch port (a zip archive or a
bare pickle) and 'original' otherwise: the original code's msgpack ``checkpoint_<k>``, whose
reader explains what is wrong with anything else.
"""

import os

from score_sde_jax.checkpoints.errors import CheckpointFormatError, TruncatedCheckpointError

FORMATS = ("original", "pytorch")

_ZIP_HEADS = (b"PK\x03\x04", b"PK\x05\x06")
_TORCH_LEGACY_HEAD = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
_PICKLE_PROTOCOLS = (b"\x02", b"\x03", b"\x04", b"\x05")


def read_head(path, what: str) -> bytes:
    """The first bytes of the file ``path``, after checking that it is a non-empty file.

    ``what`` names the expected file in the messages, e.g. "PyTorch checkpoint file (.pth)".
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        found = sorted(os.listdir(path))[:10]
        raise CheckpointFormatError(
            f"{path} is a directory; pass the path of one {what} inside it (found: {found})."
        )
    if not os.path.exists(path):
        raise FileNotFoundError(f"No {what} at {path!r}: check the path (and download the file).")
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        raise TruncatedCheckpointError(f"{path} is empty; download the {what} again.")
    return head


def sniff(head: bytes) -> str:
    """The kind of a file from its first bytes: 'torch', 'pickle', 'msgpack_map', 'json' or
    'unknown'."""
    if head[:4] in _ZIP_HEADS or head.startswith(_TORCH_LEGACY_HEAD):
        return "torch"
    if head[:1] == b"\x80" and head[1:2] in _PICKLE_PROTOCOLS:
        return "pickle"
    if head and (0x80 <= head[0] <= 0x8F or head[0] in (0xDE, 0xDF)):
        return "msgpack_map"
    if head.lstrip()[:1] in (b"{", b"["):
        return "json"
    return "unknown"


def detect_format(path) -> str:
    """'pytorch' or 'original' (one of `FORMATS`), from the content of the file ``path``.

    Raises:
      FileNotFoundError: no such file.
      CheckpointFormatError: ``path`` is a directory, or the file is empty.
    """
    kind = sniff(read_head(path, "checkpoint file"))
    return "pytorch" if kind in ("torch", "pickle") else "original"
