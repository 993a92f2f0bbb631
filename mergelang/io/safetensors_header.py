"""Reading and validating the header of a ``.safetensors`` file, in pure Python.

A safetensors file is an 8-byte little-endian header length ``n``, ``n`` bytes of UTF-8 JSON,
then the data section. The JSON object maps each tensor name to ``{"dtype", "shape",
"data_offsets": [begin, end]}`` (offsets relative to the data section) and may hold a
``"__metadata__"`` object of string values.

:func:`read_safetensors_header` reads only the header and checks everything a reader relies
on, so that a corrupt or truncated file is refused when it is opened, never half-way through a
merge. Each problem has its own :class:`~mergelang.errors.CheckpointError` code:

============================  ==========================================================
code                          problem
============================  ==========================================================
``not-found``                 no such file
``is-directory``              the path is a folder
``not-a-file``                a device, FIFO or socket
``permission-denied``         the file cannot be opened for reading
``unreadable``                any other error from the operating system
``empty-file``                zero bytes
``truncated-header``          fewer than the 8 bytes of the length field
``header-too-large``          a header length over 100 MB (not a safetensors file)
``header-out-of-bounds``      a header longer than the rest of the file
``header-not-utf8``           header bytes that are not UTF-8, or a name or metadata value
                              that is a lone surrogate escape
``header-not-json``           header text that is empty or not JSON (nested too deeply,
                              or an integer of thousands of digits, included)
``header-not-object``         JSON that is not an object
``duplicate-key``             a name given twice in one JSON object
``metadata-not-object``       ``__metadata__`` that is not an object
``metadata-not-string``       a ``__metadata__`` value that is not a string
``entry-not-object``          a tensor entry that is not an object
``entry-missing-field``       an entry without ``dtype``, ``shape`` or ``data_offsets``
``unknown-dtype``             a dtype code mergelang does not know
``bad-shape``                 a shape that is not a list of integers, a dimension over
                              2**63 - 1, or dimensions whose product (zeros left out) is
                              over 2**63 - 1
``negative-dimension``        a shape with a negative dimension
``bad-offsets``               offsets that are not two ordered, non-negative integers
``size-mismatch``             a byte count other than elements x item size
``out-of-bounds``             data that ends past the end of the file (truncated file)
``overlapping-offsets``       two tensors sharing bytes
``data-gap``                  bytes of the data section that belong to no tensor (a hole
                              between tensors, or data after the last one)
============================  ==========================================================

As the format requires, the tensors' bytes tile the data section exactly; tensors may appear
in any order and at any alignment.
"""

from __future__ import annotations

import json
import math
import os
import stat
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from io import BufferedReader
from pathlib import Path
from typing import Any

from mergelang.errors import CheckpointError
from mergelang.io.dtypes import ITEM_SIZES, is_known_code

MAX_HEADER_BYTES = 100 * 1000 * 1000
"""Header lengths above this are refused: no real checkpoint comes close (the same limit as
the reference safetensors implementation)."""

MAX_DIMENSION = 2**63 - 1
"""The largest dimension a tensor can have (torch sizes are signed 64-bit); a larger one can
only be declared by a zero-element shape, which no reader could create."""

METADATA_KEY = "__metadata__"
_FIELDS = ("dtype", "shape", "data_offsets")


@dataclass(frozen=True)
class TensorInfo:
    """One tensor's entry: safetensors dtype code, shape, and byte range in the data section."""

    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class SafetensorsHeader:
    """A validated header. ``tensors`` keeps the order of the file's JSON."""

    path: Path
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]
    data_offset: int
    file_size: int

    @property
    def data_size(self) -> int:
        return self.file_size - self.data_offset

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {key: info.shape for key, info in self.tensors.items()}


def open_regular(path: Path) -> tuple[BufferedReader, int]:
    """Open ``path`` for reading, refusing anything but a regular file; returns (file, size).

    The type is checked with ``stat`` before opening (opening a FIFO would block) and again on
    the open descriptor, so a file swapped in between is caught too. The caller closes it.
    """
    where = str(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise CheckpointError(where, "no such file", code="not-found") from None
    except PermissionError:
        raise CheckpointError(
            where, "permission denied", code="permission-denied", hint="check the file's rights"
        ) from None
    except OSError as exc:
        raise CheckpointError(where, f"cannot read: {exc.strerror}", code="unreadable") from None
    _check_mode(where, st.st_mode)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except PermissionError:
        raise CheckpointError(
            where,
            "permission denied: the file cannot be opened for reading",
            code="permission-denied",
            hint="check the file's rights",
        ) from None
    except OSError as exc:
        raise CheckpointError(where, f"cannot open: {exc.strerror}", code="unreadable") from None
    try:
        st = os.fstat(fd)
        _check_mode(where, st.st_mode)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb"), st.st_size


@contextmanager
def open_regular_file(path: Path) -> Iterator[tuple[BufferedReader, int]]:
    """:func:`open_regular` as a context manager that closes the file."""
    handle, size = open_regular(path)
    with handle:
        yield handle, size


def _check_mode(where: str, mode: int) -> None:
    if stat.S_ISDIR(mode):
        raise CheckpointError(where, "is a directory, not a checkpoint file", code="is-directory")
    if not stat.S_ISREG(mode):
        raise CheckpointError(
            where,
            "is not a regular file (a device, FIFO or socket)",
            code="not-a-file",
        )


def read_safetensors_header(path: str | os.PathLike[str]) -> SafetensorsHeader:
    """Read and validate the header of ``path``; reads the header bytes only."""
    where = Path(path)
    with open_regular_file(where) as (handle, size):
        return read_header_from(handle, size, where)


def read_header_from(handle: BufferedReader, size: int, path: Path) -> SafetensorsHeader:
    """Read and validate the header from an open file of ``size`` bytes, positioned at 0."""
    name = str(path)
    if size == 0:
        raise CheckpointError(name, "the file is empty (0 bytes)", code="empty-file")
    if size < 8:
        raise CheckpointError(
            name,
            f"the file is {size} bytes long, too short for a safetensors header "
            "(8-byte length field)",
            code="truncated-header",
        )
    try:
        head = handle.read(8)
    except OSError as exc:
        raise CheckpointError(name, f"cannot read: {exc.strerror}", code="unreadable") from None
    (length,) = struct.unpack("<Q", head)
    if length > MAX_HEADER_BYTES:
        raise CheckpointError(
            name,
            f"the header length field says {length} bytes (over the 100 MB limit): "
            "this is not a safetensors file",
            code="header-too-large",
        )
    if 8 + length > size:
        raise CheckpointError(
            name,
            f"the header length field says {length} bytes but only {size - 8} bytes "
            "follow it (a truncated file, or not a safetensors file)",
            code="header-out-of-bounds",
        )
    try:
        raw = handle.read(length)
    except OSError as exc:
        raise CheckpointError(name, f"cannot read: {exc.strerror}", code="unreadable") from None
    if len(raw) != length:
        raise CheckpointError(
            name, "the file shrank while its header was read", code="header-out-of-bounds"
        )
    return parse_header(raw, path=path, file_size=size)


def parse_header(raw: bytes, *, path: Path, file_size: int) -> SafetensorsHeader:
    """Validate the JSON header bytes ``raw`` of a file of ``file_size`` bytes."""
    name = str(path)
    data_offset = 8 + len(raw)
    try:
        text = raw.rstrip(b" \x00").decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CheckpointError(
            name,
            f"the header is not valid UTF-8 (byte {exc.start} of the header)",
            code="header-not-utf8",
        ) from None
    if not text.strip():
        raise CheckpointError(
            name,
            f"the header is empty (no JSON in its {len(raw)} bytes): not a safetensors file",
            code="header-not-json",
        )
    try:
        document = json.loads(text, object_pairs_hook=_reject_duplicates(name))
    except json.JSONDecodeError as exc:
        raise CheckpointError(
            name,
            f"the header is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            code="header-not-json",
        ) from None
    except RecursionError:
        raise CheckpointError(
            name, "the header is not valid JSON: it is nested too deeply", code="header-not-json"
        ) from None
    except ValueError as exc:
        # Python refuses integers of more than 4300 digits while parsing.
        raise CheckpointError(
            name, f"the header is not valid JSON: {_first_clause(exc)}", code="header-not-json"
        ) from None
    if not isinstance(document, dict):
        raise CheckpointError(
            name,
            f"the header is JSON {_json_kind(document)}, not an object",
            code="header-not-object",
        )
    metadata: dict[str, str] = {}
    tensors: dict[str, TensorInfo] = {}
    data_size = file_size - data_offset
    for key, entry in document.items():
        if key == METADATA_KEY:
            metadata = _parse_metadata(name, entry)
        else:
            tensors[key] = _parse_entry(name, key, entry, data_size)
    _check_layout(name, tensors, data_size)
    return SafetensorsHeader(path, tensors, metadata, data_offset, file_size)


def _first_clause(exc: BaseException) -> str:
    return str(exc).split(";")[0].strip() or type(exc).__name__


def is_utf8_text(text: str) -> bool:
    """Whether ``text`` can be written as UTF-8: JSON escapes can spell lone surrogates
    (``"\\ud800"``), which no UTF-8 file, terminal or other safetensors reader accepts."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _reject_duplicates(name: str) -> Any:
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            if not is_utf8_text(key):
                raise CheckpointError(
                    name,
                    f"the header has the name {key!r}, which is not valid Unicode "
                    "(a lone surrogate escape)",
                    code="header-not-utf8",
                )
            if key in result:
                raise CheckpointError(
                    name, f"the header names {key!r} twice", code="duplicate-key", key=key
                )
            result[key] = value
        return result

    return hook


def _json_kind(value: object) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return "number"


def _parse_metadata(name: str, entry: object) -> dict[str, str]:
    if not isinstance(entry, dict):
        raise CheckpointError(
            name,
            f"__metadata__ is JSON {_json_kind(entry)}, not an object of strings",
            code="metadata-not-object",
        )
    for meta_key, value in entry.items():
        if not isinstance(value, str):
            raise CheckpointError(
                name,
                f"__metadata__ value {meta_key!r} is JSON {_json_kind(value)}; "
                "safetensors metadata values must be strings",
                code="metadata-not-string",
            )
        if not is_utf8_text(value):
            raise CheckpointError(
                name,
                f"__metadata__ value {meta_key!r} is not valid Unicode (a lone surrogate escape)",
                code="header-not-utf8",
            )
    return dict(entry)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_entry(name: str, key: str, entry: object, data_size: int) -> TensorInfo:
    if not isinstance(entry, dict):
        raise CheckpointError(
            name,
            f"the header entry is JSON {_json_kind(entry)}, not an object",
            code="entry-not-object",
            key=key,
        )
    missing = [f for f in _FIELDS if f not in entry]
    if missing:
        raise CheckpointError(
            name,
            "the header entry has no " + " or ".join(missing),
            code="entry-missing-field",
            key=key,
        )
    dtype = entry["dtype"]
    if not isinstance(dtype, str) or not is_known_code(dtype):
        raise CheckpointError(
            name,
            f"unknown dtype {dtype!r} (known: {', '.join(ITEM_SIZES)})",
            code="unknown-dtype",
            key=key,
        )
    raw_shape = entry["shape"]
    if not isinstance(raw_shape, list) or not all(_is_int(d) for d in raw_shape):
        raise CheckpointError(
            name, f"shape {raw_shape!r} is not a list of integers", code="bad-shape", key=key
        )
    shape = tuple(int(d) for d in raw_shape)
    if any(d < 0 for d in shape):
        raise CheckpointError(
            name,
            f"shape {list(shape)} has a negative dimension",
            code="negative-dimension",
            key=key,
        )
    if any(d > MAX_DIMENSION for d in shape):
        raise CheckpointError(
            name,
            f"shape {list(shape)} has a dimension over 2**63 - 1",
            code="bad-shape",
            key=key,
        )
    if math.prod(max(d, 1) for d in shape) > MAX_DIMENSION:
        # A zero-element shape passes the size check, but no reader can lay it out: its
        # strides overflow (torch: "Storage size calculation overflowed").
        raise CheckpointError(
            name,
            f"shape {list(shape)} has dimensions whose product (zeros left out) is over 2**63 - 1",
            code="bad-shape",
            key=key,
        )
    offsets = entry["data_offsets"]
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(_is_int(o) for o in offsets)
        or offsets[0] < 0
        or offsets[1] < offsets[0]
    ):
        raise CheckpointError(
            name,
            f"data_offsets {offsets!r} are not two ordered, non-negative integers",
            code="bad-offsets",
            key=key,
        )
    start, end = int(offsets[0]), int(offsets[1])
    expected = math.prod(shape) * ITEM_SIZES[dtype]
    if end - start != expected:
        raise CheckpointError(
            name,
            f"data_offsets cover {end - start} bytes but shape {list(shape)} of {dtype} "
            f"needs {expected}",
            code="size-mismatch",
            key=key,
        )
    if end > data_size:
        raise CheckpointError(
            name,
            f"the tensor's data ends at byte {end} of the data section, which holds only "
            f"{max(data_size, 0)} bytes (the file is truncated)",
            code="out-of-bounds",
            key=key,
        )
    return TensorInfo(dtype, shape, start, end)


def _check_layout(name: str, tensors: dict[str, TensorInfo], data_size: int) -> None:
    """The tensors' bytes must tile the data section: no overlap, no hole, nothing after.

    Bytes that belong to no tensor are refused as the safetensors format requires (they are
    how polyglot files are made, and they are a sign of a damaged file or header). Tensors
    of zero bytes take no room and may sit at any offset within the data section.
    """
    ranges = sorted(
        (info.start, info.end, key) for key, info in tensors.items() if info.end > info.start
    )
    covered, previous = 0, None
    for start, end, key in ranges:
        if start < covered:
            raise CheckpointError(
                name,
                f"the tensor's bytes overlap those of {previous!r}",
                code="overlapping-offsets",
                key=key,
            )
        if start > covered:
            raise CheckpointError(
                name,
                f"the {start - covered} bytes before the tensor's data (from byte {covered} "
                "of the data section) belong to no tensor; the format allows no holes",
                code="data-gap",
                key=key,
            )
        covered, previous = end, key
    if covered < data_size:
        raise CheckpointError(
            name,
            f"the last {data_size - covered} bytes of the file belong to no tensor "
            "(data after the last tensor: a damaged file or a wrong header)",
            code="data-gap",
        )
