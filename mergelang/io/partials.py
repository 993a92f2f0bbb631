"""Partial (temporary) output files: their names, the lock that says their run is alive, and
the sweep that removes those of runs that are gone.

**Names.** A partial file is ``.<name>.mergelang-partial-<pid>-<8 hex digits>`` beside the
output ``<name>`` it is to become (the name shortened by :func:`partial_stem` when it would
be over 255 bytes). ``<pid>-<hex>`` is the *token* of the lock its writer holds.

**Liveness is a lock, not a process id.** Before a process creates a partial file in a
folder, it creates the lock file ``.mergelang-partial-<token>.lock`` there and holds an
exclusive :func:`fcntl.flock` on it until its last partial file with that token is gone
(renamed into place or removed). A process id says nothing about a run in another PID
namespace (a container) or on another host sharing the folder; a lock does: the kernel (or
the NFS server) drops it when the holder dies, whatever killed it.

**The sweep.** :func:`sweep` removes, in one folder, every partial file of any name whose
lock it can take without blocking, and lock files left without partial files. A partial
file whose lock file is missing has no live writer (every writer holds its lock before it
creates the file) and is removed too. Only regular files are removed; folders, symlinks and
names that are not exactly of these forms are left alone.

Locks are taken carefully against a sweep running at the same moment: the lock file is
created with ``O_EXCL``, locked without blocking, and kept only if the name still leads to
the file that was locked (a sweep may have removed it in between); a sweep likewise removes
only what it locked under the name it found.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - systems without flock keep every partial file
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "LOCK_SUFFIX",
    "PARTIAL_MARKER",
    "FolderLock",
    "hold",
    "is_partial_name",
    "parse_partial",
    "partial_stem",
    "release",
    "sweep",
]

PARTIAL_MARKER = ".mergelang-partial-"
"""Part of every temporary output file name (and of the lock files beside them)."""
LOCK_SUFFIX = ".lock"

_TOKEN = r"(?P<pid>[1-9][0-9]{0,9})-(?P<hex>[0-9a-f]{8})"
_PARTIAL = re.compile(r"\.(?P<stem>.+)" + re.escape(PARTIAL_MARKER) + _TOKEN)
_LOCK = re.compile(re.escape(PARTIAL_MARKER) + _TOKEN + re.escape(LOCK_SUFFIX))

_NAME_MAX = 255
"""The longest file name (in bytes) most file systems take."""
_PARTIAL_TAIL_MAX = len(PARTIAL_MARKER) + 10 + 1 + 8
"""The most bytes that follow a target's name in its temporary file's name."""


def is_partial_name(name: str) -> bool:
    """Whether a file name is one of mergelang's temporary output files (or their locks)."""
    return PARTIAL_MARKER in name


def partial_stem(target_name: str) -> str:
    """The part of a temporary file's name taken from its target's name: the whole name,
    or its start when the temporary name would be over 255 bytes (an output name near the
    limit must still have a temporary file beside it)."""
    encoded = os.fsencode(target_name)
    room = _NAME_MAX - 1 - _PARTIAL_TAIL_MAX
    if len(encoded) <= room:
        return target_name
    return os.fsdecode(encoded[:room])


def parse_partial(name: str) -> tuple[str, int, str] | None:
    """``(stem, pid, token)`` of a name that is exactly a partial file's, else ``None``."""
    found = _PARTIAL.fullmatch(name)
    if found is None:
        return None
    return found.group("stem"), int(found.group("pid")), f"{found['pid']}-{found['hex']}"


def _lock_name(token: str) -> str:
    return f"{PARTIAL_MARKER}{token}{LOCK_SUFFIX}"


@dataclass(eq=False)
class FolderLock:
    """A lock this process holds in one folder, and the partial files' stems using it."""

    folder: Path
    token: str
    fd: int
    stems: set[str] = field(default_factory=set)

    @property
    def path(self) -> Path:
        return self.folder / _lock_name(self.token)

    def partial_name(self, stem: str) -> str:
        return f".{stem}{PARTIAL_MARKER}{self.token}"


_registry = threading.Lock()
_held: dict[str, list[FolderLock]] = {}


def _forget_in_child() -> None:
    # A forked child shares the parent's locks; it must neither use nor release them.
    global _registry
    _registry = threading.Lock()
    _held.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


def _same_file(path: Path, fd: int) -> bool:
    try:
        on_disk = os.stat(path)
    except OSError:
        return False
    mine = os.fstat(fd)
    return (on_disk.st_dev, on_disk.st_ino) == (mine.st_dev, mine.st_ino)


def _try_lock(fd: int) -> bool:
    if fcntl is None:  # pragma: no cover
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _new_lock(folder: Path) -> FolderLock:
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(64):
        token = f"{os.getpid()}-{secrets.token_hex(4)}"
        path = folder / _lock_name(token)
        try:
            fd = os.open(path, flags, 0o666)
        except FileExistsError:
            continue
        if _try_lock(fd) and _same_file(path, fd):
            return FolderLock(folder, token, fd)
        # A sweep or a survey took it first: leave it and try another token.
        if _same_file(path, fd):
            with contextlib.suppress(OSError):
                os.unlink(path)
        os.close(fd)
    raise OSError(f"cannot take a lock in {folder}")


def hold(folder: Path, stem: str) -> FolderLock:
    """A lock held in ``folder`` for a new partial file of ``stem`` (name it with
    :meth:`FolderLock.partial_name`); :func:`release` it once the file is gone. Raises
    :class:`OSError` when the lock file cannot be created."""
    key = os.path.abspath(folder)
    with _registry:
        for lock in _held.get(key, []):
            if stem not in lock.stems:
                lock.stems.add(stem)
                return lock
        lock = _new_lock(Path(key))
        lock.stems.add(stem)
        _held.setdefault(key, []).append(lock)
        return lock


def release(lock: FolderLock, stem: str) -> None:
    """The partial file of ``stem`` is gone: drop the lock once no partial file uses it
    (the lock file is removed first, then the lock let go). Safe to call twice."""
    with _registry:
        lock.stems.discard(stem)
        if lock.stems:
            return
        held = _held.get(str(lock.folder), [])
        if lock not in held:
            return
        held.remove(lock)
        if not held:
            _held.pop(str(lock.folder), None)
        with contextlib.suppress(OSError):
            os.unlink(lock.path)
        with contextlib.suppress(OSError):
            os.close(lock.fd)


def _remove_regular(path: Path) -> bool:
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return False
        os.unlink(path)
    except OSError:
        return False
    return True


def sweep(folder: str | os.PathLike[str]) -> list[tuple[Path, int]]:
    """Remove the partial files in ``folder`` that no live run holds (see the module
    docstring), of any output's name; returns those removed (path, the process id in the
    name), sorted by name. A folder that cannot be listed has nothing removed."""
    place = Path(os.path.abspath(folder))
    try:
        names = sorted(os.listdir(place))
    except OSError:
        return []
    partials: dict[str, list[tuple[str, int]]] = {}
    locks: set[str] = set()
    for name in names:
        parsed = parse_partial(name)
        if parsed is not None:
            partials.setdefault(parsed[2], []).append((name, parsed[1]))
            continue
        found = _LOCK.fullmatch(name)
        if found is not None:
            locks.add(f"{found['pid']}-{found['hex']}")
    if fcntl is None:  # pragma: no cover
        return []
    removed: list[tuple[Path, int]] = []
    for token in sorted(set(partials) | locks):
        files = partials.get(token, [])
        lock_path = place / _lock_name(token)
        fd = _open_lock(lock_path)
        if fd is None:
            # No lock file: no live writer has it, as a writer holds its lock before it
            # creates a partial file and lets go only once the file is gone.
            if os.path.lexists(lock_path):
                continue  # it appeared meanwhile: look again next time
            removed += _remove_all(place, files)
            continue
        try:
            if not _try_lock(fd) or not _same_file(lock_path, fd):
                continue  # a live run holds it (or it was replaced meanwhile)
            removed += _remove_all(place, files)
            with contextlib.suppress(OSError):
                os.unlink(lock_path)
        finally:
            os.close(fd)
    return sorted(removed)


def _open_lock(path: Path) -> int | None:
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return None
    if not stat.S_ISREG(mode):
        return None
    try:
        return os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | os.O_NOFOLLOW)
    except OSError:
        return None


def _remove_all(place: Path, files: list[tuple[str, int]]) -> list[tuple[Path, int]]:
    return [(place / name, pid) for name, pid in files if _remove_regular(place / name)]


@dataclass(frozen=True)
class FolderReport:
    """What :func:`survey` finds in a folder: partial files and their total size, and how
    many of them a live run holds."""

    count: int
    nbytes: int
    live: int


def survey(folder: str | os.PathLike[str]) -> FolderReport:
    """Count the partial files in ``folder`` (without removing any)."""
    place = Path(os.path.abspath(folder))
    try:
        names = os.listdir(place)
    except OSError:
        return FolderReport(0, 0, 0)
    count = nbytes = live = 0
    for name in names:
        parsed = parse_partial(name)
        if parsed is None:
            continue
        try:
            info = os.lstat(place / name)
        except OSError:
            continue
        if not stat.S_ISREG(info.st_mode):
            continue
        count += 1
        nbytes += info.st_size
        fd = _open_lock(place / _lock_name(parsed[2]))
        if fd is not None:
            try:
                if not _try_lock(fd):
                    live += 1
            finally:
                os.close(fd)
    return FolderReport(count, nbytes, live)
