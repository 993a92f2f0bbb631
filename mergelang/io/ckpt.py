"""Pickle checkpoints (``.ckpt``, ``.pt``, ``.pth``, ``.bin``): weights-only loading and saving.

A pickle can run arbitrary code when it is loaded, so mergelang loads these files only with
torch's weights-only unpickler (``torch.load(..., weights_only=True)``), which rebuilds plain
containers, numbers, strings and tensors and refuses everything else. A file that needs more
is refused with the code ``unsafe-pickle``; mergelang never falls back to a full unpickler. A
file that begins neither like a zip archive nor like a pickle is refused (``corrupt-ckpt``)
before torch reads it.

Zip-format files (everything ``torch.save`` wrote since torch 1.6) are memory-mapped
(``mmap=True``), so their tensors load lazily like a safetensors file's; legacy files are read
into memory. The state dict is unwrapped from ``{"state_dict": ...}`` (and ``"model"`` /
``"module"`` wrappers); entries that are not tensors (``global_step``, ``epoch``, the wrappers'
other entries...) are dropped and listed in :attr:`CkptReader.dropped`.

:func:`save_ckpt` writes the legacy output format ``{"state_dict": tensors}``. Unlike the
safetensors writer it holds the whole dict in memory and serialises it in one go, as
``torch.save`` requires; it goes through the same atomic-file policy.
"""

from __future__ import annotations

import os
import pickle
import pickletools
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from io import BufferedReader
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

import torch

from mergelang.errors import CheckpointError, OutputError
from mergelang.io.dtypes import code_for_torch
from mergelang.io.formats import ZIP_MAGIC, check_torch_signature, check_torch_signature_of
from mergelang.io.key_index import KeyIndex
from mergelang.io.pickle_bounds import (
    check_legacy_pickle,
    check_tensor_storage,
    check_zip_checkpoint,
)
from mergelang.io.safetensors_header import open_regular_file
from mergelang.io.sinks import MemorySink
from mergelang.io.writer import AtomicFile

if TYPE_CHECKING:
    from mergelang.io.sinks import SinkTarget
    from mergelang.io.writer import OutputEntry

WRAPPER_KEYS = ("state_dict", "model", "module")
"""Keys whose dict value holds the real state dict, looked into in this order."""

UNSAFE_HINT = "convert it to .safetensors with a tool you trust"
_GLOBAL = re.compile(r"unsupported global:? (?:GLOBAL )?([\w.]+)", re.IGNORECASE)
"""What torch's refusals name: ``Unsupported global: GLOBAL exec was not an allowed global``,
``unsupported GLOBAL posix.system whose module posix is blocked``."""
_OPERAND = re.compile(r"Unsupported operand (\d+)")
_OPCODE_NAMES = {ord(op.code): op.name for op in pickletools.opcodes}


@dataclass(frozen=True)
class CkptTensorInfo:
    """Dtype code and shape of one tensor of a pickle checkpoint."""

    dtype: str
    shape: tuple[int, ...]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _refusal(where: str, exc: BaseException) -> CheckpointError:
    text = str(exc)
    found = _GLOBAL.search(text)
    operand = None if found else _OPERAND.search(text)
    if operand is not None:
        code = int(operand.group(1))
        name = _OPCODE_NAMES.get(code, "unknown")
        return CheckpointError(
            where,
            f"mergelang cannot load this pickle safely: it holds the pickle operation {name} "
            f"(byte {code}), which the weights-only loader refuses (a corrupt file, or one "
            "that needs more than plain tensors)",
            code="unsafe-pickle",
            hint=UNSAFE_HINT,
        )
    detail = f" (it asks for {found.group(1)})" if found else ""
    return CheckpointError(
        where,
        "mergelang refuses to run code from a pickle: this file needs more than plain "
        f"tensors to load{detail}",
        code="unsafe-pickle",
        hint=UNSAFE_HINT,
    )


METADATA_KEY = "mergelang.metadata"
"""The entry beside ``state_dict`` where mergelang keeps a ``.ckpt`` output's metadata (the
same string pairs a safetensors output has in its header); other loaders ignore it."""


def load_state_dict(
    path: str | os.PathLike[str], *, file: BufferedReader | None = None
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Load the tensors of a pickle checkpoint safely; returns (tensors, dropped keys).
    ``file``: the file already open (``path`` then only names it in messages)."""
    return _tensors_of(str(path), _load(Path(path), file))


def read_ckpt_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The metadata mergelang stored in a ``.ckpt`` it wrote (empty for other files). The
    file is loaded safely and, in torch's zip format, memory-mapped: no tensor is read."""
    loaded = _load(Path(path))
    found = loaded.get(METADATA_KEY) if isinstance(loaded, Mapping) else None
    if not isinstance(found, Mapping):
        return {}
    return {str(k): v for k, v in found.items() if isinstance(v, str)}


def descriptor_path(file: BufferedReader) -> str | None:
    """A path that opens the very file ``file`` has open (``/proc/self/fd/N``), even if its
    name now leads elsewhere; ``None`` where the system has no such paths."""
    path = f"/proc/self/fd/{file.fileno()}"
    return path if os.path.exists(path) else None


def read_metadata(path: Path) -> Mapping[str, str]:
    """:func:`read_ckpt_metadata`, as the format table calls it."""
    return read_ckpt_metadata(path)


def _load(where: Path, file: BufferedReader | None = None) -> object:
    """``torch.load`` with the weights-only loader, refusing anything else clearly."""
    name = str(where)
    if file is None:
        is_zip = check_torch_signature(where) == ZIP_MAGIC
    else:
        is_zip = check_torch_signature_of(file, os.fstat(file.fileno()).st_size, where) == ZIP_MAGIC
    _check_bounds(where, file, is_zip)
    try:
        with warnings.catch_warnings():
            # torch notes pickle protocols it did not write; the refusal below says what matters.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            mapped = None if file is None else descriptor_path(file)
            if mapped is not None and is_zip:
                loaded = torch.load(mapped, map_location="cpu", weights_only=True, mmap=True)
            elif file is not None:
                file.seek(0)
                loaded = torch.load(file, map_location="cpu", weights_only=True)
            elif name.endswith(".safetensors"):
                # torch.load hands paths with this extension to the safetensors loader.
                with where.open("rb") as handle:
                    loaded = torch.load(handle, map_location="cpu", weights_only=True)
            else:
                loaded = torch.load(where, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as exc:
        raise _refusal(name, exc) from None
    except MemoryError:
        raise
    except EOFError:
        raise CheckpointError(
            name, "the file ends early (truncated pickle)", code="corrupt-ckpt"
        ) from None
    except Exception as exc:
        raise CheckpointError(
            name, f"not a readable torch checkpoint: {_first_line(exc)}", code="corrupt-ckpt"
        ) from None
    return loaded


def _check_bounds(where: Path, file: BufferedReader | None, is_zip: bool) -> None:
    """The checks of :mod:`mergelang.io.pickle_bounds`, on ``file`` or on ``where`` opened."""
    if file is not None:
        _check_bounds_of(file, os.fstat(file.fileno()).st_size, str(where), is_zip)
        file.seek(0)
        return
    with open_regular_file(where) as (handle, size):
        _check_bounds_of(handle, size, str(where), is_zip)


def _check_bounds_of(handle: BufferedReader, size: int, name: str, is_zip: bool) -> None:
    try:
        if is_zip:
            check_zip_checkpoint(handle, size, name)
        else:
            check_legacy_pickle(handle, name)
    except OSError as exc:
        raise CheckpointError(name, f"cannot read: {exc.strerror}", code="unreadable") from None


def _unwrap(loaded: object) -> tuple[object, list[str]]:
    """The state dict inside the wrappers, and the names of the wrappers' other entries."""
    current = loaded
    siblings: list[str] = []
    for _ in range(len(WRAPPER_KEYS) + 1):
        if not isinstance(current, Mapping):
            break
        for wrapper in WRAPPER_KEYS:
            inner = current.get(wrapper)
            if isinstance(inner, Mapping):
                siblings += [str(key) for key in current if key != wrapper]
                current = inner
                break
        else:
            break
    return current, siblings


def _tensors_of(name: str, loaded: object) -> tuple[dict[str, torch.Tensor], list[str]]:
    state, dropped = _unwrap(loaded)
    if not isinstance(state, Mapping):
        raise CheckpointError(
            name,
            f"the pickle holds a {type(state).__name__}, not a dict of tensors",
            code="not-a-state-dict",
        )
    tensors: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            dropped.append(str(key))
            continue
        if not isinstance(key, str):
            raise CheckpointError(
                name, f"tensor name {key!r} is not a string", code="not-a-state-dict"
            )
        if value.device.type == "meta":
            raise CheckpointError(
                name,
                "the tensor is on the meta device: the file holds its shape but no data",
                code="unsupported-dtype",
                key=key,
            )
        if value.layout != torch.strided or code_for_torch(value.dtype) is None:
            raise CheckpointError(
                name,
                f"unsupported tensor type {value.dtype} ({value.layout})",
                code="unsupported-dtype",
                key=key,
            )
        check_tensor_storage(
            name,
            key,
            shape=tuple(value.shape),
            strides=tuple(value.stride()),
            offset=int(value.storage_offset()),
            storage_elements=value.untyped_storage().nbytes() // max(value.element_size(), 1),
        )
        tensors[key] = value
    if not tensors:
        raise CheckpointError(name, "the checkpoint holds no tensors", code="not-a-state-dict")
    return tensors, dropped


class CkptReader(KeyIndex[CkptTensorInfo]):
    """A pickle checkpoint loaded weights-only; same interface as the safetensors reader.

    ``metadata`` is always empty (the format has none); ``dropped`` lists the non-tensor
    entries that were left out.
    """

    def __init__(self, path: str | os.PathLike[str], *, file: BufferedReader | None = None) -> None:
        self.path = Path(path)
        tensors, dropped = load_state_dict(self.path, file=file)
        self._tensors: dict[str, torch.Tensor] | None = tensors
        self._index = {
            key: CkptTensorInfo(code_for_torch(t.dtype) or "", tuple(t.shape))
            for key, t in tensors.items()
        }
        self.dropped: tuple[str, ...] = tuple(dropped)
        self.metadata: Mapping[str, str] = MappingProxyType({})

    def get(self, key: str) -> torch.Tensor:
        self.info(key)
        if self._tensors is None:
            raise ValueError(f"{self.path}: the reader is closed")
        return self._tensors[key]

    def close(self) -> None:
        self._tensors = None


def _standalone(tensor: torch.Tensor) -> torch.Tensor:
    """A CPU tensor that owns exactly its bytes.

    ``torch.save`` stores a view's whole storage, so a view into a memory-mapped input (or a
    slice of a bigger tensor) is copied first.
    """
    data = tensor.detach()
    if data.device.type != "cpu":
        data = data.to("cpu")
    nbytes = data.numel() * data.element_size()
    if (
        not data.is_contiguous()
        or data.storage_offset() != 0
        or data.untyped_storage().nbytes() != nbytes
    ):
        data = data.clone(memory_format=torch.contiguous_format)
    return data


def save_ckpt(
    path: str | os.PathLike[str],
    tensors: Mapping[str, torch.Tensor],
    *,
    overwrite: bool = False,
    protected: Iterable[str | os.PathLike[str]] = (),
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write ``{"state_dict": tensors}`` with ``torch.save``, atomically; returns the path.
    ``metadata`` (string pairs) goes beside the state dict under :data:`METADATA_KEY`."""
    try:
        state = {key: _standalone(t) for key, t in tensors.items()}
    except (MemoryError, RuntimeError) as exc:
        raise _no_memory(
            Path(path), sum(t.numel() * t.element_size() for t in tensors.values()), exc
        ) from None
    saved: dict[str, object] = {"state_dict": state}
    if metadata:
        saved[METADATA_KEY] = {str(k): str(v) for k, v in metadata.items()}
    target = AtomicFile(path, overwrite=overwrite, protected=protected)
    try:
        with os.fdopen(os.dup(target.fd), "wb") as handle:
            torch.save(saved, handle)
    except OSError as exc:
        raise target.fail(exc, "writing the checkpoint") from None
    except RuntimeError as exc:
        target.abort()
        raise OutputError(
            str(target.path),
            f"cannot write the checkpoint ({_first_line(exc)}); the partial file was removed",
            code="write-failed",
        ) from None
    except BaseException:
        target.abort()
        raise
    return target.commit()


def _no_memory(path: Path, nbytes: int, exc: BaseException) -> OutputError:
    """The error for a ``.ckpt`` output that cannot be held in memory (``torch.save``
    needs every tensor at once)."""
    if isinstance(exc, RuntimeError) and "alloc" not in str(exc).lower():
        raise exc
    return OutputError(
        str(Path(os.path.abspath(path))),
        f"cannot hold the checkpoint in memory: it needs {nbytes:,} bytes at once, and the "
        "allocation failed",
        code="out-of-memory",
        hint="save it as .safetensors, which is written key by key, or free memory",
    )


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
        try:
            super().__init__(entries)
        except (MemoryError, RuntimeError) as exc:
            raise _no_memory(path, sum(e.nbytes for e in entries), exc) from None
        self.path = path
        self._overwrite = overwrite
        self._protected = list(protected)
        self._metadata = dict(metadata or {})

    def commit(self) -> Path:
        written = save_ckpt(
            self.path,
            self.tensors,
            overwrite=self._overwrite,
            protected=self._protected,
            metadata=self._metadata,
        )
        self.abort()
        return written


def open_sink(target: SinkTarget) -> CkptSink:
    """The sink of a ``.ckpt`` output (see :mod:`mergelang.io.file_formats`)."""
    return CkptSink(
        target.path,
        target.entries,
        overwrite=target.overwrite,
        protected=target.protected,
        metadata=target.metadata,
    )
