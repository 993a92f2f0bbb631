"""Lazy checkpoint readers: one protocol, a safetensors reader of bounded reads, format sniffing.

:class:`SafetensorsReader` validates the header when the file is opened, keeps the file open,
and reads each tensor when it is asked for, with bounded reads (``pread``) through that
descriptor into memory of its own: writing into a returned tensor changes neither the file
nor what a later :meth:`~SafetensorsReader.get` returns, tensors stay valid after
:meth:`~SafetensorsReader.close`, and any alignment of the tensor's bytes is fine.
:meth:`~SafetensorsReader.read_into` reads a range of a key's elements into a buffer the
caller owns: the executor reads every key that way, chunk by chunk, into buffers it reuses, so
that its memory does not grow with the size of a key.

Memory maps were used before, and are zero-copy; but a file truncated while a mapping of it
is read kills the process with ``SIGBUS`` (no message, the partial output left behind), and
Python cannot recover from that signal. A bounded read of a shrunken file is a short read:
a clean :class:`~mergelang.errors.CheckpointError` naming the file and the key. On a warm
page cache the copy costs about what the page faults of a mapping cost; it reads the same
descriptor that was validated, never the file reopened by name.

:func:`open_checkpoint` picks the reader by content (the safetensors header signature, the zip
or pickle magic) and falls back to the extension; a scaled fp8 file is read through
:class:`~mergelang.io.scaled_fp8.ScaledFp8Reader`.
"""

from __future__ import annotations

import ctypes
import math
import os
import sys
from collections.abc import Mapping
from io import BufferedReader
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Protocol

import torch

from mergelang.errors import CheckpointError
from mergelang.io.dtypes import item_size, torch_dtype
from mergelang.io.formats import sniff_format
from mergelang.io.key_index import KeyIndex
from mergelang.io.safetensors_header import (
    SafetensorsHeader,
    TensorInfo,
    open_regular,
    read_header_from,
)


class TensorMeta(Protocol):
    """What a reader tells about one key without loading it."""

    @property
    def dtype(self) -> str:
        """The safetensors dtype code (``"F16"``, ``"I64"``...)."""
        ...

    @property
    def shape(self) -> tuple[int, ...]: ...


class CheckpointReader(Protocol):
    """A checkpoint opened for lazy, key-by-key reading."""

    @property
    def path(self) -> Path: ...

    @property
    def metadata(self) -> Mapping[str, str]: ...

    def keys(self) -> list[str]: ...

    def info(self, key: str) -> TensorMeta: ...

    def shapes(self) -> dict[str, tuple[int, ...]]: ...

    def get(self, key: str) -> torch.Tensor: ...

    def close(self) -> None: ...

    def __enter__(self) -> CheckpointReader: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class SafetensorsReader(KeyIndex[TensorInfo]):
    """A ``.safetensors`` file, validated at open; tensors are read lazily, key by key.

    Given ``file`` and its validated ``header`` (an input opened and read once), the reader
    maps through that descriptor and leaves closing it to its owner.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        file: BufferedReader | None = None,
        header: SafetensorsHeader | None = None,
    ) -> None:
        if sys.byteorder != "little":
            raise CheckpointError(
                str(path), "mergelang reads safetensors only on little-endian hosts"
            )
        self.path = Path(path)
        self._owns_file = file is None
        if file is None:
            file, size = open_regular(self.path)
            try:
                header = read_header_from(file, size, self.path)
            except BaseException:
                file.close()
                raise
        elif header is None:
            raise ValueError("SafetensorsReader: an open file needs its header")
        self.header: SafetensorsHeader = header
        self._handle: BufferedReader | None = file
        self.metadata: Mapping[str, str] = MappingProxyType(self.header.metadata)
        self._index = self.header.tensors

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return self.header.shapes()

    def _open_key(self, key: str) -> tuple[TensorInfo, BufferedReader, torch.dtype]:
        """``key``'s header entry, the open file and the key's torch dtype (errors naming
        the file and the key)."""
        info = self.info(key)
        handle = self._handle
        if handle is None:
            raise ValueError(f"{self.path}: the reader is closed")
        try:
            dtype = torch_dtype(info.dtype)
        except TypeError as exc:
            raise CheckpointError(
                str(self.path), str(exc), code="unsupported-dtype", key=key
            ) from None
        return info, handle, dtype

    def get(self, key: str) -> torch.Tensor:
        """The tensor ``key``, read into memory of its own."""
        info, handle, dtype = self._open_key(key)
        if info.nbytes == 0:
            return torch.empty(info.shape, dtype=dtype)
        start = self.header.data_offset + info.start
        tensor = torch.empty(info.numel, dtype=dtype)
        read_exactly(handle.fileno(), tensor, start, self.path, key)
        return tensor.view(info.shape)

    def read_into(self, key: str, first: int, out: torch.Tensor) -> torch.Tensor:
        """Elements ``first .. first + out.numel()`` of the flattened tensor ``key``, read
        into ``out`` (a contiguous CPU tensor of the key's dtype, such as a reused chunk
        buffer); returns ``out``.

        A merge reads each key this way, a chunk at a time, so that the memory a run holds
        is its chunk buffers whatever the size of the key: reading whole keys into memory of
        their own cost one key per input per worker, and an allocator that keeps what it
        freed. A short read is the same clean error as for :meth:`get`.
        """
        info, handle, dtype = self._open_key(key)
        count = out.numel()
        if out.dtype != dtype or out.device.type != "cpu" or not out.is_contiguous():
            raise ValueError(
                f"read_into {key!r}: needs a contiguous CPU buffer of {dtype}, got {out.dtype} "
                f"on {out.device}"
            )
        if first < 0 or first + count > info.numel:
            raise ValueError(
                f"read_into {key!r}: elements {first}..{first + count} are outside the "
                f"key's {info.numel}"
            )
        start = self.header.data_offset + info.start + first * out.element_size()
        read_exactly(handle.fileno(), out, start, self.path, key)
        return out

    def close(self) -> None:
        """Close the file (unless it was given open); tensors already returned keep their
        own memory."""
        if self._handle is not None and self._owns_file:
            self._handle.close()
        self._handle = None


def open_checkpoint(path: str | os.PathLike[str]) -> CheckpointReader:
    """Open ``path`` with the reader its content calls for."""
    format = sniff_format(path)
    if format == "safetensors":
        from mergelang.io.scaled_fp8 import scaled_view

        return scaled_view(SafetensorsReader(path))
    if format == "gguf":
        from mergelang.io.gguf_format import GGUFCheckpoint

        return GGUFCheckpoint(path)
    from mergelang.io.ckpt import CkptReader

    return CkptReader(path)


def read_exactly(fd: int, tensor: torch.Tensor, offset: int, path: Path, key: str) -> None:
    """Fill ``tensor`` (contiguous, on the CPU) with the bytes at ``offset`` of ``fd``.

    Bounded reads (``pread``) rather than memory maps: a file truncated while it is read gives
    a short read here, a clean error naming the file and key, where touching a mapped page past
    the new end of the file would kill the process with ``SIGBUS``.
    """
    nbytes = tensor.numel() * tensor.element_size()
    if nbytes == 0:
        return
    view = memoryview((ctypes.c_char * nbytes).from_address(tensor.data_ptr())).cast("B")
    done = 0
    try:
        while done < nbytes:
            count = os.preadv(fd, [view[done : done + _READ_LIMIT]], offset + done)
            if count == 0:
                break
            done += count
    except OSError as exc:
        raise CheckpointError(
            str(path),
            f"cannot read the tensor's bytes ({exc.strerror})",
            code="unreadable",
            key=key,
        ) from None
    finally:
        view.release()
    if done < nbytes:
        raise CheckpointError(
            str(path),
            f"the file ended {nbytes - done} bytes before the tensor's end; "
            "was it truncated after it was opened?",
            code="input-changed",
            key=key,
        )


_READ_LIMIT = 1 << 30
"""The most one ``pread`` asks for (Linux reads at most about 2 GiB per call)."""


def tensor_nbytes(meta: TensorMeta) -> int:
    """Bytes of one key as stored (elements x item size)."""
    return math.prod(meta.shape) * item_size(meta.dtype)
