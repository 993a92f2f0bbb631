"""Tensors handed over in memory, read like a checkpoint file.

:class:`MemoryReader` serves tensors given from Python (``mergelang.evaluate(...,
inputs={"a": state_dict})``) through the :class:`~mergelang.io.readers.CheckpointReader`
interface. Importing this module does not import torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from mergelang.errors import CheckpointError
from mergelang.io.dtypes import code_for_torch, item_size
from mergelang.io.key_index import KeyIndex

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


class MemoryReader(KeyIndex[KeyMeta]):
    """A :class:`~mergelang.io.readers.CheckpointReader` over a ``key -> tensor`` mapping."""

    def __init__(self, tensors: Mapping[str, torch.Tensor], name: str) -> None:
        self.path = Path(f"<memory:{name}>")
        self.metadata: Mapping[str, str] = MappingProxyType({})
        self._tensors = dict(tensors)
        self._index: dict[str, KeyMeta] = {}
        for key, tensor in self._tensors.items():
            code = code_for_torch(tensor.dtype)
            if code is None:
                raise CheckpointError(
                    str(self.path),
                    f"tensors of type {tensor.dtype} are not supported",
                    code="unsupported-dtype",
                    key=key,
                )
            self._index[key] = KeyMeta(code, tuple(tensor.shape))

    def get(self, key: str) -> torch.Tensor:
        self.info(key)
        tensor = self._tensors[key]
        return tensor.detach() if tensor.requires_grad else tensor
