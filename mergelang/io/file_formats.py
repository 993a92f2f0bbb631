"""The checkpoint file formats mergelang reads and writes: one line of :data:`FILE_FORMATS`
each.

A :class:`FileFormat` says what a format is called in recipes (``save ... with
format=NAME``, the Merge Board flags), which file suffixes mean it (for a save path, and for
an input whose content does not tell), whether its outputs stream to disk key by key or are
held whole until they are committed, and which module opens its outputs: that module's
``open_sink(target)`` returns a :class:`~mergelang.io.sinks.Sink`. The module is imported only
when a run writes such a file, so this table, which the checker and the parser read, never
imports torch. A new output format is its sink module and one line here.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal, TypeAlias, cast

if TYPE_CHECKING:
    from mergelang.io.sinks import Sink, SinkOpener, SinkTarget

__all__ = [
    "DEFAULT_FORMAT",
    "FILE_FORMATS",
    "CheckpointFormat",
    "FileFormat",
    "format_for_path",
    "implied_format",
    "input_suffixes",
]

CheckpointFormat: TypeAlias = Literal["safetensors", "pickle"]
"""How an input file's content is read: a safetensors header, or a ``torch.save`` pickle."""


@dataclass(frozen=True)
class FileFormat:
    """One file format (see the module docstring).

    ``suffixes``: save paths ending in one of these (any letter case) are written in this
    format; the first is the one added to an output name that has none. ``read_suffixes``:
    inputs with these are read in this format when their first bytes do not tell.
    ``content``: what the readers call such a file's content. ``streams``: written key by
    key as the keys are computed (the output never sits in memory), else held whole until
    committed. ``sink_module``: the module whose ``open_sink(target)`` opens an output.
    """

    name: str
    suffixes: tuple[str, ...]
    read_suffixes: tuple[str, ...]
    content: CheckpointFormat
    streams: bool
    sink_module: str

    @property
    def suffix(self) -> str:
        """The suffix an output name without one gets."""
        return self.suffixes[0]

    def open_sink(self, target: SinkTarget) -> Sink:
        """Open an output of this format (imports the sink module, which may import torch)."""
        opener = cast("SinkOpener", importlib.import_module(self.sink_module).open_sink)
        return opener(target)


FILE_FORMATS: Mapping[str, FileFormat] = MappingProxyType(
    {
        "safetensors": FileFormat(
            "safetensors",
            (".safetensors",),
            (".safetensors",),
            "safetensors",
            streams=True,
            sink_module="mergelang.io.writer",
        ),
        "ckpt": FileFormat(
            "ckpt",
            (".ckpt", ".pt", ".pth"),
            (".ckpt", ".pt", ".pth", ".bin"),
            "pickle",
            streams=False,
            sink_module="mergelang.io.ckpt",
        ),
    }
)
"""Every format by name, in the order recipes and messages list them."""

DEFAULT_FORMAT = "safetensors"
"""The format of a save path whose suffix names none."""


def format_for_path(path: str) -> FileFormat | None:
    """The format a save path's suffix names (``.ckpt``, ``.PT``...), or ``None``."""
    lowered = path.lower()
    for file_format in FILE_FORMATS.values():
        if lowered.endswith(file_format.suffixes):
            return file_format
    return None


def implied_format(path: str) -> str:
    """The name of the format a save path is written in when no ``format=`` is given."""
    found = format_for_path(path)
    return DEFAULT_FORMAT if found is None else found.name


def input_suffixes() -> tuple[str, ...]:
    """Every suffix of a file mergelang reads, format by format (``.safetensors`` first)."""
    return tuple(suffix for f in FILE_FORMATS.values() for suffix in f.read_suffixes)
