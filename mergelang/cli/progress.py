"""The progress of ``mergelang run`` on stderr: a :class:`~mergelang.run.progress.Reporter` made of
a rich progress bar.

The bar shows the phase (``statistics``, ``merging``), bytes done of the phase's total, the
rate, the time left and the key being worked on. Before the first phase, a spinner can say
what the run is busy with (:meth:`RichReporter.waiting`: planning reads every input's header
and hashes inputs it has not seen, which takes a while for large new files). All of it is
drawn only when enabled (stderr is a terminal and ``--quiet`` was not given); notes (cache
hits, outputs written) are printed above it then, and dropped otherwise, since the run's
summary covers them.
"""

from __future__ import annotations

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

__all__ = ["BAR_WIDTH", "RichReporter"]

BAR_WIDTH = 24
"""Columns of the bar itself; the current key or output gets the rest of the line (cut with
an ellipsis), so the numbers never wrap on a narrow terminal."""


class RichReporter:
    """Reports a run on ``console`` when ``enabled``; does nothing otherwise. As a context
    manager it removes the bar or spinner on the way out, also after an error."""

    def __init__(self, console: Console, enabled: bool) -> None:
        self.console = console
        self.enabled = enabled
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._status: Status | None = None

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
        if self._progress is not None and self._task is not None:
            self._progress.remove_task(self._task)
            self._task = None
        if not self.enabled or total <= 0:
            self._stop_waiting()
            return  # a phase with nothing to do (every output up to date) shows no bar
        progress = self._start()
        self._task = progress.add_task(name, total=total, detail=printable(detail))

    def advance(self, done: int, detail: str = "") -> None:
        if self._progress is None or self._task is None:
            return
        self._progress.update(self._task, advance=done, detail=printable(detail))

    def note(self, text: str) -> None:
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
