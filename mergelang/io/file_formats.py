"""The checkpoint file formats mergelang reads and writes: one line of :data:`FILE_FORMATS`
each.

A :class:`FileFormat` says what a format is called in recipes (``save ... with
format=NAME``, the Merge Board flags), which file suffixes mean it (for a save path, and for
an input whose content does not tell), whether its outputs stream to disk key by key or are
held whole until they are committed, and which module handles its files: that module's
``open_sink(target)`` returns a :class:`~mergelang.io.sinks.Sink` for an output, its
``read_metadata(path)`` reads back what an existing file records (how a re-run finds an output
up to date), and an optional ``file_size(target)`` gives the exact size of an output's file.
The module is imported only when such a file is written, read back or sized by a plan, so
this table, which the checker and the parser read, never imports torch. A new output format is its
module and one line here.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType, ModuleType
from typing import TYPE_CHECKING, Literal, TypeAlias, cast

if TYPE_CHECKING:
    from mergelang.io.sinks import Sink, SinkOpener, SinkTarget

__all__ = [
    "DEFAULT_FORMAT",
    "FILE_FORMATS",
    "SCALED_FP8_SAFETENSORS",
    "CheckpointFormat",
    "FileFormat",
    "format_for_path",
    "format_of_content",
    "implied_format",
    "input_suffixes",
]

CheckpointFormat: TypeAlias = Literal["safetensors", "pickle", "gguf"]
"""How an input file's content is read: a safetensors header, a ``torch.save`` pickle, or a
GGUF header."""


@dataclass(frozen=True)
class FileFormat:
    """One file format (see the module docstring).

    ``suffixes``: save paths ending in one of these (any letter case) are written in this
    format; the first is the one added to an output name that has none. ``read_suffixes``:
    inputs with these are read in this format when their first bytes do not tell.
    ``content``: what the readers call such a file's content. ``streams``: written key by
    key as the keys are computed (the output never sits in memory), else held whole until
    committed. ``module``: the module with ``open_sink(target)`` and ``read_metadata(path)``.
    ``quant``: for GGUF, the GGML type of the output's large tensors, passed to
    ``open_sink(target, quant=...)``.
    """

    name: str
    suffixes: tuple[str, ...]
    read_suffixes: tuple[str, ...]
    content: CheckpointFormat
    streams: bool
    module: str
    quant: str | None = None

    @property
    def suffix(self) -> str:
        """The suffix an output name without one gets."""
        return self.suffixes[0]

    def _module(self) -> ModuleType:
        return importlib.import_module(self.module)

    def open_sink(self, target: SinkTarget) -> Sink:
        """Open an output of this format (imports the format's module, which may import
        torch)."""
        if self.quant is not None:
            return cast("Sink", self._module().open_sink(target, quant=self.quant))
        opener = cast("SinkOpener", self._module().open_sink)
        return opener(target)

    def file_size(self, target: SinkTarget) -> int | None:
        """The exact size of the file :meth:`open_sink` writes for ``target``, for the formats
        whose module says (``file_size(target)``: GGUF, scaled fp8), else ``None``."""
        sizer = getattr(self._module(), "file_size", None)
        if sizer is None:
            return None
        if self.quant is not None:
            return cast("int", sizer(target, quant=self.quant))
        return cast("int", sizer(target))

    def read_metadata(self, path: Path) -> Mapping[str, str]:
        """The string pairs an existing file of this format records (its provenance and
        output address, for a file mergelang wrote); reads no tensor."""
        found = self._module().read_metadata(path)
        return cast("Mapping[str, str]", found)


FILE_FORMATS: Mapping[str, FileFormat] = MappingProxyType(
    {
        "safetensors": FileFormat(
            "safetensors",
            (".safetensors",),
            (".safetensors",),
            "safetensors",
            streams=True,
            module="mergelang.io.writer",
        ),
        "ckpt": FileFormat(
            "ckpt",
            (".ckpt", ".pt", ".pth"),
            (".ckpt", ".pt", ".pth", ".bin"),
            "pickle",
            streams=False,
            module="mergelang.io.ckpt",
        ),
        "gguf": FileFormat(
            "gguf",
            (".gguf",),
            (".gguf",),
            "gguf",
            streams=True,
            module="mergelang.io.gguf_format",
        ),
    }
)
"""Every format by name, in the order recipes and messages list them."""

SCALED_FP8_SAFETENSORS = dataclasses.replace(
    FILE_FORMATS["safetensors"], module="mergelang.io.scaled_fp8"
)
"""Safetensors written ``as fp8_scaled``: the same format, through the sink of
:mod:`mergelang.io.scaled_fp8` (scales computed per tensor, the ``scaled_fp8`` marker)."""

DEFAULT_FORMAT = "safetensors"
"""The format of a save path whose suffix names none."""


def format_for_path(path: str) -> FileFormat | None:
    """The format a save path's suffix names (``.ckpt``, ``.PT``...), or ``None``."""
    lowered = path.lower()
    for file_format in FILE_FORMATS.values():
        if lowered.endswith(file_format.suffixes):
            return file_format
    return None


def format_of_content(content: CheckpointFormat) -> FileFormat:
    """The format whose files hold ``content`` (what :func:`~mergelang.io.formats.sniff_format`
    found in a file)."""
    for file_format in FILE_FORMATS.values():
        if file_format.content == content:
            return file_format
    raise KeyError(content)


def implied_format(path: str) -> str:
    """The name of the format a save path is written in when no ``format=`` is given."""
    found = format_for_path(path)
    return DEFAULT_FORMAT if found is None else found.name


def input_suffixes() -> tuple[str, ...]:
    """Every suffix of a file mergelang reads, format by format (``.safetensors`` first)."""
    return tuple(suffix for f in FILE_FORMATS.values() for suffix in f.read_suffixes)
