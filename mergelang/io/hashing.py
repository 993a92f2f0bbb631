"""Model hashes as the web UIs compute them, with an on-disk cache.

- ``sha256``: of the whole file (hex).
- ``autov2``: the first 10 hex digits of ``sha256`` (A1111's "AutoV2" model hash).
- ``legacy``: the first 8 hex digits of the sha256 of the 64 KiB at offset 0x100000 (A1111's
  old model hash). For a file shorter than 0x110000 bytes it is the hash of whatever lies
  past 0x100000 (possibly nothing: the sha256 of no bytes), which is what A1111's seek-and-read
  gives too.

Hashing a 7 GB model takes a while, so results are cached in ``<cache dir>/hashes.json``,
keyed by the file's resolved path and checked against its identity (:class:`FileIdentity`:
device, inode, size, modification and change times in ns): any change to the file
invalidates its entry, an in-place edit that keeps the size and the modification time
(``cp -p``, ``rsync --inplace -t``) too, since it cannot keep the change time. The cache
file is replaced atomically; a corrupt or unreadable one is ignored and rewritten; failing to
write it never fails a run.
The cache folder is ``$MERGELANG_CACHE``, else ``$XDG_CACHE_HOME/mergelang``, else
``~/.cache/mergelang`` (:func:`default_cache_dir`).

Given ``file``, an input already open, the hashes are those of that open file: it is read
(with ``pread``) and fingerprinted (``fstat``) through its descriptor, never reopened by name,
so they describe the bytes a run reads even if the name now leads to another file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from io import BufferedReader
from pathlib import Path

from mergelang.io.file_digest import (
    BLOCK_SIZE,
    LEGACY_LENGTH,
    LEGACY_OFFSET,
    BlockDigest,
    advise_sequential,
    read_at,
)
from mergelang.io.safetensors_header import open_regular_file

__all__ = [
    "BLOCK_SIZE",
    "CACHE_FILE",
    "LEGACY_LENGTH",
    "LEGACY_OFFSET",
    "CachedHasher",
    "FileHasher",
    "FileHashes",
    "FileIdentity",
    "Progress",
    "compute_hashes",
    "default_cache_dir",
    "file_hashes",
    "known_hashes",
    "load_cache",
    "range_sha256",
]

CACHE_FILE = "hashes.json"
CACHE_FORMAT = 2
"""Version 2 keys entries on the whole :class:`FileIdentity`; version 1 entries (no device,
no change time) are ignored."""


@dataclass(frozen=True)
class FileIdentity:
    """What tells one state of a file from another without reading it: a file replaced
    (another device or inode) or written to (size, modification or change time) differs."""

    device: int
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileIdentity:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    @classmethod
    def of_file(cls, file: BufferedReader) -> FileIdentity:
        return cls.of(os.fstat(file.fileno()))

    def fields(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    def differences(self, other: FileIdentity) -> list[str]:
        """The fields that differ, by name (``size 10 -> 8``)."""
        found = []
        for name, value in self.fields().items():
            now = getattr(other, name)
            if now != value:
                found.append(f"{name} {value} -> {now}")
        return found


@dataclass(frozen=True)
class FileHashes:
    sha256: str
    autov2: str
    legacy: str
    size: int

    @classmethod
    def from_digests(cls, sha256: str, legacy_sha256: str, size: int) -> FileHashes:
        return cls(sha256, sha256[:10], legacy_sha256[:8], size)


def default_cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$MERGELANG_CACHE``, else ``$XDG_CACHE_HOME/mergelang``, else ``~/.cache/mergelang``."""
    environ = os.environ if env is None else env
    explicit = environ.get("MERGELANG_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "mergelang"
    return Path.home() / ".cache" / "mergelang"


Progress = Callable[[int], None]
"""Told the number of bytes hashed after each block."""


def compute_hashes(
    path: str | os.PathLike[str],
    *,
    file: BufferedReader | None = None,
    progress: Progress | None = None,
) -> FileHashes:
    """Read the file once, in 8 MiB blocks, and compute every hash (no cache). ``file``:
    the file already open (read from its start with ``pread``; ``path`` is not opened)."""
    if file is not None:
        return _digest(file, progress)
    with open_regular_file(Path(path)) as (handle, _):
        return _digest(handle, progress)


def _digest(file: BufferedReader, progress: Progress | None = None) -> FileHashes:
    hasher = FileHasher(file)
    while count := hasher.step():
        if progress is not None:
            progress(count)
    return hasher.digests()


class FileHasher:
    """The hashes of one open file, computed a block at a time: :meth:`step` hashes the next
    block and says how many bytes it read (0 at the end). Computed in steps, the work can
    move from one thread to another between blocks; the caller makes sure two threads never
    step one hasher at once."""

    def __init__(self, file: BufferedReader) -> None:
        self._fd = file.fileno()
        advise_sequential(self._fd)
        self._digest = BlockDigest()
        self._buffer = bytearray(BLOCK_SIZE)
        self.done = False

    @property
    def position(self) -> int:
        """The bytes hashed so far."""
        return self._digest.position

    def step(self) -> int:
        if self.done:
            return 0
        count = read_at(self._fd, self._buffer, self.position)
        if not count:
            self.done = True
            return 0
        self._digest.update(memoryview(self._buffer)[:count])
        return count

    def digests(self) -> FileHashes:
        """The hashes, once :meth:`step` has returned 0 (the rest is hashed first if not)."""
        while self.step():
            pass
        whole, legacy = self._digest.hexdigests()
        return FileHashes.from_digests(whole, legacy, self.position)


def range_sha256(fd: int, start: int, end: int) -> str:
    """The sha256 (hex) of bytes ``start:end`` of ``fd``, read with ``pread``; raises
    ``OSError`` if the file ends before ``end``."""
    digest = hashlib.sha256()
    buffer = bytearray(BLOCK_SIZE)
    view = memoryview(buffer)
    position = start
    while position < end:
        count = read_at(fd, buffer, position)
        if not count:
            raise OSError(f"the file ends at byte {position}, before byte {end}")
        count = min(count, end - position)
        digest.update(view[:count])
        position += count
    return digest.hexdigest()


def _cache_key(path: Path) -> str:
    return os.path.realpath(path)


def _fingerprint(st: os.stat_result) -> dict[str, int]:
    return FileIdentity.of(st).fields()


def load_cache(cache_dir: Path) -> dict[str, dict[str, object]]:
    """The cache's entries; empty when the file is missing, unreadable or corrupt."""
    try:
        document = json.loads((cache_dir / CACHE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(document, dict) or document.get("format") != CACHE_FORMAT:
        return {}
    files = document.get("files")
    if not isinstance(files, dict):
        return {}
    return {k: v for k, v in files.items() if isinstance(k, str) and isinstance(v, dict)}


def _store(cache_dir: Path, key: str, entry: dict[str, object]) -> None:
    """Add one entry, re-reading the file first so other processes' entries survive."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        files = load_cache(cache_dir)
        files[key] = entry
        document = {"format": CACHE_FORMAT, "files": files}
        temp = cache_dir / f".{CACHE_FILE}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
        try:
            temp.write_text(json.dumps(document, indent=1, sort_keys=True), encoding="utf-8")
            os.replace(temp, cache_dir / CACHE_FILE)
        finally:
            if temp.exists():
                temp.unlink()
    except OSError:
        return


def _store_if_unchanged(
    cache_dir: Path,
    key: str,
    before: dict[str, int],
    after: dict[str, int],
    hashes: FileHashes,
) -> None:
    """Cache ``hashes`` under ``key`` if the file's fingerprint taken before the first block
    equals the one taken after the last (a file written to meanwhile is not cached)."""
    if after == before:
        _store(cache_dir, key, {**after, "sha256": hashes.sha256, "legacy": hashes.legacy})


def _cached(entry: object, fingerprint: dict[str, int]) -> FileHashes | None:
    if not isinstance(entry, dict):
        return None
    if any(entry.get(name) != value for name, value in fingerprint.items()):
        return None
    sha256, legacy = entry.get("sha256"), entry.get("legacy")
    if not isinstance(sha256, str) or not isinstance(legacy, str) or len(sha256) != 64:
        return None
    return FileHashes(sha256, sha256[:10], legacy, fingerprint["size"])


def _stat(path: Path, file: BufferedReader | None) -> os.stat_result:
    return os.stat(path) if file is None else os.fstat(file.fileno())


def known_hashes(
    path: str | os.PathLike[str],
    *,
    cache_dir: Path | None = None,
    file: BufferedReader | None = None,
) -> FileHashes | None:
    """The cached hashes of ``path`` (or of ``file``, that path open) if the file is
    unchanged since they were computed, else ``None``; never reads the file's content."""
    where = Path(path)
    folder = default_cache_dir() if cache_dir is None else cache_dir
    try:
        now = _fingerprint(_stat(where, file))
    except OSError:
        return None
    return _cached(load_cache(folder).get(_cache_key(where)), now)


class CachedHasher:
    """The hashes of one open file, to go into the hash cache when done: the file's identity
    is taken before the first block and checked after the last, and the entry is stored only
    if they agree (a file written to meanwhile is not cached). They are computed here
    (:meth:`step`, :meth:`finish`) or elsewhere and handed to :meth:`store` (a run hashes in
    a process of its own, see :mod:`mergelang.run.input_hashing`)."""

    def __init__(self, path: Path, file: BufferedReader, cache_dir: Path) -> None:
        self._key = _cache_key(path)
        self.file = file
        self._folder = cache_dir
        self._before = _fingerprint(os.fstat(file.fileno()))
        self._hasher: FileHasher | None = None

    @property
    def size(self) -> int:
        return self._before["size"]

    @property
    def position(self) -> int:
        """The bytes hashed here so far."""
        return 0 if self._hasher is None else self._hasher.position

    def step(self) -> int:
        """Hash the next block here; the bytes read (0 at the end)."""
        if self._hasher is None:
            self._hasher = FileHasher(self.file)
        return self._hasher.step()

    def digests(self) -> FileHashes:
        """The hashes, the rest of the file hashed here (not stored)."""
        if self._hasher is None:
            self._hasher = FileHasher(self.file)
        return self._hasher.digests()

    def finish(self) -> FileHashes:
        """The hashes, the rest of the file hashed here, stored in the cache."""
        return self.store(self.digests())

    def store(self, hashes: FileHashes) -> FileHashes:
        """Put ``hashes`` (of this file, however computed) into the cache if the file is
        unchanged since this hasher was made; returns them."""
        with contextlib.suppress(OSError):
            after = _fingerprint(os.fstat(self.file.fileno()))
            _store_if_unchanged(self._folder, self._key, self._before, after, hashes)
        return hashes


def file_hashes(
    path: str | os.PathLike[str],
    *,
    cache_dir: Path | None = None,
    use_cache: bool = True,
    file: BufferedReader | None = None,
    progress: Progress | None = None,
) -> FileHashes:
    """The hashes of ``path``, from the cache when the file is unchanged since last time.

    ``cache_dir`` defaults to :func:`default_cache_dir`; ``use_cache=False`` always reads the
    file and leaves the cache alone. ``file``: the file already open (see the module
    docstring).
    """
    where = Path(path)
    if not use_cache:
        return compute_hashes(where, file=file, progress=progress)
    folder = default_cache_dir() if cache_dir is None else cache_dir
    key = _cache_key(where)
    try:
        before = _fingerprint(_stat(where, file))
    except OSError:
        return compute_hashes(where, file=file)  # reports the problem with the path
    hit = _cached(load_cache(folder).get(key), before)
    if hit is not None:
        return hit
    hashes = compute_hashes(where, file=file, progress=progress)
    with contextlib.suppress(OSError):
        after = _fingerprint(_stat(where, file))
        _store_if_unchanged(folder, key, before, after, hashes)
    return hashes
