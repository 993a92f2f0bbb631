"""Bounds on a pickle checkpoint, checked before torch unpickles it.

torch's weights-only unpickler runs no code, but a small hostile file can still make it use
gigabytes of memory or minutes of work: a zip record that inflates to gigabytes, a pickle of
hundreds of millions of operations, or a tensor that a stride of 0 expands far beyond the
bytes stored for it. These checks read only the zip directory and the pickle's opcodes
(never a tensor's bytes) and refuse such files with the code ``ckpt-bomb``:

- a compressed zip record (``torch.save`` always stores records uncompressed);
- records whose declared sizes, added up, exceed the file's own size;
- a ``data.pkl`` over :data:`MAX_PICKLE_BYTES`, or a pickle of more than
  :data:`MAX_PICKLE_OPCODES` operations;
- a loaded tensor with more elements than its storage holds (:func:`check_tensor_storage`).

This module imports no torch; :func:`check_tensor_storage` takes the tensor's numbers.
"""

from __future__ import annotations

import io
import pickletools
import zipfile
from typing import BinaryIO

from mergelang.errors import CheckpointError

__all__ = [
    "BOMB_CODE",
    "MAX_PICKLE_BYTES",
    "MAX_PICKLE_OPCODES",
    "check_legacy_pickle",
    "check_tensor_storage",
    "check_zip_checkpoint",
]

BOMB_CODE = "ckpt-bomb"
"""The diagnostic code of a checkpoint refused by these bounds."""

MAX_PICKLE_BYTES = 16 * 1024 * 1024
"""The largest ``data.pkl`` accepted. An SDXL checkpoint's is about 300 KB: the pickle only
names each tensor's storage, dtype, shape and strides."""

MAX_PICKLE_OPCODES = 2_000_000
"""The most pickle operations accepted (a checkpoint needs about 20 per tensor)."""

_HINT = "convert it to .safetensors with a tool you trust"


def _bomb(where: str, message: str) -> CheckpointError:
    return CheckpointError(where, message, code=BOMB_CODE, hint=_HINT)


def _count_opcodes(stream: BinaryIO, where: str, pickles: int = 1) -> None:
    """Walk up to ``pickles`` consecutive pickles of ``stream`` opcode by opcode (nothing is
    built), refusing more than :data:`MAX_PICKLE_OPCODES` operations in all."""
    count = 0
    for _ in range(pickles):
        try:
            for _op in pickletools.genops(stream):
                count += 1
                if count > MAX_PICKLE_OPCODES:
                    raise _bomb(
                        where,
                        f"the pickle holds more than {MAX_PICKLE_OPCODES:,} operations "
                        "(a checkpoint needs about 20 per tensor)",
                    )
        except CheckpointError:
            raise
        except Exception:
            return  # a malformed pickle: torch's loader reports it
        if stream.read(1) == b"":
            return
        stream.seek(-1, io.SEEK_CUR)


def check_zip_checkpoint(handle: BinaryIO, size: int, where: str) -> None:
    """Refuse a zip-format checkpoint whose directory or pickle is out of bounds (see the
    module docstring). ``handle`` is the open file, ``size`` its size in bytes; its position
    is moved."""
    try:
        archive = zipfile.ZipFile(handle)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return  # not a readable archive: torch's loader says why
    with archive:
        records = archive.infolist()
        declared = 0
        pickle_record: zipfile.ZipInfo | None = None
        for record in records:
            if record.compress_type != zipfile.ZIP_STORED:
                raise _bomb(
                    where,
                    f"the archive record {record.filename!r} is compressed; torch.save never "
                    "compresses, and a compressed record can inflate to any size",
                )
            declared += max(record.file_size, record.compress_size)
            if record.filename == "data.pkl" or record.filename.endswith("/data.pkl"):
                pickle_record = record
        if declared > size:
            raise _bomb(
                where,
                f"the archive's records declare {declared:,} bytes, more than the file's {size:,}",
            )
        if pickle_record is None:
            return
        if pickle_record.file_size > MAX_PICKLE_BYTES:
            raise _bomb(
                where,
                f"its data.pkl is {pickle_record.file_size:,} bytes, over the "
                f"{MAX_PICKLE_BYTES // (1024 * 1024)} MiB a checkpoint's pickle needs at most",
            )
        try:
            data = archive.read(pickle_record)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError):
            return
    _count_opcodes(io.BytesIO(data), where)


def check_legacy_pickle(handle: BinaryIO, where: str) -> None:
    """Refuse a legacy (not zip) checkpoint whose pickles hold too many operations. Such a
    file is five pickles (magic number, protocol, system info, the objects, the storage
    keys) followed by the raw storages; only the pickles are walked."""
    handle.seek(0)
    _count_opcodes(handle, where, pickles=5)


def check_tensor_storage(
    where: str,
    key: str,
    *,
    shape: tuple[int, ...],
    strides: tuple[int, ...],
    offset: int,
    storage_elements: int,
) -> None:
    """Refuse a tensor whose elements are not all distinct bytes of its storage: one
    expanded by a stride of 0 (or any overlapping strides) beyond what the file stores.

    Reading such a tensor would make a merge compute and write far more than the file holds
    (and ``plan``'s memory figure would be computed from the stored bytes)."""
    elements = 1
    for extent in shape:
        elements *= extent
    if elements == 0:
        return
    reach = offset + sum(
        (extent - 1) * abs(stride) for extent, stride in zip(shape, strides, strict=True)
    )
    if reach >= storage_elements or elements > storage_elements - offset:
        raise CheckpointError(
            where,
            f"the tensor has {elements:,} elements but its storage holds "
            f"{max(storage_elements - offset, 0):,} (expanded with a stride of 0 or overlapping "
            "strides); mergelang reads only tensors stored element by element",
            code=BOMB_CODE,
            key=key,
            hint=_HINT,
        )
