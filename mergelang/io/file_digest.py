"""The digests of a model file, block by block, and a process that computes them on its own.

:class:`BlockDigest` is what every hash of :mod:`mergelang.io.hashing` is made of: the sha256
of the whole file and the sha256 of A1111's legacy window (the 64 KiB at 0x100000), fed the
file's bytes in order.

Run as a script, by path, this module hashes files already open in its parent, which passes
their descriptors (``python -S -I file_digest.py FD...``): a run hashes its new inputs so,
in a process of its own, while it merges. In a thread of the run's own process, the hashing
would wait for Python's interpreter lock before and after every block it reads and hashes,
which the merge's threads hold most of the time: on two cores, measured, a thread hashed a
file three times slower beside a busy interpreter than alone, and a process hashes it at full
speed on the other core. The script imports nothing of mergelang (so the child starts in
about 20 ms, without the package's imports) and reads with ``pread``, never moving the
descriptors' shared offsets. It writes one line per block to its standard output, the count
of bytes just hashed, and after each file ``done SHA256 LEGACY SIZE``; it exits with status 1
(the error on stderr) if a file cannot be read.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
from typing import TextIO

BLOCK_SIZE = 8 * 1024 * 1024
LEGACY_OFFSET = 0x100000
LEGACY_LENGTH = 0x10000


class BlockDigest:
    """The sha256 of the whole file and of its legacy window, fed consecutive blocks."""

    def __init__(self) -> None:
        self.whole = hashlib.sha256()
        self.legacy = hashlib.sha256()
        self.position = 0

    def update(self, chunk: memoryview) -> None:
        """Feed the next ``len(chunk)`` bytes of the file."""
        self.whole.update(chunk)
        low = max(LEGACY_OFFSET, self.position)
        high = min(LEGACY_OFFSET + LEGACY_LENGTH, self.position + len(chunk))
        if low < high:
            self.legacy.update(chunk[low - self.position : high - self.position])
        self.position += len(chunk)

    def hexdigests(self) -> tuple[str, str]:
        """The whole file's and the legacy window's sha256 (hex)."""
        return self.whole.hexdigest(), self.legacy.hexdigest()


def read_at(fd: int, buffer: bytearray, offset: int) -> int:
    """Read into ``buffer`` from ``offset`` without moving the descriptor's position."""
    if hasattr(os, "preadv"):
        return os.preadv(fd, [buffer], offset)
    os.lseek(fd, offset, os.SEEK_SET)  # pragma: no cover - platforms without preadv
    return os.readv(fd, [buffer])  # pragma: no cover


def advise_sequential(fd: int) -> None:
    """Tell the kernel the file will be read from start to end (a larger read-ahead)."""
    if hasattr(os, "posix_fadvise"):
        with contextlib.suppress(OSError):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)


def _hash_descriptor(fd: int, buffer: bytearray, out: TextIO) -> None:
    advise_sequential(fd)
    digest = BlockDigest()
    view = memoryview(buffer)
    while count := read_at(fd, buffer, digest.position):
        digest.update(view[:count])
        out.write(f"{count}\n")
        out.flush()
    whole, legacy = digest.hexdigests()
    out.write(f"done {whole} {legacy} {digest.position}\n")
    out.flush()


def main(argv: list[str]) -> int:
    buffer = bytearray(BLOCK_SIZE)
    try:
        for fd in argv:
            _hash_descriptor(int(fd), buffer, sys.stdout)
    except BrokenPipeError:  # the parent stopped listening (the run was stopped)
        return 1
    except (OSError, ValueError) as exc:
        print(f"cannot hash descriptor {fd}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
