"""Where the executor's results go: a safetensors file, a ``.ckpt`` file, or memory.

A ``.ckpt`` output keeps the same metadata a safetensors output has in its header, beside
its state dict (see :data:`mergelang.io.ckpt.METADATA_KEY`).

Every sink takes pieces of keys with ``write_part(key, element_offset, tensor)`` in any order
and from several threads, then ``commit()`` or ``abort()``. A safetensors output streams to
disk through :class:`~mergelang.io.writer.SafetensorsWriter` (header first, temporary file,
rename). A pickle output and an in-memory result hold the whole model (a ``.ckpt`` cannot be
written piecewise); they fill preallocated tensors.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol

from mergelang.io.dtypes import torch_dtype

if TYPE_CHECKING:
    import torch

    from mergelang.io.writer import OutputEntry

__all__ = ["CkptSink", "MemorySink", "Sink"]


class Sink(Protocol):
    def write_part(self, key: str, element_offset: int, tensor: torch.Tensor) -> None: ...

    def abort(self) -> None: ...


class MemorySink:
    """Collects an output in preallocated CPU tensors; :meth:`commit` returns them."""

    def __init__(self, entries: Sequence[OutputEntry]) -> None:
        import torch

        self.tensors: dict[str, torch.Tensor] = {
            e.key: torch.empty(e.shape, dtype=torch_dtype(e.dtype)) for e in entries
        }
        self._flat = {key: t.view(-1) for key, t in self.tensors.items()}

    def write_part(self, key: str, element_offset: int, tensor: torch.Tensor) -> None:
        data = tensor.reshape(-1)
        self._flat[key][element_offset : element_offset + data.numel()].copy_(data)

    def commit(self) -> MappingProxyType[str, torch.Tensor]:
        return MappingProxyType(self.tensors)

    def abort(self) -> None:
        self.tensors.clear()
        self._flat.clear()


class CkptSink(MemorySink):
    """A ``.ckpt`` output: collected in memory, then saved atomically on :meth:`commit`."""

    def __init__(
        self,
        path: Path,
        entries: Sequence[OutputEntry],
        *,
        overwrite: bool,
        protected: Iterable[str | os.PathLike[str]],
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(entries)
        self.path = path
        self._overwrite = overwrite
        self._protected = list(protected)
        self._metadata = dict(metadata or {})

    def commit_file(self) -> Path:
        from mergelang.io.ckpt import save_ckpt

        written = save_ckpt(
            self.path,
            self.tensors,
            overwrite=self._overwrite,
            protected=self._protected,
            metadata=self._metadata,
        )
        self.abort()
        return written
