"""How a run's outputs appear together: the commit phase, and cache stores that may fail.

A run's commit has three steps (:func:`commit_all`):

1. **Prepare.** Every output is finished on disk under its temporary name: the rest of its
   bytes written (a ``.ckpt`` or GGUF output is serialised now), flushed and ``fsync``-ed.
   A full disk, or any other write error, fails the run here, before anything is renamed.
2. **Check.** The caller re-checks every input's identity (``input-changed``), then every
   target is checked again (a name another run took meanwhile, a folder now in the way).
3. **Publish.** Only then are the files renamed into place, one after the other, with
   SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 held (:func:`signals_held`): a
   signal arriving meanwhile takes effect once every rename is done, so a run is never stopped
   between two renames by a signal. The folders are ``fsync``-ed at the end.

The renames of several files cannot be one atomic step. What is guaranteed, and what is not,
is in ``docs/io.md`` ("The atomic-write policy"): in short, only ``SIGKILL``, a crash or a
power cut during the few milliseconds of step 3 can leave some outputs in place and the
others as complete temporary files.

A :class:`CacheStore` wraps the sink of a cached step's object: the cache is an aid, so a
cache folder that cannot be written (read-only, a file where a folder should be, a full
disk) never fails the run; the store is dropped and one warning says why.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from mergelang.errors import Diagnostic, MergelangError
from mergelang.io.writer import SafetensorsWriter

if TYPE_CHECKING:
    import torch

    from mergelang.io.sinks import Sink

__all__ = ["HELD_SIGNALS", "CacheStore", "cache_warning", "signals_held"]

HELD_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name)
    for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")
    if hasattr(signal, name)
)
"""The signals held back while outputs are renamed into place."""

Handler = Callable[[int, FrameType | None], object] | int | signal.Handlers | None


@contextlib.contextmanager
def signals_held() -> Iterator[list[int]]:
    """Hold :data:`HELD_SIGNALS` for the ``with`` block: each that arrives is noted, and
    delivered again, to the handler that was in place, when the block ends. Python runs
    signal handlers in the main thread only, so replacing the handlers there holds them
    whichever thread the system delivered them to. In another thread (no handler can be
    replaced there) nothing is held."""
    caught: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return

    def note(signum: int, frame: FrameType | None) -> None:
        caught.append(signum)

    previous: dict[signal.Signals, Handler] = {}
    try:
        for held in HELD_SIGNALS:
            previous[held] = signal.signal(held, note)
        yield caught
    finally:
        for held, handler in previous.items():
            signal.signal(held, signal.SIG_DFL if handler is None else handler)
        for signum in dict.fromkeys(caught):
            signal.raise_signal(signum)


def cache_warning(cache_dir: Path, reason: str) -> Diagnostic:
    """The one warning of a run whose cache objects could not be stored."""
    return Diagnostic(
        f"cache not written: {reason}; use --no-cache to silence",
        "cache-not-written",
        str(cache_dir),
        severity="warning",
    )


class CacheStore:
    """A cached step's sink that fails softly: the first error (an
    :class:`~mergelang.errors.MergelangError` or :class:`OSError`) aborts the inner sink and
    is kept in :attr:`failure`; every later call does nothing. :attr:`stored` says whether
    the object was moved into place."""

    def __init__(self, inner: Sink) -> None:
        self.inner: Sink | None = inner
        self.failure: str | None = None
        self.stored = False

    def fail(self, exc: BaseException) -> None:
        if self.failure is None:
            self.failure = _reason(exc)
        if self.inner is not None:
            with contextlib.suppress(Exception):
                self.inner.abort()
        self.inner = None

    def fill_digest(self, meta_key: str) -> None:
        """Fill ``meta_key``, written as a placeholder, with the sha256 of the data."""
        inner = self.inner
        if inner is None:
            return
        if not isinstance(inner, SafetensorsWriter):
            raise TypeError("a cached object is a safetensors file")
        try:
            inner.fill_placeholder(meta_key, inner.data_sha256())
        except (MergelangError, OSError) as exc:
            self.fail(exc)

    def write_part(self, key: str, element_offset: int, tensor: torch.Tensor) -> None:
        if self.inner is None:
            return
        try:
            self.inner.write_part(key, element_offset, tensor)
        except (MergelangError, OSError) as exc:
            self.fail(exc)

    def prepare(self) -> None:
        if self.inner is None:
            return
        try:
            self.inner.prepare()
        except (MergelangError, OSError) as exc:
            self.fail(exc)

    def check(self) -> None:
        if self.inner is None:
            return
        try:
            self.inner.check()
        except (MergelangError, OSError) as exc:
            self.fail(exc)

    def publish(self, *, sync_folder: bool = True) -> Path | None:
        if self.inner is None:
            return None
        try:
            written = self.inner.publish(sync_folder=sync_folder)
        except (MergelangError, OSError) as exc:
            self.fail(exc)
            return None
        self.stored = True
        return written

    def commit(self) -> Path | None:
        self.prepare()
        return self.publish()

    def abort(self) -> None:
        if self.inner is not None:
            self.inner.abort()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, MergelangError) and exc.diagnostics:
        first = exc.diagnostics[0]
        where = f"{first.path}: " if first.path else ""
        return where + first.message
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return where + (exc.strerror or str(exc))
    return str(exc)
