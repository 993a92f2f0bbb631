"""Atomic output files and the header-first streaming safetensors writer.

Output policy (every file mergelang writes goes through :class:`AtomicFile`):

- The data is written to a temporary file in the target's folder, named
  ``.<name>.mergelang-partial-<pid>-<random>`` so a leftover from a killed process is easy to
  recognise (the model locator never picks one up).
- On success the temporary file is flushed, ``fsync``-ed and renamed over the target, and the
  folder is ``fsync``-ed: the output appears whole or not at all.
- An existing target is refused (code ``exists``) unless ``overwrite``; without ``overwrite``
  the final step is a hard link, which fails if the name appeared meanwhile. With ``overwrite``
  a symlink at the target is replaced by the new file, never written through.
- A target that is one of the ``protected`` paths (the run's inputs) is always refused, even
  with ``overwrite``: same resolved path (symlinks followed) or same inode (hard links).
- Missing parent folders are created.
- The writer holds a lock (:mod:`mergelang.io.partials`) on a lock file beside the temporary
  file from its creation until it is renamed or removed; a temporary file left by a process
  that died (``SIGKILL``, a power cut) has no holder, and :func:`mergelang.io.partials.sweep`
  removes it.
- The commit is :meth:`AtomicFile.prepare` (``fsync``, close) then :meth:`AtomicFile.publish`
  (the rename), so that a run can make all its outputs complete on disk before it moves the
  first into place.
- Errors while writing (``ENOSPC``, ``EDQUOT``, ``EFBIG``...) remove the temporary file and
  raise :class:`~mergelang.errors.OutputError`; so do an exception or ``KeyboardInterrupt``
  inside a ``with`` block. A writer dropped without commit removes its file when collected.

:class:`SafetensorsWriter` knows every key, dtype and shape up front, so it writes the complete
header first and then each tensor's bytes at their final offset (``pwrite``), in any order and
in pieces if need be: memory never holds the output. The file is preallocated
(``posix_fallocate``) so a full disk is reported before any tensor is computed where the file
system allows it. Data offsets are assigned by item size, largest first, so every tensor is
aligned to its own item size; header keys keep the given order. Tensors are written from a
zero-copy byte view of their (contiguous, CPU) memory in native byte order: only
little-endian hosts are supported, as the format is little-endian.
"""

from __future__ import annotations

import abc
import contextlib
import ctypes
import errno
import json
import math
import os
import stat
import sys
import threading
import weakref
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from mergelang.errors import OutputError
from mergelang.io import partials
from mergelang.io.dtypes import code_for_torch, is_known_code, item_size
from mergelang.io.hashing import range_sha256
from mergelang.io.partials import PARTIAL_MARKER, is_partial_name, partial_stem
from mergelang.io.safetensors_header import MAX_DIMENSION, is_utf8_text, read_safetensors_header

if TYPE_CHECKING:
    import torch

    from mergelang.io.sinks import SinkTarget

__all__ = [
    "PARTIAL_MARKER",
    "PLACEHOLDER",
    "AtomicFile",
    "OutputEntry",
    "SafetensorsWriter",
    "check_target",
    "fsync_folder",
    "is_disk_full",
    "is_partial_name",
    "partial_stem",
]

_DISK_FULL = frozenset(
    code for code in (errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", None)) if code
)
_NO_FALLOCATE = frozenset(
    code
    for code in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS, getattr(errno, "ENOTSUP", None))
    if code
)


PLACEHOLDER = "0" * 64
"""The value a metadata entry is written with when it is filled in before the commit
(:meth:`SafetensorsWriter.fill_placeholder`): as wide as a hex sha256."""


def is_disk_full(exc: OSError) -> bool:
    """Whether ``exc`` says the disk, a quota or a file-size limit is full."""
    return exc.errno in _DISK_FULL


def os_error(path: Path, exc: OSError, doing: str) -> OutputError:
    """The error for an ``OSError`` met while writing ``path`` (``disk-full`` for a full
    disk, a quota or a file-size limit)."""
    if exc.errno in _DISK_FULL:
        reason = {
            errno.ENOSPC: "no space left on device",
            errno.EFBIG: "the file is larger than allowed (file size limit)",
        }.get(exc.errno or 0, "disk quota exceeded")
        return OutputError(
            str(path),
            f"{reason} while {doing}; the partial file was removed",
            code="disk-full",
            hint="free some space or write to another disk",
        )
    return OutputError(
        str(path), f"cannot write ({exc.strerror or exc}) while {doing}", code="write-failed"
    )


def _same_file(a: Path, b: Path) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_target(
    path: Path, *, overwrite: bool, protected: Iterable[str | os.PathLike[str]] = ()
) -> None:
    """Refuse a target that is an input, a folder, or (without ``overwrite``) exists."""
    for guarded in protected:
        if _same_file(path, Path(guarded)):
            raise OutputError(
                str(path),
                f"refusing to write over an input of this run ({guarded})",
                code="overwrite-input",
                hint="choose another output path; inputs are never modified",
            )
    if os.path.isdir(path):
        raise OutputError(str(path), "the output path is a folder", code="is-directory")
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        mode = None
    if mode is not None and not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
        raise OutputError(
            str(path),
            "the output path is not a regular file (a device, FIFO or socket); "
            "it is never replaced, even with --force",
            code="not-a-file",
            hint="choose another output path",
        )
    if os.path.lexists(path) and not overwrite:
        raise OutputError(
            str(path),
            "the output file already exists",
            code="exists",
            hint="pass --force to replace it",
        )


def fsync_folder(folder: Path) -> None:
    """Make the names in ``folder`` durable (renames into it); errors are ignored."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(folder, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _discard(state: dict[str, object]) -> None:
    """Close and remove a temporary file, then let go of its lock (also run by the
    finalizer of a dropped writer)."""
    fd = state.pop("fd", None)
    if isinstance(fd, int):
        with contextlib.suppress(OSError):
            os.close(fd)
    temp = state.pop("temp", None)
    if isinstance(temp, str):
        with contextlib.suppress(OSError):
            os.unlink(temp)
    _let_go(state)


def _let_go(state: dict[str, object]) -> None:
    lock = state.pop("lock", None)
    stem = state.pop("stem", None)
    if isinstance(lock, partials.FolderLock) and isinstance(stem, str):
        partials.release(lock, stem)


class AtomicFile:
    """A temporary file beside ``path`` that becomes ``path`` on :meth:`commit`.

    Checks the target on creation and again on commit (see the module docstring for the
    policy). ``fd`` is a descriptor open for writing to the temporary file. The commit has
    two halves, for a run that moves several outputs into place together:
    :meth:`prepare` (flush, ``fsync``, close: the file is complete on disk) and
    :meth:`publish` (the rename). The temporary file's lock
    (:mod:`mergelang.io.partials`) is held from creation until the file is renamed or
    removed.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        overwrite: bool = False,
        protected: Iterable[str | os.PathLike[str]] = (),
    ) -> None:
        self.path = Path(os.path.abspath(path))
        self.overwrite = overwrite
        self.protected = tuple(Path(p) for p in protected)
        check_target(self.path, overwrite=overwrite, protected=self.protected)
        folder = self.path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(
                str(self.path),
                f"cannot create the folder {folder} ({exc.strerror or exc})",
                code="cannot-create-folder",
            ) from None
        stem = partial_stem(self.path.name)
        try:
            lock = partials.hold(folder, stem)
        except OSError as exc:
            raise OutputError(
                str(self.path),
                f"cannot create a file in {folder} ({exc.strerror or exc})",
                code="cannot-create",
            ) from None
        self.temp_path = folder / lock.partial_name(stem)
        # Read and write: a cached object reads its data back for its digest before the commit.
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        flags |= getattr(os, "O_BINARY", 0)
        # The cleanup is registered before the file exists: an interrupt arriving just after
        # the file is created (before its descriptor is stored) still removes it, at the
        # latest when the interpreter exits.
        self._state: dict[str, object] = {"temp": str(self.temp_path), "lock": lock, "stem": stem}
        self._finalizer = weakref.finalize(self, _discard, self._state)
        self.committed = False
        try:
            self._state["fd"] = os.open(self.temp_path, flags, 0o666)
        except OSError as exc:
            self._state.pop("temp", None)  # not ours: nothing was created
            _let_go(self._state)
            self._finalizer.detach()
            raise OutputError(
                str(self.path),
                f"cannot create a file in {folder} ({exc.strerror or exc})",
                code="cannot-create",
            ) from None

    @property
    def fd(self) -> int:
        """The descriptor; reopened if :meth:`release` closed it."""
        fd = self._state.get("fd")
        if not isinstance(fd, int) and self._state.get("released") and "temp" in self._state:
            flags = os.O_RDWR | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
            try:
                fd = os.open(self.temp_path, flags)
            except OSError as exc:
                raise self.fail(exc, "reopening the temporary file") from None
            self._state["fd"] = fd
            del self._state["released"]
        if not isinstance(fd, int):
            raise ValueError(f"{self.path}: the output is already committed or aborted")
        return fd

    @property
    def is_open(self) -> bool:
        """Whether the file is being written (its descriptor open, or released)."""
        return isinstance(self._state.get("fd"), int) or bool(self._state.get("released"))

    def release(self) -> None:
        """Close the descriptor until it is next needed (:attr:`fd` reopens the temporary
        file): a run writing more outputs than it may hold descriptors for writes them a
        batch at a time. What was written stays in the temporary file, which is still
        removed on :meth:`abort`."""
        fd = self._state.get("fd")
        if not isinstance(fd, int):
            return
        self._state["released"] = True
        del self._state["fd"]
        try:
            os.close(fd)
        except OSError as exc:
            raise self.fail(exc, "closing the file") from None

    @property
    def prepared(self) -> bool:
        """Whether the file is complete on disk and waits for :meth:`publish`."""
        return not self.is_open and "temp" in self._state and not self.committed

    def fail(self, exc: OSError, doing: str) -> OutputError:
        """Abort and build the error for an ``OSError`` met while writing."""
        self.abort()
        return os_error(self.path, exc, doing)

    def prepare(self) -> None:
        """Flush the temporary file to disk and close it; it stays under its temporary name
        (and its lock stays held) until :meth:`publish` or :meth:`abort`."""
        fd = self.fd
        try:
            os.fsync(fd)
        except OSError as exc:
            raise self.fail(exc, "flushing to disk") from None
        self._state.pop("fd")
        try:
            os.close(fd)
        except OSError as exc:
            raise self.fail(exc, "closing the file") from None

    def check(self) -> None:
        """Check the target again (inputs, folders, and without ``overwrite`` a name taken
        meanwhile), changing nothing: for a run about to publish several outputs."""
        check_target(self.path, overwrite=True, protected=self.protected)
        if not self.overwrite and os.path.lexists(self.path):
            raise OutputError(
                str(self.path),
                "the output file appeared while it was being written",
                code="exists",
                hint="pass --force to replace it",
            )

    def publish(self, *, sync_folder: bool = True) -> Path:
        """Move a :meth:`prepare`-d file into place; returns the target path.
        ``sync_folder=False`` leaves the folder's ``fsync`` to the caller
        (:func:`fsync_folder`), who publishes several files at once."""
        if not self.prepared:
            raise ValueError(f"{self.path}: the output is not prepared (or already committed)")
        try:
            # Inputs and folders are checked again; a file that took the name meanwhile is
            # found by _publish, which says so.
            check_target(self.path, overwrite=True, protected=self.protected)
            self._publish()
        except BaseException:
            self.abort()
            raise
        self._state.pop("temp", None)
        _let_go(self._state)
        self._finalizer.detach()
        self.committed = True
        if sync_folder:
            fsync_folder(self.path.parent)
        return self.path

    def commit(self) -> Path:
        """Flush to disk and move the file into place; returns the target path."""
        self.prepare()
        return self.publish()

    def _publish(self) -> None:
        if self.overwrite:
            try:
                os.replace(self.temp_path, self.path)
            except OSError as exc:
                raise os_error(self.path, exc, "moving the file into place") from None
            return
        try:
            os.link(self.temp_path, self.path)
        except FileExistsError:
            raise OutputError(
                str(self.path),
                "the output file appeared while it was being written",
                code="exists",
                hint="pass --force to replace it",
            ) from None
        except OSError:
            # File systems without hard links: check, then rename.
            if os.path.lexists(self.path):
                raise OutputError(
                    str(self.path),
                    "the output file appeared while it was being written",
                    code="exists",
                    hint="pass --force to replace it",
                ) from None
            try:
                os.replace(self.temp_path, self.path)
            except OSError as exc:
                raise os_error(self.path, exc, "moving the file into place") from None
            return
        with contextlib.suppress(OSError):
            os.unlink(self.temp_path)

    def abort(self) -> None:
        """Remove the temporary file; does nothing the second time or after commit."""
        self._state.pop("released", None)
        _discard(self._state)
        self._finalizer.detach()


@dataclass(frozen=True)
class OutputEntry:
    """One key of an output file, known before any data is computed."""

    key: str
    dtype: str
    shape: tuple[int, ...]
    numel: int = field(init=False, repr=False, compare=False)
    nbytes: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Asked for at every write: computed once. An unknown dtype is refused by
        # build_header with the output's name; until then it counts as 0 bytes.
        count = math.prod(self.shape)
        size = item_size(self.dtype) if is_known_code(self.dtype) else 0
        object.__setattr__(self, "numel", count)
        object.__setattr__(self, "nbytes", count * size)


def build_header(
    entries: Sequence[OutputEntry],
    metadata: Mapping[str, str] | None = None,
    *,
    path: str = "<output>",
) -> tuple[bytes, dict[str, tuple[int, int]]]:
    """The padded JSON header and each key's (start, end) data offsets.

    Deterministic: ``__metadata__`` first with its keys sorted, then the keys in the given
    order; compact separators; ASCII-only JSON; padded with spaces to a multiple of 8 bytes.
    Raises :class:`OutputError` for duplicate keys, unknown dtypes, bad shapes or non-string
    metadata.
    """
    seen: set[str] = set()
    for entry in entries:
        if entry.key in seen:
            raise OutputError(path, f"the output names key {entry.key!r} twice", code="bad-entry")
        if entry.key == "__metadata__":
            raise OutputError(path, "__metadata__ is not a tensor name", code="bad-entry")
        seen.add(entry.key)
        if not is_known_code(entry.dtype):
            raise OutputError(
                path, f"unknown dtype {entry.dtype!r} for key {entry.key!r}", code="bad-entry"
            )
        if not is_utf8_text(entry.key):
            raise OutputError(
                path, f"key {entry.key!r} is not valid Unicode text", code="bad-entry"
            )
        if any(
            not isinstance(d, int) or isinstance(d, bool) or not 0 <= d <= MAX_DIMENSION
            for d in entry.shape
        ):
            raise OutputError(
                path, f"bad shape {entry.shape!r} for key {entry.key!r}", code="bad-entry"
            )
    offsets: dict[str, tuple[int, int]] = {}
    position = 0
    for entry in sorted(entries, key=lambda e: -item_size(e.dtype)):
        offsets[entry.key] = (position, position + entry.nbytes)
        position += entry.nbytes
    document: dict[str, object] = {}
    if metadata:
        for meta_key, value in metadata.items():
            if not isinstance(value, str) or not isinstance(meta_key, str):
                raise OutputError(
                    path,
                    f"metadata value for {meta_key!r} is not a string",
                    code="bad-metadata",
                )
            if not is_utf8_text(meta_key) or not is_utf8_text(value):
                raise OutputError(
                    path,
                    f"metadata entry {meta_key!r} is not valid Unicode text",
                    code="bad-metadata",
                )
        document["__metadata__"] = {k: metadata[k] for k in sorted(metadata)}
    for entry in entries:
        document[entry.key] = {
            "dtype": entry.dtype,
            "shape": list(entry.shape),
            "data_offsets": list(offsets[entry.key]),
        }
    text = json.dumps(document, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    text += b" " * (-len(text) % 8)
    return text, offsets


def _byte_view(tensor: torch.Tensor) -> memoryview:
    """The bytes of a contiguous CPU tensor, without copying (the tensor must stay alive)."""
    nbytes = tensor.numel() * tensor.element_size()
    if nbytes == 0:
        return memoryview(b"")
    buffer = (ctypes.c_char * nbytes).from_address(tensor.data_ptr())
    return memoryview(buffer).cast("B")


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while len(data):
        if hasattr(os, "pwrite"):
            done = os.pwrite(fd, data, offset)
        else:  # pragma: no cover - platforms without pwrite
            os.lseek(fd, offset, os.SEEK_SET)
            done = os.write(fd, data)
        if done <= 0:
            raise OSError(errno.EIO, "write returned no progress")
        data = data[done:]
        offset += done


def _preallocate(fd: int, size: int) -> None:
    if size == 0:
        return
    if hasattr(os, "posix_fallocate"):
        try:
            os.posix_fallocate(fd, 0, size)
            return
        except OSError as exc:
            if exc.errno not in _NO_FALLOCATE:
                raise
    os.ftruncate(fd, size)


class StreamedFile(abc.ABC):
    """The commit half of a sink that streams its pieces into an :class:`AtomicFile`
    (``_file``) at fixed offsets: :meth:`prepare` refuses a file with keys not completely
    written (:meth:`missing`, each sink's own) and removes it, then syncs it; :meth:`publish`
    moves it into place. The executor prepares every output before it publishes any."""

    path: Path
    _file: AtomicFile

    @abc.abstractmethod
    def missing(self) -> list[str]:
        """Keys not (completely) written yet, in the output's order."""

    def commit(self) -> Path:
        """Check every byte was written, flush, fsync and move the file into place."""
        self.prepare()
        return self.publish()

    def prepare(self) -> None:
        """Check every byte was written, flush and fsync: the file is complete on disk,
        still under its temporary name."""
        if not self._file.is_open:
            raise ValueError(f"{self.path}: the output is already committed or aborted")
        missing = self.missing()
        if missing:
            self._file.abort()
            shown = ", ".join(missing[:5])
            if len(missing) > 5:
                shown += f" and {len(missing) - 5} more"
            raise OutputError(
                str(self.path),
                f"{len(missing)} keys were not completely written ({shown}); "
                "the partial file was removed",
                code="incomplete",
            )
        self._file.prepare()

    def check(self) -> None:
        """See :meth:`AtomicFile.check`."""
        self._file.check()

    def publish(self, *, sync_folder: bool = True) -> Path:
        """Move the prepared file into place (see :meth:`AtomicFile.publish`)."""
        return self._file.publish(sync_folder=sync_folder)

    def abort(self) -> None:
        """Remove the temporary file; safe to call more than once."""
        self._file.abort()

    def release(self) -> None:
        """Close the file's descriptor until the next write or the commit (see
        :meth:`AtomicFile.release`)."""
        self._file.release()

    @property
    def committed(self) -> bool:
        return self._file.committed


class SafetensorsWriter(StreamedFile):
    """Stream tensors into a new ``.safetensors`` file whose layout is fixed up front.

    Write each key whole with :meth:`write` or in contiguous pieces of its flattened elements
    with :meth:`write_part`, in any order, then :meth:`commit`. As a context manager it commits
    on a clean exit and aborts on any exception, ``KeyboardInterrupt`` included. Writes from
    several threads are allowed (each goes to its own byte range).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        entries: Sequence[OutputEntry],
        *,
        metadata: Mapping[str, str] | None = None,
        overwrite: bool = False,
        protected: Iterable[str | os.PathLike[str]] = (),
    ) -> None:
        if sys.byteorder != "little":
            raise OutputError(str(path), "mergelang writes safetensors only on little-endian hosts")
        self.entries: tuple[OutputEntry, ...] = tuple(entries)
        self._by_key = {entry.key: entry for entry in self.entries}
        header, self._offsets = build_header(self.entries, metadata, path=str(path))
        self._header = len(header).to_bytes(8, "little") + header
        self._data_offset = len(self._header)
        self._total = self._data_offset + sum(e.nbytes for e in self.entries)
        self._done: dict[str, list[tuple[int, int]]] = {e.key: [] for e in self.entries}
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        """Held around each ``pwrite``: the kernel serialises writes to one file anyway (the
        inode's lock), and a thread waiting here sleeps where one waiting in the kernel spins."""
        self._file = AtomicFile(path, overwrite=overwrite, protected=protected)
        self.path = self._file.path
        try:
            _preallocate(self._file.fd, self._total)
            _pwrite_all(self._file.fd, memoryview(self._header), 0)
        except OSError as exc:
            raise self._file.fail(exc, "writing the header") from None
        except BaseException:
            self._file.abort()
            raise

    @property
    def header_bytes(self) -> bytes:
        """Everything before the data: the 8-byte length and the padded JSON header."""
        return self._header

    @property
    def data_offset(self) -> int:
        return self._data_offset

    @property
    def total_size(self) -> int:
        """The size of the finished file in bytes."""
        return self._total

    def _entry(self, key: str) -> OutputEntry:
        try:
            return self._by_key[key]
        except KeyError:
            raise OutputError(
                str(self.path), f"{key!r} is not a key of this output", code="unknown-key"
            ) from None

    def _check_dtype(self, entry: OutputEntry, tensor: torch.Tensor) -> None:
        code = code_for_torch(tensor.dtype)
        if code != entry.dtype:
            raise OutputError(
                str(self.path),
                f"key {entry.key!r} is declared {entry.dtype} but a {tensor.dtype} tensor "
                "was given",
                code="wrong-dtype",
            )

    def write(self, key: str, tensor: torch.Tensor) -> None:
        """Write the whole tensor of ``key`` (dtype and shape must match the entry)."""
        entry = self._entry(key)
        self._check_dtype(entry, tensor)
        if tuple(tensor.shape) != entry.shape:
            raise OutputError(
                str(self.path),
                f"key {key!r} is declared with shape {list(entry.shape)} but a tensor of shape "
                f"{list(tensor.shape)} was given",
                code="wrong-shape",
            )
        self._write_elements(entry, 0, tensor)

    def write_part(self, key: str, element_offset: int, tensor: torch.Tensor) -> None:
        """Write ``tensor``'s elements as elements ``element_offset..`` of flattened ``key``."""
        entry = self._entry(key)
        self._check_dtype(entry, tensor)
        count = tensor.numel()
        if element_offset < 0 or element_offset + count > entry.numel:
            raise OutputError(
                str(self.path),
                f"elements {element_offset}..{element_offset + count} are outside key "
                f"{key!r}, which has {entry.numel}",
                code="out-of-range",
            )
        self._write_elements(entry, element_offset, tensor)

    def _write_elements(self, entry: OutputEntry, first: int, tensor: torch.Tensor) -> None:
        count = tensor.numel()
        if count == 0:
            return
        span = (first, first + count)
        with self._lock:
            done = self._done[entry.key]
            index = bisect_left(done, span)
            before = done[index - 1] if index > 0 else None
            after = done[index] if index < len(done) else None
            if (before is not None and before[1] > span[0]) or (
                after is not None and after[0] < span[1]
            ):
                raise OutputError(
                    str(self.path),
                    f"elements {span[0]}..{span[1]} of key {entry.key!r} were already written",
                    code="duplicate-write",
                )
            # Claimed before writing so that two threads cannot write the same bytes; a failed
            # write aborts the whole file, so the claim never needs to be undone.
            _insert_span(done, span)
        data = tensor.detach()
        if data.device.type != "cpu":
            data = data.to("cpu")
        data = data.contiguous()
        size = item_size(entry.dtype)
        offset = self._data_offset + self._offsets[entry.key][0] + first * size
        try:
            with self._write_lock:
                _pwrite_all(self._file.fd, _byte_view(data), offset)
        except OSError as exc:
            raise self._file.fail(exc, f"writing key {entry.key!r}") from None

    def rewrite_metadata(self, metadata: Mapping[str, str]) -> None:
        """Rewrite the header, in place, with ``metadata``: for values learnt only once every
        key is written (the inputs' hashes, computed while the merge streamed). The new
        header must have the old one's length, so no byte of data moves: values that change
        must keep their widths (see :func:`mergelang.plan.cache.placeholder_hashes`)."""
        if not self._file.is_open:
            raise ValueError(f"{self.path}: the output is already committed or aborted")
        header, offsets = build_header(self.entries, metadata, path=str(self.path))
        framed = len(header).to_bytes(8, "little") + header
        if len(framed) != len(self._header) or offsets != self._offsets:
            raise ValueError(f"{self.path}: the new header is not as long as the old one")
        try:
            _pwrite_all(self._file.fd, memoryview(framed), 0)
        except OSError as exc:
            raise self._file.fail(exc, "writing the header") from None
        self._header = framed

    def fill_placeholder(self, meta_key: str, value: str) -> None:
        """Rewrite, in place, a metadata value that was written as a placeholder of the same
        length (:data:`PLACEHOLDER`): for what is known only once every key is written, such
        as a digest of the data. The header keeps its length, so no byte of data moves."""
        if not self._file.is_open:
            raise ValueError(f"{self.path}: the output is already committed or aborted")
        needle = json.dumps({meta_key: PLACEHOLDER}, separators=(",", ":"))[1:-1].encode()
        start = self._header.find(needle)
        if start < 0 or len(value) != len(PLACEHOLDER) or not value.isascii():
            raise ValueError(f"{self.path}: no placeholder {meta_key!r} for {value!r}")
        at = start + len(needle) - len(PLACEHOLDER) - 1
        data = value.encode("ascii")
        self._header = self._header[:at] + data + self._header[at + len(data) :]
        try:
            _pwrite_all(self._file.fd, memoryview(data), at)
        except OSError as exc:
            raise self._file.fail(exc, "writing the header") from None

    def data_sha256(self) -> str:
        """The sha256 of the data written (everything after the header), read back."""
        try:
            return range_sha256(self._file.fd, self._data_offset, self._total)
        except OSError as exc:
            raise self._file.fail(exc, "reading the data back") from None

    def missing(self) -> list[str]:
        """Keys not (completely) written yet, in entry order."""
        with self._lock:
            return [
                e.key for e in self.entries if e.numel > 0 and self._done[e.key] != [(0, e.numel)]
            ]

    def __enter__(self) -> SafetensorsWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.abort()
        elif self._file.is_open:
            self.commit()


def open_sink(target: SinkTarget) -> SafetensorsWriter:
    """The sink of a safetensors output (see :mod:`mergelang.io.file_formats`): the file
    streamed to disk, its folder created first."""
    target.path.parent.mkdir(parents=True, exist_ok=True)
    return SafetensorsWriter(
        target.path,
        target.entries,
        metadata=target.metadata,
        overwrite=target.overwrite,
        protected=target.protected,
    )


def read_metadata(path: Path) -> Mapping[str, str]:
    """What a safetensors file records in its header's ``__metadata__``."""
    return read_safetensors_header(path).metadata


def _insert_span(done: list[tuple[int, int]], span: tuple[int, int]) -> None:
    """Add ``span`` to a sorted list of disjoint spans, merging neighbours that touch."""
    index = bisect_left(done, span)
    done.insert(index, span)
    if index + 1 < len(done) and done[index][1] == done[index + 1][0]:
        done[index] = (done[index][0], done[index + 1][1])
        del done[index + 1]
    if index > 0 and done[index - 1][1] == done[index][0]:
        done[index - 1] = (done[index - 1][0], done[index][1])
        del done[index]
