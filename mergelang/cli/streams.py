"""Standard error that a closed pipe cannot turn into a failure.

``mergelang run ... 2>&1 | head`` (or a CI runner that stops reading) closes the pipe
standard error writes to. The run's outputs are still written and committed; only the
progress and the messages are lost. Without this guard the first write after the close
raises ``BrokenPipeError``, which makes a successful run exit 1 (or 120, when Python flushes
standard error at exit). The guard swallows that error and points descriptor 2 at
``/dev/null``, so later writes and the flush at exit succeed silently.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import TextIO

__all__ = ["ClosedPipeTolerant", "tolerate_closed_stderr"]


class ClosedPipeTolerant:
    """A text stream that forwards to ``stream`` and drops what a closed pipe refuses."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.closed_pipe = False
        """Whether the pipe was found closed (everything written since was dropped)."""

    def _closed(self) -> None:
        self.closed_pipe = True
        with contextlib.suppress(OSError, ValueError, AttributeError):
            null = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(null, self._stream.fileno())
            finally:
                os.close(null)

    def write(self, text: str) -> int:
        if self.closed_pipe:
            return len(text)
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._closed()
            return len(text)

    def flush(self) -> None:
        if self.closed_pipe:
            return
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._closed()

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)


@contextlib.contextmanager
def tolerate_closed_stderr() -> Iterator[None]:
    """Run the block with ``sys.stderr`` wrapped in :class:`ClosedPipeTolerant`."""
    original = sys.stderr
    if original is None or isinstance(original, ClosedPipeTolerant):
        yield
        return
    sys.stderr = ClosedPipeTolerant(original)
    try:
        yield
    finally:
        sys.stderr = original
