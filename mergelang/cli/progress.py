"""The progress of ``mergelang run`` on stderr: a :class:`~mergelang.run.progress.Reporter` made of
a rich progress bar.

The bar shows the phase (``hashing``, ``statistics``, ``merging``), bytes done of the phase's
total, the rate, the time left and the key or file being worked on. Inputs new to the hash
cache are hashed while the merge streams when every output is a plain safetensors file;
otherwise (another format, a cached step, an existing output to compare) planning hashes
them first, as the ``hashing`` phase. Before the first phase, a spinner can say what the run
is busy with (:meth:`RichReporter.waiting`: planning reads every input's header). All of it is
drawn only when enabled (stderr is a terminal and ``--quiet`` was not given); notes (cache
hits) are printed above it then, and dropped otherwise, since the run's summary covers them.
The outputs are listed once, by the summary.

When stderr is not a terminal (a log file, CI), ``log_every`` seconds apart a plain line says
that the run is alive: the phase, the bytes done of its total, the rate and the time left::

    merging: 1.2 GB of 6.9 GB (17%), 210.4 MB/s, about 27 s left
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Column

from mergelang.errors import printable

if TYPE_CHECKING:
    from types import TracebackType

    from rich.console import Console
    from rich.status import Status

__all__ = ["BAR_WIDTH", "LOG_SECONDS", "RichReporter", "log_line"]

OUTPUT_NOTES = ("written ", "up-to-date ", "memory ")
"""How the notes of outputs begin: not printed, as the run's summary lists each output."""

LOG_SECONDS = 5.0
"""How often a run whose stderr is not a terminal prints its progress line."""

BAR_WIDTH = 24
"""Columns of the bar itself; the current key or output gets the rest of the line (cut with
an ellipsis), so the numbers never wrap on a narrow terminal."""


class RichReporter:
    """Reports a run on ``console`` when ``enabled``; does nothing otherwise. As a context
    manager it removes the bar or spinner on the way out, also after an error."""

    def __init__(self, console: Console, enabled: bool, log_every: float | None = None) -> None:
        self.console = console
        self.enabled = enabled
        self.log_every = None if enabled else log_every
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._status: Status | None = None
        self._phase = ""
        self._total = 0
        self._done = 0
        self._started = 0.0
        self._logged = 0.0

    def _log_phase(self, name: str, total: int) -> None:
        now = time.monotonic()
        self._phase, self._total, self._done = name, total, 0
        self._started = self._logged = now

    def _log_advance(self, done: int) -> None:
        if self.log_every is None or self._total <= 0:
            return
        self._done += done
        now = time.monotonic()
        if now - self._logged < self.log_every:
            return
        self._logged = now
        line = log_line(self._phase, self._done, self._total, now - self._started)
        self.console.print(escape(line), highlight=False)

    def waiting(self, text: str) -> None:
        """Show ``text`` with a spinner until the first phase, note or the end."""
        if not self.enabled or self._progress is not None:
            return
        self._stop_waiting()
        self._status = self.console.status(escape(printable(text)))
        self._status.start()

    def _stop_waiting(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    def _start(self) -> Progress:
        self._stop_waiting()
        if self._progress is None:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(bar_width=BAR_WIDTH),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                TextColumn(
                    "{task.fields[detail]}",
                    markup=False,
                    style="dim",
                    table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1),
                ),
                console=self.console,
                transient=True,
                redirect_stdout=False,
                expand=True,
            )
            self._progress.start()
        return self._progress

    def phase(self, name: str, total: int, detail: str = "") -> None:
        self._log_phase(name, total)
        if self._progress is not None and self._task is not None:
            self._progress.remove_task(self._task)
            self._task = None
        if not self.enabled or total <= 0:
            self._stop_waiting()
            return  # a phase with nothing to do (every output up to date) shows no bar
        progress = self._start()
        self._task = progress.add_task(name, total=total, detail=printable(detail))

    def advance(self, done: int, detail: str = "") -> None:
        self._log_advance(done)
        if self._progress is None or self._task is None:
            return
        self._progress.update(self._task, advance=done, detail=printable(detail))

    def note(self, text: str) -> None:
        if text.startswith(OUTPUT_NOTES):
            return  # the summary lists every output, once
        if self.enabled:
            self._stop_waiting()
            self.console.print(escape(printable(text)))

    def __enter__(self) -> RichReporter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def finish(self, ok: bool) -> None:
        self.close()

    def close(self) -> None:
        """Remove the bar or spinner from the screen (safe to call more than once)."""
        self._stop_waiting()
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._task = None


def log_line(phase: str, done: int, total: int, seconds: float) -> str:
    """``merging: 1.2 GB of 6.9 GB (17%), 210.4 MB/s, about 27 s left``."""
    from mergelang.plan.text import human_bytes

    rate = done / seconds if seconds > 0 else 0.0
    percent = 100 * done // total if total else 100
    line = f"{phase}: {human_bytes(done)} of {human_bytes(total)} ({percent}%)"
    if rate > 0:
        left = max(total - done, 0) / rate
        line += f", {human_bytes(rate)}/s, about {left:.0f} s left"
    return line
