"""Bounded reading of text files: recipes, and the size limit preset files share.

:func:`read_recipe_text` reads only regular files (a folder, a FIFO or a device is refused
before anything is read), at most :data:`MAX_RECIPE_SIZE` bytes of them, and
:func:`decode_recipe` turns the bytes into text: UTF-8, a BOM allowed, and a byte that is not
UTF-8 located by line and column. Every refusal is a :class:`~mergelang.errors.RecipeError`
naming the file, never a Python exception. Nothing here imports torch or the language.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from mergelang.errors import Diagnostic, RecipeError, Span, source_lines

__all__ = [
    "MAX_RECIPE_SIZE",
    "decode_recipe",
    "looks_like_checkpoint",
    "normalise_line_ends",
    "read_recipe_text",
    "too_large",
]

MAX_RECIPE_SIZE = 256 * 1024
"""The largest recipe accepted, in bytes of a file or characters of a text: 256 KiB, some
6,000 statements of ordinary length. Hand-written and generated recipes are a few kilobytes
(a sweep is a ``for`` loop, not one line per output); a larger text is refused at once,
rather than read whole and parsed for minutes. Preset files have the same limit."""

_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
)


def looks_like_checkpoint(head: bytes, size: int) -> bool:
    """Whether a file beginning with ``head`` (``size`` bytes long) is a model checkpoint: a
    safetensors header, a zip archive or pickle of ``torch.save``, or a GGUF file."""
    if len(head) >= 9 and head[8:9] == b"{" and 8 + int.from_bytes(head[:8], "little") <= size:
        return True
    return head.startswith((b"PK\x03\x04", b"GGUF")) or (
        len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5
    )


def normalise_line_ends(text: str) -> str:
    """``text`` with every line ending (``\\r\\n``, ``\\r``) made ``\\n``."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def read_recipe_text(path: str | Path) -> str:
    """The text of a recipe file (UTF-8, a BOM allowed); a file that cannot be a recipe (a
    folder, a FIFO or device, one over :data:`MAX_RECIPE_SIZE`, not UTF-8) raises
    RecipeError naming it."""
    where = str(path)
    try:
        # O_NONBLOCK: opening a FIFO with no writer must not wait; it is refused below.
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise _file_error(where, "recipe file not found") from None
    except IsADirectoryError:
        raise _file_error(where, "this is a folder, not a recipe file") from None
    except OSError as exc:
        raise _file_error(where, f"cannot read the recipe: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise _file_error(where, "this is a folder, not a recipe file")
        if not stat.S_ISREG(info.st_mode):
            raise _file_error(
                where,
                "this is not a regular file (a FIFO, socket or device)",
                hint="to read a recipe from a pipe, give - and feed it on standard input",
            )
        head = os.read(fd, 16)
        if looks_like_checkpoint(head, info.st_size):
            raise _file_error(
                where,
                "this is a model checkpoint, not a recipe",
                hint=f"a recipe is a .merge text file; to see what the checkpoint holds: "
                f"mergelang show {where}",
            )
        if info.st_size > MAX_RECIPE_SIZE:
            raise too_large(where)
        chunks: list[bytes] = [head]
        size = len(head)
        while size <= MAX_RECIPE_SIZE:  # the file may grow while it is read
            chunk = os.read(fd, MAX_RECIPE_SIZE + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise _file_error(where, f"cannot read the recipe: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    return decode_recipe(data, where)


def decode_recipe(data: bytes, where: str) -> str:
    """Recipe bytes -> text: UTF-8, a BOM allowed. Text over :data:`MAX_RECIPE_SIZE` bytes,
    UTF-16/32 and bytes that are not UTF-8 raise RecipeError; a bad byte is located by
    line and column (the offset is in the message)."""
    if len(data) > MAX_RECIPE_SIZE:
        raise too_large(where)
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            raise _file_error(
                where,
                f"the recipe is {encoding} text, not UTF-8",
                code="recipe-encoding",
                hint="save the recipe as UTF-8",
            )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        before = normalise_line_ends(data[: exc.start].decode("utf-8-sig"))
        line = before.count("\n") + 1
        line_start = before.rfind("\n") + 1
        column = len(before) - line_start + 1
        shown = normalise_line_ends(data.decode("utf-8-sig", errors="replace"))[line_start:]
        binary = b"\0" in data
        raise RecipeError(
            [
                Diagnostic(
                    f"the recipe is not UTF-8 text (byte {exc.start} on line {line})",
                    "recipe-encoding",
                    where,
                    Span.point(line, column),
                    "is this a binary file? a recipe is UTF-8 text"
                    if binary
                    else "save the recipe as UTF-8",
                    source_line=source_lines(shown)[0],
                )
            ]
        ) from None


def too_large(where: str) -> RecipeError:
    """The error for a recipe over :data:`MAX_RECIPE_SIZE`."""
    return _file_error(
        where,
        f"the recipe is too large (over {MAX_RECIPE_SIZE // 1024} KiB)",
        code="recipe-too-large",
        hint="split it into several recipes, or use for loops instead of repeated lines",
    )


def _file_error(
    path: str, message: str, *, code: str = "recipe-file", hint: str | None = None
) -> RecipeError:
    return RecipeError([Diagnostic(message, code, path, hint=hint)])
