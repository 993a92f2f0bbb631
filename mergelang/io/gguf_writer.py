"""The streaming GGUF writer: header and tensor infos first, then each tensor's bytes as the
stream produces them, in bounded memory.

Every key's GGML type, and so its size in bytes, follows from its shape and the save's
quantisation (:func:`~mergelang.io.gguf_format.stored_type`), so the whole layout is known
before any value is computed (:func:`gguf_layout`): the header (magic, version 3, the
key-value pairs, one tensor info per key with its dimensions fastest first, its type and its
data offset), then the data, each tensor starting at a multiple of the alignment (32 bytes,
GGUF's default, so no ``general.alignment`` is written) and padded with zeros to the next one.
:func:`file_size` is the exact size of the file, which ``plan`` shows.

:class:`GGUFSink` writes the header into a preallocated partial file (:class:`AtomicFile`),
then each piece the executor gives at its final offset (``pwrite``), from any thread: a kept
or ``F16`` key is converted and written piece by piece; a quantised key is quantised a whole
number of blocks at a time (blocks run along a tensor's rows, and every row is a whole number
of blocks, so the bytes of elements ``a..b`` are at ``a / block * block_bytes``). A piece that
starts or ends inside a block leaves that block's values in a small buffer until the block is
complete. Nothing but those partial blocks and the piece at hand is held: memory does not grow
with the model. The commit checks every value was written, fsyncs and renames.
"""

from __future__ import annotations

import math
import struct
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mergelang.errors import OutputError
from mergelang.io.writer import StreamedFile

if TYPE_CHECKING:
    import torch

    from mergelang.io.sinks import SinkTarget
    from mergelang.io.writer import OutputEntry

__all__ = ["ALIGNMENT", "GGUFLayout", "GGUFSink", "TensorSlot", "file_size", "gguf_layout"]

ALIGNMENT = 32
"""GGUF's default data alignment (``general.alignment`` when absent)."""

_MAGIC = 0x46554747
_VERSION = 3
_STRING, _UINT32, _INT32, _ARRAY = 8, 4, 5, 9
_MAX_DIMS = 4
_ORIG_SHAPE = "comfy.gguf.orig_shape."
_QUANT_VERSION_KEY = "general.quantization_version"
_QUANT_VERSION = 2
"""``general.quantization_version``: the version of the GGML block layouts written."""


@dataclass(frozen=True)
class TensorSlot:
    """Where one key's bytes go: its GGML type, values a block and bytes a block (1 and the
    item size for unquantised types), and its offset from the start of the data."""

    key: str
    kind: str
    numel: int
    block: int
    block_bytes: int
    offset: int

    @property
    def nbytes(self) -> int:
        return self.numel // self.block * self.block_bytes


@dataclass(frozen=True)
class GGUFLayout:
    """A GGUF output's header bytes, its tensors' slots and the file's size."""

    header: bytes
    data_start: int
    slots: Mapping[str, TensorSlot]
    total: int


def _align(value: int) -> int:
    return (value + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT


def _string(text: str) -> bytes:
    data = text.encode("utf-8")
    return struct.pack("<Q", len(data)) + data


def _string_pair(key: str, value: str) -> bytes:
    return _string(key) + struct.pack("<I", _STRING) + _string(value)


def _dims(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The GGUF dimensions (fastest first) of ``shape``: more than four dimensions are folded
    into the slowest one (the true shape is recorded in ``comfy.gguf.orig_shape.NAME``)."""
    if len(shape) > _MAX_DIMS:
        shape = (math.prod(shape[: len(shape) - _MAX_DIMS + 1]), *shape[-(_MAX_DIMS - 1) :])
    return tuple(reversed(shape))


def stored_kind(entry: OutputEntry, quant: str | None, path: str) -> str:
    """The GGML type of one key of the output (an :class:`OutputError` for a dtype GGUF cannot
    hold, such as fp8 or bool)."""
    from mergelang.io.gguf_format import KEPT_TYPES, stored_type

    if quant is not None and entry.dtype == "F32":
        return stored_type(entry, quant)
    if entry.dtype not in KEPT_TYPES:
        raise OutputError(
            path,
            f"a GGUF file cannot hold {entry.key!r}, of type {entry.dtype}",
            code="unsupported-dtype",
            hint="save as fp16, bf16 or fp32, or to a .safetensors file",
        )
    return entry.dtype


def gguf_layout(target: SinkTarget, quant: str | None, architecture: str) -> GGUFLayout:
    """The whole layout of a GGUF output (see the module docstring)."""
    from mergelang.io.gguf_format import require_gguf

    gguf = require_gguf()
    pairs = [
        _string_pair("general.architecture", architecture),
        _string(_QUANT_VERSION_KEY) + struct.pack("<II", _UINT32, _QUANT_VERSION),
    ]
    pairs += [
        _string_pair(name, value)
        for name, value in target.metadata.items()
        if name != "general.architecture"
    ]
    infos: list[bytes] = []
    slots: dict[str, TensorSlot] = {}
    offset = 0
    for entry in target.entries:
        if entry.key in slots:
            raise OutputError(
                str(target.path), f"key {entry.key!r} appears twice", code="duplicate-key"
            )
        kind = stored_kind(entry, quant, str(target.path))
        block, block_bytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[kind]]
        slot = TensorSlot(entry.key, kind, entry.numel, block, block_bytes, offset)
        slots[entry.key] = slot
        dims = _dims(entry.shape)
        if len(entry.shape) > _MAX_DIMS:
            shape = entry.shape
            pairs.append(
                _string(_ORIG_SHAPE + entry.key)
                + struct.pack(f"<IIQ{len(shape)}i", _ARRAY, _INT32, len(shape), *shape)
            )
        infos.append(
            _string(entry.key)
            + struct.pack(f"<I{len(dims)}Q", len(dims), *dims)
            + struct.pack("<IQ", int(gguf.GGMLQuantizationType[kind]), offset)
        )
        offset = _align(offset + slot.nbytes)
    head = struct.pack("<IIQQ", _MAGIC, _VERSION, len(infos), len(pairs))
    header = head + b"".join(pairs) + b"".join(infos)
    data_start = _align(len(header))
    return GGUFLayout(header, data_start, slots, data_start + offset)


def file_size(target: SinkTarget, quant: str | None, architecture: str) -> int:
    """The exact size in bytes of the GGUF file written for ``target``."""
    return gguf_layout(target, quant, architecture).total


def _encode(slot: TensorSlot, values: torch.Tensor) -> torch.Tensor:
    """The bytes of whole blocks of ``slot``'s values (a flat tensor, on any device) as a
    contiguous CPU tensor. The K-quants are computed where the values are (a GPU run
    quantises on the GPU); the package's quantisers need them on the CPU."""
    import torch

    from mergelang.io.dtypes import torch_dtype
    from mergelang.io.gguf_quants import K_TYPES, quantise_k

    if slot.block == 1:
        return values.to(torch_dtype(slot.kind)).cpu().contiguous()
    if slot.kind in K_TYPES:
        return quantise_k(values, slot.kind).cpu()
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize

    source = values.to(torch.float32).cpu().reshape(-1, slot.block).numpy()
    return torch.from_numpy(quantize(source, GGMLQuantizationType[slot.kind]))


class GGUFSink(StreamedFile):
    """A GGUF output streamed to its partial file (see the module docstring)."""

    def __init__(self, target: SinkTarget, quant: str | None, architecture: str) -> None:
        from mergelang.io.writer import AtomicFile, _preallocate, _pwrite_all, check_target

        self.target = target
        check_target(target.path, overwrite=target.overwrite, protected=target.protected)
        self.layout = gguf_layout(target, quant, architecture)
        self._written = dict.fromkeys(self.layout.slots, 0)
        self._partial: dict[tuple[str, int], tuple[torch.Tensor, list[int]]] = {}
        self._lock = threading.Lock()
        self._file = AtomicFile(target.path, overwrite=target.overwrite, protected=target.protected)
        self.path = self._file.path
        try:
            _preallocate(self._file.fd, self.layout.total)
            _pwrite_all(self._file.fd, memoryview(self.layout.header), 0)
        except OSError as exc:
            raise self._file.fail(exc, "writing the header") from None
        except BaseException:
            self._file.abort()
            raise

    def _slot(self, key: str) -> TensorSlot:
        try:
            return self.layout.slots[key]
        except KeyError:
            raise OutputError(
                str(self.path), f"{key!r} is not a key of this output", code="unknown-key"
            ) from None

    def _put(self, slot: TensorSlot, first: int, values: torch.Tensor) -> None:
        """Write ``values``, elements ``first..`` of ``slot``, a whole number of blocks."""
        from mergelang.io.writer import _byte_view, _pwrite_all

        if values.numel() == 0:
            return
        encoded = _encode(slot, values)
        at = self.layout.data_start + slot.offset + first // slot.block * slot.block_bytes
        try:
            _pwrite_all(self._file.fd, _byte_view(encoded), at)
        except OSError as exc:
            raise self._file.fail(exc, f"writing key {slot.key!r}") from None

    def write_part(self, key: str, element_offset: int, tensor: torch.Tensor) -> None:
        slot = self._slot(key)
        data = tensor.detach().reshape(-1)
        count = data.numel()
        end = element_offset + count
        if element_offset < 0 or end > slot.numel:
            raise OutputError(
                str(self.path),
                f"elements {element_offset}..{end} are outside key {key!r}, which has {slot.numel}",
                code="out-of-range",
            )
        block = slot.block
        start = -(-element_offset // block) * block
        stop = max(end // block * block, start)
        self._put(slot, start, data[start - element_offset : stop - element_offset])
        for low, high in ((element_offset, min(start, end)), (max(stop, element_offset), end)):
            if low < high:
                self._fragment(slot, low, data[low - element_offset : high - element_offset])
        with self._lock:
            self._written[key] += count

    def _fragment(self, slot: TensorSlot, first: int, values: torch.Tensor) -> None:
        """Keep part of one block until the block is complete, then write it."""
        import torch

        index = first // slot.block
        begin = index * slot.block
        with self._lock:
            found = self._partial.get((slot.key, index))
            if found is None:
                found = (torch.empty(slot.block, dtype=torch.float32), [0])
                self._partial[(slot.key, index)] = found
            buffer, filled = found
            buffer[first - begin : first - begin + values.numel()].copy_(values)
            filled[0] += values.numel()
            complete = filled[0] >= slot.block
            if complete:
                del self._partial[(slot.key, index)]
        if complete:
            self._put(slot, begin, buffer)

    def missing(self) -> list[str]:
        """Keys not completely written yet, in layout order."""
        with self._lock:
            return [k for k, slot in self.layout.slots.items() if self._written[k] < slot.numel]

    def abort(self) -> None:
        """Remove the temporary file and the pieces of blocks waiting for the rest."""
        self._partial.clear()
        self._file.abort()
