"""The key-lookup half every checkpoint reader shares.

A reader (:class:`~mergelang.io.readers.CheckpointReader`) answers two kinds of question:
which keys it has, with their dtype and shape, known before any tensor is read; and the
tensor of one key, which is each format's own business. :class:`KeyIndex` is the first half,
over a mapping the reader fills when it opens (``_index``): key order, membership, the
``missing-key`` error naming the file, and the context-manager protocol.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Generic, Protocol, TypeVar

from mergelang.errors import CheckpointError

__all__ = ["KeyIndex"]


class _Shaped(Protocol):
    @property
    def shape(self) -> tuple[int, ...]: ...


InfoT = TypeVar("InfoT", bound=_Shaped, covariant=True)


_Reader = TypeVar("_Reader", bound="KeyIndex[_Shaped]")


class KeyIndex(Generic[InfoT]):
    """Keys, ``info`` and ``shapes`` over ``_index`` (key -> what the reader knows of it, in
    the file's order); ``close`` does nothing unless the reader holds a resource."""

    path: Path
    _index: Mapping[str, InfoT]

    def keys(self) -> list[str]:
        return list(self._index)

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def info(self, key: str) -> InfoT:
        try:
            return self._index[key]
        except KeyError:
            raise CheckpointError(
                str(self.path), "the checkpoint has no such key", code="missing-key", key=key
            ) from None

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {key: info.shape for key, info in self._index.items()}

    def close(self) -> None:
        return None

    def __enter__(self: _Reader) -> _Reader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, {len(self)} keys)"
