"""Which format a checkpoint file is in, decided without torch from its first bytes.

A safetensors file starts with a little-endian header length that fits the file, followed by
``{``; a ``torch.save`` file is a zip archive (``PK\\x03\\x04``) or, in the legacy format, a
pickle (protocol 2 and later start with ``\\x80``). Files that match neither are judged by
their extension (the ``read_suffixes`` of :data:`~mergelang.io.file_formats.FILE_FORMATS`), so
that the right parser reports what is wrong with them.

Each check has two forms: one that opens the file by path, and one (``..._of``) that reads an
already open file with ``pread``, so that an input opened once is sniffed through the same
descriptor that later reads it.
"""

from __future__ import annotations

import os
from io import BufferedReader
from pathlib import Path

from mergelang.errors import CheckpointError
from mergelang.io.file_formats import FILE_FORMATS, CheckpointFormat
from mergelang.io.safetensors_header import open_regular_file

__all__ = [
    "NOT_TORCH_MESSAGE",
    "PICKLE_MAGIC",
    "PICKLE_SUFFIXES",
    "SAFETENSORS_SUFFIXES",
    "ZIP_MAGIC",
    "CheckpointFormat",
    "check_torch_signature",
    "check_torch_signature_of",
    "has_torch_signature",
    "sniff_format",
    "sniff_format_of",
]

SAFETENSORS_SUFFIXES = FILE_FORMATS["safetensors"].read_suffixes
PICKLE_SUFFIXES = FILE_FORMATS["ckpt"].read_suffixes
ZIP_MAGIC = b"PK\x03\x04"
GGUF_MAGIC = b"GGUF"
PICKLE_MAGIC = b"\x80"


NOT_TORCH_MESSAGE = "not a torch checkpoint: the file is neither a zip archive nor a pickle"


def has_torch_signature(head: bytes) -> bool:
    """Whether ``head`` begins like a file of ``torch.save``: a zip archive, or a pickle of
    protocol 2 or later (the legacy format; torch has always written protocol 2)."""
    return head.startswith((ZIP_MAGIC, PICKLE_MAGIC))


def _head(handle: BufferedReader, count: int, where: Path) -> bytes:
    """The first ``count`` bytes of an open file (fewer if it is shorter), read with
    ``pread`` so the file's position is left alone."""
    try:
        if hasattr(os, "pread"):
            return os.pread(handle.fileno(), count, 0)
        handle.seek(0)  # pragma: no cover - platforms without pread
        return handle.read(count)  # pragma: no cover
    except OSError as exc:
        raise CheckpointError(
            str(where), f"cannot read: {exc.strerror}", code="unreadable"
        ) from None


def check_torch_signature(path: str | os.PathLike[str]) -> bytes:
    """The first 4 bytes of a pickle-format file (``.ckpt``...), refusing one that is empty
    or does not begin like a ``torch.save`` file; reads nothing more, imports no torch."""
    where = Path(path)
    with open_regular_file(where) as (handle, size):
        return check_torch_signature_of(handle, size, where)


def check_torch_signature_of(handle: BufferedReader, size: int, path: Path) -> bytes:
    """:func:`check_torch_signature` of a file already open (``size`` bytes long)."""
    head = _head(handle, len(ZIP_MAGIC), path)
    if size == 0:
        raise CheckpointError(str(path), "the file is empty (0 bytes)", code="empty-file")
    if not has_torch_signature(head):
        raise CheckpointError(
            str(path),
            NOT_TORCH_MESSAGE,
            code="corrupt-ckpt",
            hint="mergelang reads .safetensors and weights-only .ckpt/.pt/.pth/.bin files",
        )
    return head


def sniff_format(path: str | os.PathLike[str]) -> CheckpointFormat:
    """``"safetensors"``, ``"pickle"`` or ``"gguf"``, by content first and extension second.

    Raises :class:`CheckpointError` (``unknown-format``) for a file that is neither, and the
    errors of :func:`open_regular_file` for a path that is not a readable regular file.
    """
    where = Path(path)
    with open_regular_file(where) as (handle, size):
        return sniff_format_of(handle, size, where)


def sniff_format_of(handle: BufferedReader, size: int, path: Path) -> CheckpointFormat:
    """:func:`sniff_format` of a file already open (``size`` bytes long)."""
    head = _head(handle, 9, path)
    if head.startswith(GGUF_MAGIC):
        return "gguf"
    if len(head) == 9 and head[8:9] == b"{" and 8 + int.from_bytes(head[:8], "little") <= size:
        return "safetensors"
    if has_torch_signature(head):
        return "pickle"
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        return "safetensors"
    if suffix in PICKLE_SUFFIXES:
        return "pickle"
    if suffix in FILE_FORMATS["gguf"].read_suffixes:
        return "gguf"
    if size < 8:
        return "safetensors"
    raise CheckpointError(
        str(path),
        "not a checkpoint: neither a safetensors header nor a torch pickle",
        code="unknown-format",
        hint="mergelang reads .safetensors and weights-only .ckpt/.pt/.pth/.bin files",
    )
