"""What an output keeps and how it is stored: dtype, EMA, schedule, baked-in VAE, position_ids.

:func:`output_layout` turns a model's header and the :class:`SaveOptions` into the list of
output keys (name, dtype, shape, where the data comes from) before any tensor is read; the
streaming writer needs exactly that to lay out its header. :func:`save_checkpoint` streams one
model through the options (prune, convert, bake a VAE, fix ``position_ids``); the executor
uses the same building blocks for merged outputs.

Rules:

- ``dtype``: floating-point keys are cast to it; integer and boolean keys keep their type;
  ``None`` keeps every key's own type. Under ``fp8`` and ``fp8_e5m2`` only tensors of two or
  more dimensions are cast, with saturation (:mod:`mergelang.io.fp8`). Under ``fp8_scaled``
  those keys are laid out as float32: the scaled fp8 sink quantises them
  (:mod:`mergelang.io.scaled_fp8`).
- ``ema="drop"`` leaves out keys whose role is ``ema`` (``model_ema.*``);
  ``schedule="drop"`` leaves out the DDPM buffers (``betas``, ``alphas_cumprod``...).
- ``vae=PATH`` replaces every key of role ``vae`` with the tensor of the same name in the VAE
  file, whose keys may carry the ``first_stage_model.`` prefix or not. A missing key or a
  different shape is an error naming the VAE file and the key. A replaced key keeps the
  model's dtype (then the save dtype applies); a model without VAE keys gets the VAE file's
  ``encoder``/``decoder``/``quant_conv``/``post_quant_conv`` keys added under the prefix.
- ``position_ids="reset"`` writes int64 ``0..n-1`` (``arange(77)[None]`` for CLIP) for every
  key ending in ``embeddings.position_ids``, whatever its stored type: this also repairs the
  float ``position_ids`` some merges leave behind.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from mergelang.errors import CheckpointError
from mergelang.io.dtypes import is_float_code, output_code, torch_dtype
from mergelang.io.fp8 import is_fp8_code, keeps_precision, saturating_cast
from mergelang.io.save_choices import SCALED_FP8, SaveOptions
from mergelang.io.writer import OutputEntry

if TYPE_CHECKING:
    import torch

    from mergelang.io.readers import CheckpointReader, TensorMeta

__all__ = [
    "OutputKey",
    "SaveOptions",
    "generated_tensor",
    "output_layout",
    "output_tensor",
    "reset_position_ids",
    "save_checkpoint",
    "with_markers",
]

Source = Literal["model", "vae", "position_ids", "marker"]
VAE_PREFIX = "first_stage_model."
VAE_PARTS = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")
POSITION_IDS_SUFFIX = "embeddings.position_ids"


class KeyRoles(Protocol):
    """The part of an architecture the save options need: the role of each key."""

    def role(self, key: str) -> str: ...


@dataclass(frozen=True)
class OutputKey:
    """One key of the output: its dtype and shape, and where its data comes from.

    ``source_key`` is the key to read from the source when it differs from ``key`` (a VAE
    file's key without the ``first_stage_model.`` prefix).
    """

    key: str
    dtype: str
    shape: tuple[int, ...]
    source: Source
    source_key: str | None = None

    @property
    def read_key(self) -> str:
        return self.key if self.source_key is None else self.source_key

    def entry(self) -> OutputEntry:
        """The key as the writer sees it (made once: a sweep asks for it per output and key)."""
        return self._entry

    @functools.cached_property
    def _entry(self) -> OutputEntry:
        return OutputEntry(self.key, self.dtype, self.shape)


def _vae_index(vae_header: Mapping[str, TensorMeta]) -> dict[str, str]:
    """VAE-local name (``encoder.conv_in.weight``) -> key in the VAE file."""
    index: dict[str, str] = {}
    for key in vae_header:
        if key.startswith(VAE_PREFIX):
            index[key[len(VAE_PREFIX) :]] = key
    for key in vae_header:
        if not key.startswith(VAE_PREFIX):
            index.setdefault(key, key)
    return index


def _layout_code(code: str, options: SaveOptions, shape: tuple[int, ...]) -> str:
    """The dtype a key is laid out with: :func:`output_code`, but float32 for the keys a
    scaled fp8 save quantises (its sink takes them exact)."""
    if options.dtype == SCALED_FP8 and is_float_code(code) and not keeps_precision(shape):
        return "F32"
    return output_code(code, options.dtype_code, shape)


def output_layout(
    header: Mapping[str, TensorMeta],
    arch: KeyRoles,
    options: SaveOptions,
    vae_header: Mapping[str, TensorMeta] | None,
) -> list[OutputKey]:
    """The output's keys in the model's order (added VAE keys last)."""
    vae_name = str(options.vae)
    if options.vae is not None and vae_header is None:
        raise ValueError("output_layout: a VAE file is set but its header was not given")
    vae_meta = vae_header if options.vae is not None else None
    index = _vae_index(vae_meta) if vae_meta is not None else {}
    layout: list[OutputKey] = []
    has_vae = False
    for key, info in header.items():
        role = arch.role(key)
        if role == "ema" and options.ema == "drop":
            continue
        if role == "schedule" and options.schedule == "drop":
            continue
        if key.endswith(POSITION_IDS_SUFFIX) and options.position_ids == "reset":
            layout.append(OutputKey(key, "I64", tuple(info.shape), "position_ids"))
            continue
        if role == "vae" and vae_meta is not None:
            has_vae = True
            local = key[len(VAE_PREFIX) :] if key.startswith(VAE_PREFIX) else key
            source = index.get(local)
            if source is None:
                raise CheckpointError(
                    vae_name,
                    f"the VAE file has no {local!r}, which the model's {key!r} needs",
                    code="vae-missing-key",
                    key=local,
                )
            shape = tuple(vae_meta[source].shape)
            if shape != tuple(info.shape):
                raise CheckpointError(
                    vae_name,
                    f"shape {list(shape)} in the VAE file, but {list(info.shape)} for "
                    f"{key!r} in the model",
                    code="vae-shape-mismatch",
                    key=source,
                )
            dtype = _layout_code(info.dtype, options, shape)
            layout.append(OutputKey(key, dtype, shape, "vae", source))
            continue
        dtype = _layout_code(info.dtype, options, tuple(info.shape))
        layout.append(OutputKey(key, dtype, tuple(info.shape), "model"))
    if vae_meta is not None and not has_vae:
        taken = {item.key for item in layout}
        for local, source in index.items():
            key = VAE_PREFIX + local
            if local.startswith(VAE_PARTS) and key not in taken:
                meta = vae_meta[source]
                dtype = _layout_code(meta.dtype, options, tuple(meta.shape))
                layout.append(OutputKey(key, dtype, tuple(meta.shape), "vae", source))
    return layout


def with_markers(
    layout: Sequence[OutputKey], markers: Collection[str], wanted: Sequence[str]
) -> list[OutputKey]:
    """``layout`` holding exactly the marker keys ``wanted`` among ``markers``: a wanted key an
    input has keeps its place and source; one no input has is added, empty, as a loader's
    marker is (``float32``, shape ``[0]``); the other markers are left out."""
    kept = [item for item in layout if item.key not in markers or item.key in wanted]
    present = {item.key for item in kept}
    kept += [OutputKey(key, "F32", (0,), "marker") for key in wanted if key not in present]
    return kept


def generated_tensor(item: OutputKey) -> torch.Tensor:
    """The data of an output key no input supplies: reset ``position_ids`` or an empty
    marker."""
    import torch

    if item.source == "position_ids":
        return reset_position_ids(item.shape)
    if item.source == "marker":
        return torch.zeros(item.shape, dtype=torch_dtype(item.dtype))
    raise ValueError(f"output key {item.key!r} is read from a {item.source}, not generated")


def reset_position_ids(shape: Sequence[int]) -> torch.Tensor:
    """int64 ``0..n-1`` along the last dimension, broadcast to ``shape``."""
    import torch

    size = tuple(int(d) for d in shape)
    if not size:
        return torch.zeros((), dtype=torch.int64)
    return torch.arange(size[-1], dtype=torch.int64).expand(size).contiguous()


def output_tensor(
    item: OutputKey, model: CheckpointReader, vae: CheckpointReader | None = None
) -> torch.Tensor:
    """The data of one output key, read from its source and converted to its dtype."""
    if item.source in ("position_ids", "marker"):
        return generated_tensor(item)
    if item.source == "vae":
        if vae is None:
            raise ValueError(f"output key {item.key!r} needs the VAE reader")
        tensor = vae.get(item.read_key)
    else:
        tensor = model.get(item.read_key)
    dtype = torch_dtype(item.dtype)
    if tensor.dtype == dtype:
        return tensor
    if is_fp8_code(item.dtype):
        return saturating_cast(tensor, item.dtype)[0]
    return tensor.to(dtype)


def save_checkpoint(
    reader: CheckpointReader,
    path: str | os.PathLike[str],
    options: SaveOptions,
    *,
    overwrite: bool = False,
    metadata: Mapping[str, str] | None = None,
    arch: KeyRoles | None = None,
) -> Path:
    """Stream one model through ``options`` into ``path``; returns the written path.

    ``metadata`` defaults to the input's own (a ``.ckpt`` output has none). ``arch`` defaults
    to the detected architecture of the input. The input and the VAE file are protected: the
    output may not replace either.
    """
    from mergelang.io.ckpt import save_ckpt
    from mergelang.io.readers import open_checkpoint
    from mergelang.io.sinks import SinkTarget
    from mergelang.io.writer import SafetensorsWriter

    if arch is None:
        from mergelang.arch import detect

        arch = detect(reader.shapes(), path=str(reader.path)).arch
    vae = open_checkpoint(options.vae) if options.vae is not None else None
    try:
        header = {key: reader.info(key) for key in reader.keys()}  # noqa: SIM118
        vae_header = None if vae is None else {k: vae.info(k) for k in vae.keys()}  # noqa: SIM118
        layout = output_layout(header, arch, options, vae_header)
        protected = [reader.path] + ([options.vae] if options.vae is not None else [])
        if not options.file_format.streams:
            tensors = {item.key: output_tensor(item, reader, vae) for item in layout}
            return save_ckpt(path, tensors, overwrite=overwrite, protected=protected)
        meta = dict(reader.metadata) if metadata is None else dict(metadata)
        entries = [item.entry() for item in layout]
        if options.dtype == SCALED_FP8 or options.format == "gguf":
            target = SinkTarget(Path(path), tuple(entries), meta, overwrite, tuple(protected))
            sink = options.file_format.open_sink(target)
            try:
                for item in layout:
                    sink.write_part(item.key, 0, output_tensor(item, reader, vae).reshape(-1))
                written = sink.commit()
            except BaseException:
                sink.abort()
                raise
            assert written is not None
            return written
        with SafetensorsWriter(
            path, entries, metadata=meta, overwrite=overwrite, protected=protected
        ) as writer:
            for item in layout:
                writer.write(item.key, output_tensor(item, reader, vae))
        return writer.path
    finally:
        if vae is not None:
            vae.close()
