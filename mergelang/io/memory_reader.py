"""Tensors handed over in memory, read like a checkpoint file.

:class:`MemoryReader` serves tensors given from Python (``mergelang.evaluate(...,
inputs={"a": state_dict})``) through the :class:`~mergelang.io.readers.CheckpointReader`
interface. Importing this module does not import torch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING

from mergelang.errors import CheckpointError
from mergelang.io.dtypes import code_for_torch, item_size

if TYPE_CHECKING:
    import torch

__all__ = ["KeyMeta", "MemoryReader"]


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
