"""ComfyUI's scaled fp8 files, read and written.

A scaled fp8 file is a safetensors file with a marker key ``scaled_fp8`` (under the model's
prefix, ``model.diffusion_model.scaled_fp8`` in a whole checkpoint; an empty tensor whose
dtype is the fp8 type used, ``float32`` in old files meaning ``float8_e4m3fn``). Each fp8
weight ``X.weight`` is stored divided by a scale, kept beside it as ``X.scale_weight``
(float32, one value, or one per output channel); ``X.scale_input`` is the activation scale
ComfyUI uses for fp8 matrix products, which merging does not need. The true weight is
``X.weight.float() * X.scale_weight``. Tensors that are not fp8 (biases, norms, layers kept
wide) are stored as they are.

Reading (:func:`model_metas`, :class:`ScaledFp8Reader`): the marker and the scale keys are
not model keys, so they are hidden from detection, alignment and the merge; every scaled
weight is presented as a float32 key and dequantised when the executor reads it. An fp8
``*.weight`` without its ``scale_weight`` is an error (``missing-scale``) when the input is
resolved, before anything is written.

Writing (``save ... as fp8_scaled``, :func:`open_sink`): the keys an fp8 save stores in fp8
(:mod:`mergelang.io.fp8`) are laid out as float32 and reach the sink exact; the sink holds a
key until its last piece arrives, then stores it as ``float8_e4m3fn`` divided by its scale,
``max|x| / 448`` (1 for an all-zero tensor), with the scale as ``X.scale_weight`` and the
marker added. Values are rounded by torch's cast; none can lie beyond the range.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from mergelang.errors import CheckpointError
from mergelang.io.bitsandbytes import refuse_bitsandbytes
from mergelang.io.fp8 import FP8_MAX
from mergelang.io.key_index import KeyIndex
from mergelang.io.memory_reader import KeyMeta

if TYPE_CHECKING:
    import torch

    from mergelang.io.readers import CheckpointReader, TensorMeta
    from mergelang.io.sinks import SinkTarget
    from mergelang.io.writer import OutputEntry, SafetensorsWriter

__all__ = [
    "MARKER",
    "SCALE_INPUT",
    "SCALE_WEIGHT",
    "ScaledFp8Reader",
    "ScaledFp8Sink",
    "dequantise",
    "file_size",
    "is_scaled",
    "model_metas",
    "open_sink",
    "quantise",
    "read_metadata",
    "scaled_view",
    "stored_entries",
]

MARKER = "scaled_fp8"
SCALE_WEIGHT = "scale_weight"
SCALE_INPUT = "scale_input"
_WEIGHT = "weight"
_FP8 = frozenset({"F8_E4M3", "F8_E5M2"})
_MODEL_PREFIX = "model.diffusion_model."


def _is_marker(key: str) -> bool:
    return key == MARKER or key.endswith("." + MARKER)


def _is_scale(key: str) -> bool:
    return key.endswith(("." + SCALE_WEIGHT, "." + SCALE_INPUT))


def scale_key(key: str) -> str | None:
    """``X.weight`` -> ``X.scale_weight``; ``None`` for a key not named ``*.weight``."""
    if not key.endswith("." + _WEIGHT):
        return None
    return key[: -len(_WEIGHT)] + SCALE_WEIGHT


def is_scaled(keys: Mapping[str, object]) -> bool:
    """Whether a file with these keys is a scaled fp8 file (it has the marker key)."""
    return any(_is_marker(key) for key in keys)


def model_metas(header: Mapping[str, TensorMeta], path: Path) -> dict[str, KeyMeta]:
    """The model keys of a file and each one's dtype and shape as mergelang reads it: for a
    scaled fp8 file, without the marker and the scales, each scaled weight as float32. A
    bitsandbytes 4-bit file is refused (:mod:`mergelang.io.bitsandbytes`)."""
    refuse_bitsandbytes(header, path)
    if not is_scaled(header):
        return {key: KeyMeta(meta.dtype, tuple(meta.shape)) for key, meta in header.items()}
    found: dict[str, KeyMeta] = {}
    for key, meta in header.items():
        if _is_marker(key) or _is_scale(key):
            continue
        shape = tuple(meta.shape)
        scale = scale_key(key)
        if meta.dtype in _FP8 and scale is not None:
            if scale not in header:
                raise CheckpointError(
                    str(path),
                    f"a scaled fp8 file, but the fp8 weight has no {scale!r}",
                    code="missing-scale",
                    key=key,
                    hint="the file is damaged, or its scales were stripped: re-export it",
                )
            _check_scale(path, key, shape, tuple(header[scale].shape))
            found[key] = KeyMeta("F32", shape)
        else:
            found[key] = KeyMeta(meta.dtype, shape)
    return found


def _check_scale(path: Path, key: str, shape: tuple[int, ...], scale: tuple[int, ...]) -> None:
    count = 1
    for dim in scale:
        count *= dim
    if count == 1 or (shape and count == shape[0]):
        return
    raise CheckpointError(
        str(path),
        f"scale of shape {list(scale)} for a weight of shape {list(shape)}: neither one value "
        "nor one per output channel",
        code="bad-scale",
        key=key,
    )


def dequantise(weight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``weight * scale`` in float32; ``scale`` is one value or one per output channel."""
    import torch

    values = weight.to(torch.float32)
    factor = scale.to(torch.float32)
    if factor.numel() == 1:
        return values * factor.reshape(())
    return values * factor.reshape(-1, *([1] * (values.dim() - 1)))


def quantise(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``values`` as ``float8_e4m3fn`` and its float32 scale (``max|x| / 448``)."""
    import torch

    source = values.to(torch.float32)
    amax = float(source.abs().max()) if source.numel() else 0.0
    scale = amax / FP8_MAX["F8_E4M3"] if amax > 0 else 1.0
    factor = torch.tensor(scale, dtype=torch.float32)
    scaled = (source / factor).clamp(-FP8_MAX["F8_E4M3"], FP8_MAX["F8_E4M3"])
    return scaled.to(torch.float8_e4m3fn), factor


class ScaledFp8Reader(KeyIndex[KeyMeta]):
    """A scaled fp8 file read as its model keys (see the module docstring)."""

    def __init__(self, inner: CheckpointReader) -> None:
        self.inner = inner
        self.path = inner.path
        self.metadata = inner.metadata
        header = {key: inner.info(key) for key in inner.keys()}  # noqa: SIM118
        self._index = MappingProxyType(model_metas(header, inner.path))
        self._scaled = {
            key: scale_key(key)
            for key, meta in self._index.items()
            if meta.dtype == "F32" and header[key].dtype in _FP8
        }

    def get(self, key: str) -> torch.Tensor:
        """The tensor ``key``, a scaled weight dequantised to float32."""
        self.info(key)
        scale = self._scaled.get(key)
        if scale is None:
            return self.inner.get(key)
        return dequantise(self.inner.get(key), self.inner.get(scale))

    def close(self) -> None:
        self.inner.close()


def scaled_view(reader: CheckpointReader) -> CheckpointReader:
    """``reader`` itself, or for a scaled fp8 file the :class:`ScaledFp8Reader` over it."""
    if is_scaled(dict.fromkeys(reader.keys())):
        return ScaledFp8Reader(reader)
    return reader


# -- writing


def _marker_key(keys: list[str]) -> str:
    if keys and all(key.startswith(_MODEL_PREFIX) for key in keys):
        return _MODEL_PREFIX + MARKER
    return MARKER


def _is_scaled_entry(entry: OutputEntry) -> bool:
    """Whether a key of the layout is stored as scaled fp8 (a float32 key of two or more
    dimensions: those an fp8 save stores in fp8)."""
    return entry.dtype == "F32" and len(entry.shape) >= 2


def stored_entries(target: SinkTarget) -> tuple[OutputEntry, ...]:
    """The keys of the file written for ``target``: each scaled key as ``F8_E4M3`` followed by
    its ``scale_weight``, the others as they are, then the marker."""
    from mergelang.io.writer import OutputEntry

    entries: list[OutputEntry] = []
    for entry in target.entries:
        if _is_scaled_entry(entry):
            entries.append(OutputEntry(entry.key, "F8_E4M3", entry.shape))
            entries.append(OutputEntry(_scale_name(entry.key), "F32", ()))
        else:
            entries.append(entry)
    marker = _marker_key([e.key for e in target.entries])
    entries.append(OutputEntry(marker, "F8_E4M3", (0,)))
    return tuple(entries)


def file_size(target: SinkTarget) -> int:
    """The exact size in bytes of the file :func:`open_sink` writes for ``target``."""
    from mergelang.io.writer import build_header

    entries = stored_entries(target)
    header, _ = build_header(entries, target.metadata, path=str(target.path))
    return 8 + len(header) + sum(e.nbytes for e in entries)


class ScaledFp8Sink:
    """A safetensors output whose float32 matrices are stored as scaled fp8 (see the module
    docstring); other keys pass straight to the file."""

    def __init__(self, target: SinkTarget) -> None:
        from dataclasses import replace

        from mergelang.io.writer import open_sink as open_safetensors

        self._scaled = {e.key: e for e in target.entries if _is_scaled_entry(e)}
        self.marker = _marker_key([e.key for e in target.entries])
        stored = replace(target, entries=stored_entries(target))
        self.writer: SafetensorsWriter = open_safetensors(stored)
        self._pending: dict[str, tuple[torch.Tensor, list[int]]] = {}
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        return self.writer.path

    def write_part(self, key: str, element_offset: int, tensor: torch.Tensor) -> None:
        entry = self._scaled.get(key)
        if entry is None:
            self.writer.write_part(key, element_offset, tensor)
            return
        import torch

        data = tensor.reshape(-1)
        numel = entry.numel
        with self._lock:
            pending = self._pending.get(key)
            if pending is None:
                pending = (torch.empty(numel, dtype=torch.float32), [0])
                self._pending[key] = pending
        buffer, filled = pending
        buffer[element_offset : element_offset + data.numel()].copy_(data)
        with self._lock:
            filled[0] += data.numel()
            done = filled[0] >= numel
            if done:
                del self._pending[key]
        if done:
            quantised, scale = quantise(buffer)
            self.writer.write_part(key, 0, quantised)
            self.writer.write_part(_scale_name(key), 0, scale.reshape(-1))

    def commit(self) -> Path:
        self.prepare()
        return self.publish()

    def prepare(self) -> None:
        import torch

        self.writer.write_part(self.marker, 0, torch.empty(0, dtype=torch.float8_e4m3fn))
        self.writer.prepare()

    def check(self) -> None:
        self.writer.check()

    def publish(self, *, sync_folder: bool = True) -> Path:
        return self.writer.publish(sync_folder=sync_folder)

    def abort(self) -> None:
        self._pending.clear()
        self.writer.abort()

    def release(self) -> None:
        """Close the file's descriptor until it is next needed (see
        :meth:`~mergelang.io.writer.SafetensorsWriter.release`)."""
        self.writer.release()


def _scale_name(key: str) -> str:
    found = scale_key(key)
    return found if found is not None else key + "." + SCALE_WEIGHT


def open_sink(target: SinkTarget) -> ScaledFp8Sink:
    """The sink of a safetensors output saved ``as fp8_scaled``."""
    return ScaledFp8Sink(target)


def read_metadata(path: Path) -> Mapping[str, str]:
    """What an existing file records: the same as any safetensors file."""
    from mergelang.io.writer import read_metadata as safetensors_metadata

    return safetensors_metadata(path)
