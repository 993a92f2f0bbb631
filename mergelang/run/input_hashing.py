"""Hashing a run's new inputs while the run starts up and merges (:attr:`Plan.hashed_during_run`).

The hashes of an input mergelang has not seen go into every output's metadata, yet need not
hold the merge up: the output headers are written with fixed-width placeholders and filled in
place before the commit. What keeps the hashing off the merge's path:

- It starts as soon as the plan is made, before the executor imports torch (about a second
  of one core that nothing else uses, see :func:`mergelang.api.run`).
- Each file is hashed by a child process (:mod:`mergelang.io.file_digest`, run as a script,
  given the run's own open descriptor), not by a thread: a thread would wait for the
  interpreter's lock around every block, which the merge holds most of the time (measured:
  three times slower beside a busy interpreter). While the merge runs, as many children run
  at once as there are cores beyond the merge's worker threads (at least one); once the merge
  is done, one per core. They run at normal priority: the kernel shares the cores between
  them and the merge, so on a busy machine the hashes cost no more than a pass before the
  merge would have.
- Where no child can be started (no interpreter to start, a frozen application, a platform
  without descriptor passing) or a child fails, the file is hashed in this process once the
  merge is done, in threads, one per core (a file that cannot be read then fails there with
  the usual error).

Every hash goes into the hash cache when its file was unchanged from before the first block
to after the last (:class:`~mergelang.io.hashing.CachedHasher`).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mergelang.io import file_digest
from mergelang.io.hashing import CachedHasher, FileHashes
from mergelang.plan.plan import Plan

__all__ = ["InputHashing", "usable_cores"]

REPORT_EVERY_S = 0.1
"""How often the main thread reports progress while it waits for the last hashes."""


def usable_cores() -> int:
    """The CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)  # pragma: no cover - platforms without affinity


def can_start_children() -> bool:
    """Whether a child interpreter can be started and handed a descriptor."""
    return os.name == "posix" and bool(sys.executable) and not getattr(sys, "frozen", False)


@dataclass(eq=False)
class _Job:
    """One input to hash, and how far it got."""

    identity: str
    cached: CachedHasher
    counted: int = 0
    """Bytes already reported for this file (by a child, then by the fallback)."""
    hashes: FileHashes | None = None
    child: subprocess.Popen[str] | None = field(default=None, repr=False)


class InputHashing:
    """The plan's inputs to hash during the run; the bytes hashed are counted for the one
    progress bar. :meth:`start` once the plan is made, :meth:`finish` once the merge is
    done (or :meth:`stop` when the run fails)."""

    def __init__(self, plan: Plan, *, processes: bool | None = None) -> None:
        wanted = set(plan.hashed_during_run)
        self.plan = plan
        self.handles = [h for h in plan.inputs if h.identity in wanted and h.file is not None]
        self.total = sum(h.file.size for h in self.handles if h.file is not None)
        self.processes = can_start_children() if processes is None else processes
        self._jobs: list[_Job] = []
        self._waiting: list[_Job] = []
        self._readers: list[threading.Thread] = []
        self._found: dict[str, FileHashes] = {}
        self._limit = 0
        self._done = 0
        self._reported = 0
        self._lock = threading.Lock()
        self._stopped = False
        self._started = False

    def start(self) -> None:
        """Start hashing in child processes (once; no-op after)."""
        if not self.handles or self._started:
            return
        self._started = True
        with contextlib.suppress(OSError):  # where the hashes go, as a hash first made it
            self.plan.cache_dir.mkdir(parents=True, exist_ok=True)
        for handle in self.handles:
            assert handle.file is not None
            found = handle.file.hasher(self.plan.cache_dir)
            if isinstance(found, FileHashes):  # hashed by another run meanwhile
                self._found[handle.identity] = found
                self._count(found.size)
            else:
                self._jobs.append(_Job(handle.identity, found))
        self._waiting = list(self._jobs)
        self._launch(max(1, usable_cores() - self.plan.workers))

    # -- children

    def _launch(self, limit: int) -> None:
        """Start children until ``limit`` run at once or no file waits."""
        if not self.processes:
            return
        with self._lock:
            self._limit = max(self._limit, limit)
            while not self._stopped and self._waiting and self._running() < self._limit:
                job = self._waiting.pop(0)
                try:
                    job.child = _spawn(job.cached)
                except OSError:
                    continue  # hashed here once the merge is done
                reader = threading.Thread(
                    target=self._read_child, args=(job,), name="mergelang-hash", daemon=True
                )
                self._readers.append(reader)
                reader.start()

    def _running(self) -> int:
        return sum(1 for j in self._jobs if j.child is not None and j.child.returncode is None)

    def _read_child(self, job: _Job) -> None:
        """Follow one child's lines: progress, then its digests; then start the next."""
        child = job.child
        assert child is not None and child.stdout is not None
        done: list[str] = []
        with contextlib.suppress(OSError, ValueError):
            for line in child.stdout:
                if line.startswith("done "):
                    done = line.split()
                else:
                    self._count_job(job, job.counted + int(line))
        child.wait()
        with contextlib.suppress(OSError):
            child.stdout.close()
        size = job.cached.size
        if child.returncode == 0 and len(done) == 4 and int(done[3]) == size:
            job.hashes = FileHashes.from_digests(done[1], done[2], size)
        self._launch(0)  # else hashed here once the merge is done

    # -- progress

    def _count(self, count: int) -> None:
        with self._lock:
            self._done += count

    def _count_job(self, job: _Job, position: int) -> None:
        """The file is hashed up to ``position``: count what was not counted yet."""
        if position > job.counted:
            self._count(position - job.counted)
            job.counted = position

    def take_progress(self) -> int:
        """The bytes hashed since the last call."""
        with self._lock:
            new, self._reported = self._done - self._reported, self._done
        return new

    # -- the end

    def finish(self, each_report: Callable[[], None]) -> None:
        """Wait for the hashes, one child per core from now on (the files no child could
        hash are hashed here), calling ``each_report`` every tenth of a second from this
        thread (to report progress; it may raise to stop the hashing)."""
        self.start()
        try:
            self._launch(usable_cores())
            _wait_reporting(self._readers, each_report)
            self._hash_here([j for j in self._jobs if j.hashes is None], each_report)
        except BaseException:
            self.stop()
            raise
        for job in self._jobs:
            assert job.hashes is not None
            self._found.setdefault(job.identity, job.cached.store(job.hashes))
        each_report()

    def _hash_here(self, jobs: list[_Job], each_report: Callable[[], None]) -> None:
        """Hash ``jobs`` in this process, in threads, one per core and file."""
        if not jobs:
            return
        errors: list[BaseException] = []
        queue = list(jobs)
        halt = threading.Event()

        def work() -> None:
            try:
                while not halt.is_set():
                    with self._lock:
                        if not queue:
                            return
                        job = queue.pop(0)
                    while not halt.is_set() and job.cached.step():
                        self._count_job(job, job.cached.position)
                    if not halt.is_set():
                        job.hashes = job.cached.digests()
            except BaseException as exc:  # re-raised below, in this thread
                errors.append(exc)
                halt.set()

        count = min(len(jobs), usable_cores())
        threads = [threading.Thread(target=work, daemon=True) for _ in range(count)]
        for thread in threads:
            thread.start()
        try:
            _wait_reporting(threads, each_report)
        finally:
            halt.set()
            for thread in threads:
                thread.join()
        if errors:
            raise errors[0]

    def stop(self) -> None:
        """Stop the hashing: end every child and wait for its reader."""
        with self._lock:
            self._stopped = True
            children = [j.child for j in self._jobs if j.child is not None]
        for child in children:
            if child.returncode is None:
                with contextlib.suppress(OSError):
                    child.kill()
        for reader in self._readers:
            reader.join()

    def result(self) -> dict[str, FileHashes]:
        """The hashes, by input identity, once :meth:`finish` returned."""
        return self._found


def _wait_reporting(threads: list[threading.Thread], each_report: Callable[[], None]) -> None:
    """Wait until every thread of ``threads`` (a list that may grow meanwhile) has ended,
    calling ``each_report`` every :data:`REPORT_EVERY_S` seconds."""
    while alive := [thread for thread in threads if thread.is_alive()]:
        alive[0].join(REPORT_EVERY_S)
        each_report()


CHILD_SCRIPT = Path(file_digest.__file__)


def _spawn(cached: CachedHasher) -> subprocess.Popen[str]:
    """A child interpreter hashing ``cached``'s open file (its descriptor passed as is)."""
    fd = cached.file.fileno()
    return subprocess.Popen(
        [sys.executable, "-S", "-I", str(CHILD_SCRIPT), str(fd)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        pass_fds=(fd,),
        text=True,
        bufsize=1,
    )
