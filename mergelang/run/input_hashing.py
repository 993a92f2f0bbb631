"""Hashing a run's new inputs while the merge streams (:attr:`Plan.hashed_during_run`).

The hashes of an input mergelang has not seen go into every output's metadata, yet need not
hold the merge up: the output headers are written with fixed-width placeholders and filled in
place before the commit. The hashing runs in a thread of its own at the lowest scheduling
priority (``nice`` 19, on Linux, where a thread has a priority of its own), so that it takes
only the CPU time the merge leaves: the merge's worker threads keep their speed, and the
hashing fills the moments they wait on reads, writes and each other. Whatever is left when
the merge is done is hashed by the run's main thread at its normal priority, so a run on a
busy machine finishes its hashes no later than a pass before the merge would have. The work
moves between the two threads only between 8 MiB blocks (:class:`~mergelang.io.hashing.FileHasher`).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable

from mergelang.io.hashing import CachedHasher, FileHashes
from mergelang.plan.plan import Plan

__all__ = ["InputHashing"]

LOWEST_PRIORITY = 19


def lower_this_threads_priority() -> None:
    """Give the calling thread the lowest CPU priority, where threads have their own."""
    if not sys.platform.startswith("linux"):
        return  # elsewhere setpriority would lower the whole process
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOWEST_PRIORITY)


class InputHashing:
    """The plan's inputs to hash during the run; the bytes hashed are counted for the one
    progress bar. :meth:`start` at the merge's start, :meth:`finish` once it is done."""

    def __init__(self, plan: Plan) -> None:
        wanted = set(plan.hashed_during_run)
        self.plan = plan
        self.handles = [h for h in plan.inputs if h.identity in wanted and h.file is not None]
        self.total = sum(h.file.size for h in self.handles if h.file is not None)
        self._hashers: list[tuple[str, CachedHasher]] = []
        self._found: dict[str, FileHashes] = {}
        self._done = 0
        self._reported = 0
        self._lock = threading.Lock()
        self._hand_over = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if not self.handles or self._thread is not None:
            return
        with contextlib.suppress(OSError):  # where the hashes go, as a hash first made it
            self.plan.cache_dir.mkdir(parents=True, exist_ok=True)
        for handle in self.handles:
            assert handle.file is not None
            found = handle.file.hasher(self.plan.cache_dir)
            if isinstance(found, FileHashes):  # hashed by another run meanwhile
                self._found[handle.identity] = found
                self._count(found.size)
            else:
                self._hashers.append((handle.identity, found))
        self._thread = threading.Thread(target=self._run, name="mergelang-hash", daemon=True)
        self._thread.start()

    def _count(self, count: int) -> None:
        with self._lock:
            self._done += count

    def _steps(self, stop: threading.Event | None) -> None:
        """Hash block after block until every input is done (or ``stop`` is set)."""
        for _, hasher in self._hashers:
            while stop is None or not stop.is_set():
                count = hasher.step()
                if not count:
                    break
                self._count(count)

    def _run(self) -> None:
        lower_this_threads_priority()
        try:
            self._steps(self._hand_over)
        except BaseException as exc:  # re-raised in the main thread by finish()
            self._error = exc

    def take_progress(self) -> int:
        """The bytes hashed since the last call."""
        with self._lock:
            new, self._reported = self._done - self._reported, self._done
        return new

    def finish(self, each_block: Callable[[], None]) -> None:
        """Take the hashing over from its thread (after the block it is on) and do the rest
        here, calling ``each_block`` after each block (to report progress; it may raise to
        stop)."""
        self.stop()
        if self._error is not None:
            raise self._error
        for identity, hasher in self._hashers:
            while count := hasher.step():
                self._count(count)
                each_block()
            self._found.setdefault(identity, hasher.finish())
        each_block()

    def stop(self) -> None:
        """Stop the thread after the block it is on."""
        self._hand_over.set()
        if self._thread is not None:
            self._thread.join()

    def result(self) -> dict[str, FileHashes]:
        """The hashes, by input identity, once :meth:`finish` returned."""
        return self._found
