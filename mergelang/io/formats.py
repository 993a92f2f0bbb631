"""Which format a checkpoint file is in, decided without torch from its first bytes.

A safetensors file starts with a little-endian header length that fits the file, followed by
``{``; a ``torch.save`` file is a zip archive (``PK\\x03\\x04``) or, in the legacy format, a
pickle (protocol 2 and later start with ``\\x80``). Files that match neither are judged by
their extension, so that the right parser reports what is wrong with them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, TypeAlias

from mergelang.errors import CheckpointError
from mergelang.io.safetensors_header import open_regular_file

CheckpointFormat: TypeAlias = Literal["safetensors", "pickle"]

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
SAFETENSORS_SUFFIXES = (".safetensors",)
ZIP_MAGIC = b"PK\x03\x04"
PICKLE_MAGIC = b"\x80"


def sniff_format(path: str | os.PathLike[str]) -> CheckpointFormat:
    """``"safetensors"`` or ``"pickle"``, by content first and extension second.

    Raises :class:`CheckpointError` (``unknown-format``) for a file that is neither, and the
    errors of :func:`open_regular_file` for a path that is not a readable regular file.
    """
    where = Path(path)
    with open_regular_file(where) as (handle, size):
        try:
            head = handle.read(9)
        except OSError as exc:
            raise CheckpointError(
                str(where), f"cannot read: {exc.strerror}", code="unreadable"
            ) from None
    if len(head) == 9 and head[8:9] == b"{" and 8 + int.from_bytes(head[:8], "little") <= size:
        return "safetensors"
    if head.startswith((ZIP_MAGIC, PICKLE_MAGIC)):
        return "pickle"
    suffix = where.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        return "safetensors"
    if suffix in PICKLE_SUFFIXES:
        return "pickle"
    if size < 8:
        return "safetensors"
    raise CheckpointError(
        str(where),
        "not a checkpoint: neither a safetensors header nor a torch pickle",
        code="unknown-format",
        hint="mergelang reads .safetensors and weights-only .ckpt/.pt/.pth/.bin files",
    )
