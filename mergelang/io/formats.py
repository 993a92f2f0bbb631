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


NOT_TORCH_MESSAGE = "not a torch checkpoint: the file is neither a zip archive nor a pickle"


def has_torch_signature(head: bytes) -> bool:
    """Whether ``head`` begins like a file of ``torch.save``: a zip archive, or a pickle of
    protocol 2 or later (the legacy format; torch has always written protocol 2)."""
    return head.startswith((ZIP_MAGIC, PICKLE_MAGIC))


def check_torch_signature(path: str | os.PathLike[str]) -> bytes:
    """The first 4 bytes of a pickle-format file (``.ckpt``...), refusing one that is empty
    or does not begin like a ``torch.save`` file; reads nothing more, imports no torch."""
    where = Path(path)
    with open_regular_file(where) as (handle, size):
        try:
            head = handle.read(len(ZIP_MAGIC))
        except OSError as exc:
            raise CheckpointError(
                str(where), f"cannot read: {exc.strerror}", code="unreadable"
            ) from None
    if size == 0:
        raise CheckpointError(str(where), "the file is empty (0 bytes)", code="empty-file")
    if not has_torch_signature(head):
        raise CheckpointError(
            str(where),
            NOT_TORCH_MESSAGE,
            code="corrupt-ckpt",
            hint="mergelang reads .safetensors and weights-only .ckpt/.pt/.pth/.bin files",
        )
    return head


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
    if has_torch_signature(head):
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
