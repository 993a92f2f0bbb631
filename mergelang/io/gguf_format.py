"""GGUF checkpoints, read and written, through the ``gguf`` package (``mergelang[gguf]``).

GGUF diffusion models are the files city96's ComfyUI-GGUF loads: the model's tensors under
their usual names, each in a GGML type (``F32``, ``F16``, ``BF16`` or a block quantisation
such as ``Q8_0``, ``Q5_K``, ``Q4_K``), and the architecture in ``general.architecture``
(``sd1``, ``sdxl``, ``flux``...). Dimensions are stored fastest first, so a tensor's shape is
the reverse of its GGUF dimensions; a tensor of more than four dimensions records its shape in
``comfy.gguf.orig_shape.NAME``.

Reading (:class:`GGUFCheckpoint`): the header is parsed once by ``gguf.GGUFReader`` over the
input's open descriptor (a memory map: no tensor is read until the executor asks for it).
``F32``, ``F16``, ``BF16`` (and integer) tensors keep their type; a quantised tensor is a
float32 key, dequantised when the key is read: ``Q6_K``, ``Q5_K``, ``Q4_K`` and ``Q2_K`` by
:func:`~mergelang.io.gguf_quants.dequantise_k` (torch; the same values, bit for bit, as the
package's), the others by the package's reference dequantisers. A U-Net-only
``sd1``/``sdxl`` file's keys get the ``model.diffusion_model.`` prefix of a whole
checkpoint. Unknown tensor types, data beyond the end of the file and tensors that overlap
are errors when the input is resolved, before anything is written.

Writing (``save ... to "x.gguf" as q8_0``, :func:`open_sink`): the keys are laid out as
float32 and quantised by the sink (:mod:`mergelang.io.gguf_writer`, which streams the file to
disk in bounded memory); like city96's converter, tensors of one dimension or of at most 1024
values are stored as ``F32``, a matrix whose rows are not a whole number of blocks (32 values,
256 for the K-quants) as ``F16``, every other float tensor in the chosen type
(:func:`stored_type`). ``Q8_0``, ``Q5_1``, ``Q5_0``, ``Q4_1`` and ``Q4_0`` are quantised by the
``gguf`` package, ``Q6_K``, ``Q5_K``, ``Q4_K`` and ``Q2_K`` by :mod:`mergelang.io.gguf_quants`.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from mergelang.errors import CheckpointError, UsageError
from mergelang.io.key_index import KeyIndex
from mergelang.io.memory_reader import KeyMeta

if TYPE_CHECKING:
    from io import BufferedReader

    import torch

    from mergelang.io.gguf_writer import GGUFSink
    from mergelang.io.sinks import SinkTarget
    from mergelang.io.writer import OutputEntry

__all__ = [
    "KEPT_TYPES",
    "READ_TYPES",
    "WRITE_TYPES",
    "GGUFCheckpoint",
    "file_size",
    "open_sink",
    "read_metadata",
    "require_gguf",
]

_KEPT = {
    "F64": "F64",
    "F32": "F32",
    "F16": "F16",
    "BF16": "BF16",
    "I64": "I64",
    "I32": "I32",
    "I16": "I16",
    "I8": "I8",
}
"""The GGML types read as they are -> their safetensors code."""

READ_TYPES: frozenset[str] = frozenset(
    {*_KEPT, "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"}
)
"""The GGML tensor types mergelang reads."""

WRITE_TYPES: frozenset[str] = frozenset(
    {"Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q6_K", "Q5_K", "Q4_K", "Q2_K"}
)
"""The quantisations mergelang writes: those the ``gguf`` package quantises, and the
K-quants of :mod:`mergelang.io.gguf_quants`."""

KEPT_TYPES = frozenset(_KEPT)
"""The GGML types a key keeps as it is (their names are also their safetensors codes)."""

_UNET_PREFIX = "model.diffusion_model."
_PREFIXED_ARCHITECTURES = frozenset({"sd1", "sd2", "sdxl"})
_ORIG_SHAPE = "comfy.gguf.orig_shape."
SMALL_TENSOR = 1024
"""Tensors of at most this many values are stored as ``F32`` (city96's threshold)."""


def require_gguf() -> Any:
    """The ``gguf`` module, or a :class:`UsageError` saying how to install it."""
    try:
        import gguf
    except ImportError:
        raise UsageError(
            "reading or writing GGUF files needs the gguf package",
            hint="pip install 'mergelang[gguf]'",
        ) from None
    return gguf


def _bad(path: Path, message: str, code: str = "corrupt-gguf", key: str | None = None) -> Any:
    return CheckpointError(str(path), message, code=code, key=key)


class GGUFCheckpoint(KeyIndex[KeyMeta]):
    """A GGUF file opened for lazy, key-by-key reading (see the module docstring)."""

    def __init__(self, path: str | os.PathLike[str], *, file: BufferedReader | None = None) -> None:
        gguf = require_gguf()
        self.path = Path(path)
        source: Any = file if file is not None else str(self.path)
        try:
            self._reader = gguf.GGUFReader(source)
        except ValueError as exc:
            text = str(exc)
            if "GGMLQuantizationType" in text:
                raise _bad(
                    self.path,
                    f"a tensor of an unknown GGML type ({text})",
                    "unknown-quant-type",
                ) from None
            raise _bad(self.path, f"not a readable GGUF file ({text})") from None
        except (IndexError, KeyError, OverflowError) as exc:
            raise _bad(self.path, f"the GGUF header is damaged ({exc})") from None
        fields = self._reader.fields
        self.architecture = _string_field(fields, "general.architecture")
        self.metadata: Mapping[str, str] = MappingProxyType(_string_fields(fields))
        self._tensors: dict[str, Any] = {}
        self._index: dict[str, KeyMeta] = {}
        self._types: dict[str, str] = {}
        prefix = self._prefix()
        size = int(self._reader.data.shape[0])
        spans: list[tuple[int, int, str]] = []
        for tensor in self._reader.tensors:
            key = prefix + tensor.name
            kind = tensor.tensor_type.name
            if kind not in READ_TYPES:
                raise _bad(
                    self.path,
                    f"tensors of type {kind} are not supported (mergelang reads "
                    + ", ".join(sorted(READ_TYPES))
                    + ")",
                    "unsupported-quant-type",
                    key,
                )
            end = int(tensor.data_offset) + int(tensor.n_bytes)
            if end > size:
                raise _bad(
                    self.path,
                    f"the tensor's data ends at byte {end}, beyond the end of the file "
                    f"({size} bytes): the file is truncated",
                    "truncated",
                    key,
                )
            spans.append((int(tensor.data_offset), end, key))
            self._tensors[key] = tensor
            self._types[key] = kind
            self._index[key] = KeyMeta(_KEPT.get(kind, "F32"), self._shape(fields, tensor))
        spans.sort()
        for (_, first_end, first), (start, _, second) in itertools.pairwise(spans):
            if start < first_end:
                raise _bad(
                    self.path,
                    f"the data of {second!r} overlaps that of {first!r}: the header lies "
                    "about the tensors' sizes",
                    key=second,
                )

    def _prefix(self) -> str:
        names = [t.name for t in self._reader.tensors]
        if self.architecture in _PREFIXED_ARCHITECTURES and not any(
            n.startswith(_UNET_PREFIX) for n in names
        ):
            return _UNET_PREFIX
        return ""

    def _shape(self, fields: Mapping[str, Any], tensor: Any) -> tuple[int, ...]:
        recorded = fields.get(_ORIG_SHAPE + tensor.name)
        if recorded is not None:
            shape = tuple(int(recorded.parts[i][0]) for i in recorded.data)
        else:
            shape = tuple(int(d) for d in reversed(tensor.shape.tolist()))
        count = 1
        for dim in shape:
            count *= dim
        if count != int(tensor.n_elements):
            raise _bad(
                self.path,
                f"shape {list(shape)} for {int(tensor.n_elements)} values",
                key=tensor.name,
            )
        return shape

    def quant_type(self, key: str) -> str:
        """The GGML type ``key`` is stored in (``Q8_0``, ``F16``...)."""
        self.info(key)
        return self._types[key]

    def get(self, key: str) -> torch.Tensor:
        """The tensor ``key``: its own type for ``F32``/``F16``/``BF16``, else dequantised
        to float32."""
        import numpy as np
        import torch

        meta = self.info(key)
        tensor = self._tensors[key]
        kind = self._types[key]
        if kind == "BF16":
            raw = np.array(tensor.data, copy=True).view(np.int16)
            return torch.from_numpy(raw).view(torch.bfloat16).reshape(meta.shape)
        if kind in _KEPT:
            return torch.from_numpy(np.array(tensor.data, copy=True)).reshape(meta.shape)
        from mergelang.io.gguf_quants import K_TYPES, dequantise_k

        if kind in K_TYPES:
            packed = torch.from_numpy(np.array(tensor.data, copy=True))
            return dequantise_k(packed, kind).reshape(meta.shape)
        from gguf.quants import dequantize

        values = dequantize(tensor.data, tensor.tensor_type)
        return torch.from_numpy(np.ascontiguousarray(values)).reshape(meta.shape)


def _string_field(fields: Mapping[str, Any], name: str) -> str | None:
    found = fields.get(name)
    if found is None or not found.types or found.types[0].name != "STRING":
        return None
    return bytes(found.parts[-1]).decode("utf-8", errors="replace")


# -- writing


def stored_type(entry: OutputEntry, quant: str) -> str:
    """The GGML type a float32 key of the layout is stored as under ``quant`` (see the
    module docstring)."""
    if len(entry.shape) < 2 or entry.numel <= SMALL_TENSOR:
        return "F32"
    gguf = require_gguf()
    block, _ = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[quant]]
    return quant if entry.shape[-1] % block == 0 else "F16"


_ARCHITECTURE_OF_MODELSPEC = (
    ("stable-diffusion-xl", "sdxl"),
    ("stable-diffusion-v2", "sd2"),
    ("stable-diffusion-v1", "sd1"),
    ("flux", "flux"),
    ("stable-diffusion-3", "sd3"),
)


def _architecture(target: SinkTarget) -> str:
    """``general.architecture`` of an output, in ComfyUI-GGUF's names, from its model-spec
    id."""
    spec = target.metadata.get("modelspec.architecture", "")
    for start, name in _ARCHITECTURE_OF_MODELSPEC:
        if spec.startswith(start):
            return name
    return spec.split("/")[0] or "unknown"


def open_sink(target: SinkTarget, quant: str | None = None) -> GGUFSink:
    """The sink of a GGUF output, streamed to disk (:mod:`mergelang.io.gguf_writer`);
    ``quant`` is the GGML type of its large float tensors (``None``: every tensor keeps its
    type)."""
    from mergelang.io.gguf_writer import GGUFSink

    require_gguf()
    return GGUFSink(target, quant, _architecture(target))


def file_size(target: SinkTarget, quant: str | None = None) -> int | None:
    """The exact size in bytes of the GGUF file :func:`open_sink` writes for ``target``."""
    from mergelang.errors import OutputError
    from mergelang.io.gguf_writer import file_size as layout_size

    try:
        return layout_size(target, quant, _architecture(target))
    except OutputError:
        return None  # a key GGUF cannot hold: the sink refuses the output when opened


def read_metadata(path: Path) -> Mapping[str, str]:
    """The string fields an existing GGUF file records (those mergelang wrote among them)."""
    gguf = require_gguf()
    return _string_fields(gguf.GGUFReader(str(path)).fields)


def _string_fields(fields: Mapping[str, Any]) -> dict[str, str]:
    """The file's string fields but the format's own ``general.*`` ones (the architecture,
    the name...): what a safetensors file keeps in its ``__metadata__``."""
    found: dict[str, str] = {}
    for name in fields:
        if name.startswith("general."):
            continue
        value = _string_field(fields, name)
        if value is not None:
            found[name] = value
    return found
