"""The inputs of a run: checkpoint files, or tensors handed over in memory.

An :class:`InputHandle` knows an input's keys, dtypes and shapes (from the safetensors
header, without reading a tensor) and opens a reader when the executor needs the data. A
pickle (``.ckpt``) file has no header: it is loaded, with torch's weights-only loader, when
the plan is made, and the loaded tensors serve the run. :class:`MemoryReader` serves tensors
given from Python (``mergelang.evaluate(..., inputs={"a": state_dict})``) through the same
reader interface.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING

from mergelang.errors import CheckpointError, Span
from mergelang.io.dtypes import code_for_torch, item_size
from mergelang.lang.ast import NO_SPAN

if TYPE_CHECKING:
    import torch

    from mergelang.io.hashing import FileHashes
    from mergelang.io.readers import CheckpointReader

__all__ = ["InputHandle", "KeyMeta", "MemoryReader"]


@dataclass(frozen=True, slots=True)
class KeyMeta:
    """A key's dtype code (``F16``...) and shape."""

    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * item_size(self.dtype)


class MemoryReader:
    """A :class:`~mergelang.io.readers.CheckpointReader` over a ``key -> tensor`` mapping."""

    def __init__(self, tensors: Mapping[str, torch.Tensor], name: str) -> None:
        self.path = Path(f"<memory:{name}>")
        self.metadata: Mapping[str, str] = MappingProxyType({})
        self._tensors = dict(tensors)
        self._meta: dict[str, KeyMeta] = {}
        for key, tensor in self._tensors.items():
            code = code_for_torch(tensor.dtype)
            if code is None:
                raise CheckpointError(
                    str(self.path),
                    f"tensors of type {tensor.dtype} are not supported",
                    code="unsupported-dtype",
                    key=key,
                )
            self._meta[key] = KeyMeta(code, tuple(tensor.shape))

    def keys(self) -> list[str]:
        return list(self._tensors)

    def __contains__(self, key: object) -> bool:
        return key in self._tensors

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    def info(self, key: str) -> KeyMeta:
        try:
            return self._meta[key]
        except KeyError:
            raise CheckpointError(
                str(self.path), "the checkpoint has no such key", code="missing-key", key=key
            ) from None

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {key: meta.shape for key, meta in self._meta.items()}

    def get(self, key: str) -> torch.Tensor:
        self.info(key)
        tensor = self._tensors[key]
        return tensor.detach() if tensor.requires_grad else tensor

    def close(self) -> None:
        return None

    def __enter__(self) -> MemoryReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class InputHandle:
    """One input of a run, shared by every recipe name that refers to the same file.

    ``label`` names it in messages (the path as found, or ``<memory:NAME>``); ``header`` maps
    each key to its :class:`KeyMeta`; ``architecture`` and ``variant`` are what detection
    found. The reader is opened on first use and closed by :meth:`close`.
    """

    def __init__(
        self,
        *,
        name: str,
        path: Path | None,
        format: str,
        header: Mapping[str, KeyMeta],
        metadata: Mapping[str, str],
        span: Span = NO_SPAN,
        reader: CheckpointReader | None = None,
    ) -> None:
        self.name = name
        self.path = path
        self.format = format
        self.header = dict(header)
        self.metadata = dict(metadata)
        self.span = span
        self.architecture: str | None = None
        self.variant: str = "normal"
        self.hashes: FileHashes | None = None
        self._reader = reader
        self._lock = threading.Lock()

    @property
    def label(self) -> str:
        return str(self.path) if self.path is not None else f"<memory:{self.name}>"

    @property
    def identity(self) -> str:
        """What makes two handles the same input: the real path, or the memory name."""
        return str(self.path) if self.path is not None else f"<memory:{self.name}>"

    @property
    def nbytes(self) -> int:
        return sum(meta.nbytes for meta in self.header.values())

    def reader(self) -> CheckpointReader:
        """The open reader (opened on first call; safe from several threads)."""
        with self._lock:
            if self._reader is None:
                from mergelang.io.readers import open_checkpoint

                if self.path is None:
                    raise ValueError(f"{self.label}: no reader was given")
                self._reader = open_checkpoint(self.path)
            return self._reader

    def close(self) -> None:
        with self._lock:
            if self._reader is not None and self.path is not None:
                self._reader.close()
                self._reader = None

    def __repr__(self) -> str:
        return f"InputHandle({self.label!r}, {len(self.header)} keys)"
