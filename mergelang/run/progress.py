"""How a run reports progress. The core knows only this protocol; the command line plugs in
a rich progress bar on stderr, and embedding programs may pass their own reporter (or none).

Calls come from the thread that called :func:`mergelang.run` (never from worker threads), in
this order: :meth:`Reporter.phase` starts a phase with its total bytes, :meth:`Reporter.advance`
reports bytes done within it, :meth:`Reporter.note` reports events (a cache hit, an output
written) and :meth:`Reporter.finish` ends the run, also when it fails.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["NullReporter", "Reporter"]


class Reporter(Protocol):
    def phase(self, name: str, total: int, detail: str = "") -> None:
        """A phase begins: ``hashing``, ``statistics`` or ``merging``; ``total`` bytes."""

    def advance(self, done: int, detail: str = "") -> None:
        """``done`` more bytes of the current phase are finished; ``detail`` is the key or
        file being worked on."""

    def note(self, text: str) -> None:
        """Something worth a line of its own (an output written, a cache hit)."""

    def finish(self, ok: bool) -> None:
        """The run is over (``ok`` False when it failed or was interrupted)."""


class NullReporter:
    """Reports nothing."""

    def phase(self, name: str, total: int, detail: str = "") -> None:
        return None

    def advance(self, done: int, detail: str = "") -> None:
        return None

    def note(self, text: str) -> None:
        return None

    def finish(self, ok: bool) -> None:
        return None
