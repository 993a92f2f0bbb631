"""Where a run's results go: the :class:`Sink` protocol, and the in-memory sink.

Every sink takes pieces of keys with ``write_part(key, element_offset, tensor)``, in any
order and from several threads, then :meth:`Sink.commit` or :meth:`Sink.abort`. The commit
comes in two halves, so that a run can make every output complete on disk before any is
moved into place: :meth:`Sink.prepare` (the whole file written and ``fsync``-ed under its
temporary name) and :meth:`Sink.publish` (the rename, nothing more);
``commit`` is the two in a row. A file
format's module opens its sinks with ``open_sink(target)`` (see
:mod:`mergelang.io.file_formats`): a safetensors output streams to disk through
:class:`~mergelang.io.writer.SafetensorsWriter` (header first, temporary file, rename), a
``.ckpt`` output is :class:`~mergelang.io.ckpt.CkptSink`, held whole and saved at commit, a
``.gguf`` output :class:`~mergelang.io.gguf_writer.GGUFSink`, streamed like safetensors.
:class:`MemorySink` collects an in-memory result (``mergelang.evaluate``) in preallocated
tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol

from mergelang.io.dtypes import torch_dtype

if TYPE_CHECKING:
    import torch

    from mergelang.io.writer import OutputEntry

__all__ = ["MemorySink", "Sink", "SinkOpener", "SinkTarget"]


class Sink(Protocol):
    """One output being written."""

    def write_part(self, key: str, element_offset: int, tensor: torch.Tensor) -> None:
        """Write ``tensor``'s elements as elements ``element_offset..`` of flattened ``key``."""

    def commit(self) -> Path | None:
        """Finish the output: the file written (moved into place), or ``None`` in memory.
        Raises :class:`~mergelang.errors.OutputError` (``exists``) when the file's name was
        taken meanwhile and the output may not replace it."""

    def prepare(self) -> None:
        """Write whatever is still held in memory and flush the temporary file to disk:
        after this only :meth:`publish` (or :meth:`abort`) remains. Full disks and other
        write errors are raised here, never by ``publish``."""

    def check(self) -> None:
        """Check the target again, changing nothing (``exists`` when the name was taken
        meanwhile and may not be replaced)."""

    def publish(self, *, sync_folder: bool = True) -> Path | None:
        """Move the prepared file into place (``None`` in memory); ``sync_folder=False``
        leaves the folder's ``fsync`` to the caller."""

    def abort(self) -> None:
        """Drop the output (remove its temporary file); safe to call more than once."""


@dataclass(frozen=True)
class SinkTarget:
    """A file output to open: where, its keys, the metadata it records, whether it may
    replace an existing file, and the files it must never replace (the run's inputs)."""

    path: Path
    entries: tuple[OutputEntry, ...]
    metadata: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    overwrite: bool = False
    protected: tuple[Path, ...] = ()


SinkOpener = Callable[[SinkTarget], Sink]
"""A format module's ``open_sink``."""


class MemorySink:
    """Collects an output in preallocated CPU tensors; :attr:`result` holds them."""

    def __init__(self, entries: Sequence[OutputEntry]) -> None:
        import torch

        self.tensors: dict[str, torch.Tensor] = {
            e.key: torch.empty(e.shape, dtype=torch_dtype(e.dtype)) for e in entries
        }
        self._flat = {key: t.view(-1) for key, t in self.tensors.items()}

    def write_part(self, key: str, element_offset: int, tensor: torch.Tensor) -> None:
        data = tensor.reshape(-1)
        self._flat[key][element_offset : element_offset + data.numel()].copy_(data)

    @property
    def result(self) -> Mapping[str, torch.Tensor]:
        """The tensors, read-only as a mapping."""
        return MappingProxyType(self.tensors)

    def commit(self) -> Path | None:
        return None

    def prepare(self) -> None:
        pass

    def check(self) -> None:
        pass

    def publish(self, *, sync_folder: bool = True) -> Path | None:
        return None

    def abort(self) -> None:
        self.tensors.clear()
        self._flat.clear()
