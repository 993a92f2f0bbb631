"""The cache folder as a whole: what it holds, checking every object, cleaning it up.

The folder (see :mod:`mergelang.plan.cache`) holds ``objects/<ab>/<address>.safetensors``,
one per cached step, the hash cache ``hashes.json``, and, while runs store objects, their
partial files. :func:`survey` counts it, :func:`verify` recomputes each object's data digest
against the one stored in its header, :func:`clean` removes objects by age or to fit a size,
least recently used first.

**Last use** is the later of an object's modification time (when it was stored) and its
access time (a run reads every hit whole, to check its digest, so the access time moves
where the file system records it: ``relatime``, Linux's default, does at least once a day;
under ``noatime`` the time it was stored is all there is). Nothing is written to an object
when it is used, since a run reading it checks that it did not change.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mergelang.errors import MergelangError
from mergelang.io.hashing import range_sha256
from mergelang.io.partials import is_partial_name, sweep
from mergelang.io.partials import survey as survey_partials
from mergelang.io.safetensors_header import read_safetensors_header
from mergelang.plan.cache import DATA_DIGEST, OBJECTS

__all__ = ["CacheObject", "CacheSurvey", "Verdict", "clean", "objects", "survey", "verify"]


@dataclass(frozen=True)
class CacheObject:
    path: Path
    size: int
    last_use: float
    """Seconds since the epoch (see the module docstring)."""


@dataclass(frozen=True)
class CacheSurvey:
    folder: Path
    objects: tuple[CacheObject, ...]
    partials: int
    partial_bytes: int
    live_partials: int
    other_bytes: int
    """The hash cache and anything else that is not an object or a partial file."""

    @property
    def object_bytes(self) -> int:
        return sum(o.size for o in self.objects)

    @property
    def total_bytes(self) -> int:
        return self.object_bytes + self.partial_bytes + self.other_bytes


def _object_folders(folder: Path) -> list[Path]:
    root = folder / OBJECTS
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return []
    return [root / n for n in names if (root / n).is_dir() and not (root / n).is_symlink()]


def objects(folder: Path) -> Iterator[CacheObject]:
    """Every object of the cache folder (regular ``*.safetensors`` files, partials left out)."""
    for place in _object_folders(folder):
        with contextlib.suppress(OSError):
            for name in sorted(os.listdir(place)):
                if is_partial_name(name) or not name.endswith(".safetensors"):
                    continue
                try:
                    info = os.lstat(place / name)
                except OSError:
                    continue
                if stat.S_ISREG(info.st_mode):
                    used = max(info.st_mtime, info.st_atime)
                    yield CacheObject(place / name, info.st_size, used)


def survey(folder: Path) -> CacheSurvey:
    """What the cache folder holds."""
    found = tuple(objects(folder))
    partials = nbytes = live = 0
    for place in _object_folders(folder):
        report = survey_partials(place)
        partials, nbytes, live = (
            partials + report.count,
            nbytes + report.nbytes,
            live + report.live,
        )
    other = 0
    with contextlib.suppress(OSError):
        for name in os.listdir(folder):
            path = folder / name
            if name != OBJECTS and path.is_file() and not path.is_symlink():
                other += path.stat().st_size
    return CacheSurvey(folder, found, partials, nbytes, live, other)


@dataclass(frozen=True)
class Verdict:
    path: Path
    problem: str | None
    """``None`` when the object is intact."""


def check_object(path: Path) -> str | None:
    """What is wrong with a cached object, or ``None``: its header must be valid and record
    a digest, and its data must have that sha256."""
    try:
        header = read_safetensors_header(path)
    except MergelangError as exc:
        return exc.diagnostics[0].message if exc.diagnostics else "unreadable"
    recorded = header.metadata.get(DATA_DIGEST)
    if recorded is None or len(recorded) != 64:
        return "it records no data digest"
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            found = range_sha256(handle.fileno(), header.data_offset, size)
    except OSError as exc:
        return f"cannot read it ({exc.strerror or exc})"
    if found != recorded:
        return "its data does not match the digest stored with it"
    return None


def verify(folder: Path, *, delete: bool = False) -> list[Verdict]:
    """Each object's verdict; ``delete`` removes the bad ones."""
    verdicts: list[Verdict] = []
    for item in objects(folder):
        problem = check_object(item.path)
        if problem is not None and delete:
            with contextlib.suppress(OSError):
                os.unlink(item.path)
        verdicts.append(Verdict(item.path, problem))
    return verdicts


def clean(
    folder: Path,
    *,
    older_than: float | None = None,
    max_size: int | None = None,
    everything: bool = False,
    now: float,
) -> tuple[list[CacheObject], list[tuple[Path, int]]]:
    """Remove objects last used more than ``older_than`` seconds before ``now``, then the
    least recently used until the objects fit in ``max_size`` bytes (``everything``: all of
    them), and every partial file no live run holds. Returns the objects and partial files
    removed."""
    swept: list[tuple[Path, int]] = []
    for place in _object_folders(folder):
        swept += sweep(place)
    found = sorted(objects(folder), key=lambda o: (o.last_use, str(o.path)))
    doomed: list[CacheObject] = []
    kept: list[CacheObject] = []
    for item in found:
        old = older_than is not None and now - item.last_use > older_than
        (doomed if everything or old else kept).append(item)
    if max_size is not None:
        total = sum(o.size for o in kept)
        while kept and total > max_size:
            item = kept.pop(0)
            total -= item.size
            doomed.append(item)
    removed: list[CacheObject] = []
    for item in doomed:
        try:
            os.unlink(item.path)
        except OSError:
            continue
        removed.append(item)
    return removed, swept
