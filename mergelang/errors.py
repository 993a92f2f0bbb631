"""Errors as structured objects.

Every problem mergelang reports is a :class:`Diagnostic`: a message, an optional location
(path, 1-based line and column, end position), an optional hint and a stable ``code`` that
tests and tools can match on. Exceptions carry lists of diagnostics; they never contain ANSI
escapes. The CLI renders them (with rich, on stderr); :func:`format_diagnostic` gives the
plain-text form ``path:line:col: error: message`` followed by the source line and a caret.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Span:
    """A region of recipe text. Lines and columns are 1-based; ``end_column`` is exclusive."""

    line: int
    column: int
    end_line: int
    end_column: int

    @classmethod
    def point(cls, line: int, column: int) -> Span:
        return cls(line, column, line, column + 1)


@dataclass(frozen=True)
class Diagnostic:
    """One reported problem.

    ``path`` names the recipe or checkpoint file concerned (``None`` for text given without a
    file). ``span`` locates it in a recipe; ``source_line`` is the text of the line it points
    at, kept so the diagnostic can be rendered without the source at hand. ``key`` names the
    tensor concerned when the problem is inside a checkpoint.
    """

    message: str
    code: str
    path: str | None = None
    span: Span | None = None
    hint: str | None = None
    severity: Severity = "error"
    source_line: str | None = None
    key: str | None = None

    @property
    def line(self) -> int | None:
        return self.span.line if self.span else None

    @property
    def column(self) -> int | None:
        return self.span.column if self.span else None

    def location(self) -> str:
        """``path:line:col`` (parts that are unknown are left out)."""
        parts = [self.path or "<recipe>"] if (self.path or self.span) else []
        if self.span is not None:
            parts += [str(self.span.line), str(self.span.column)]
        return ":".join(parts)

    def headline(self) -> str:
        """The first line of the rendered diagnostic: ``path:line:col: error: message``."""
        where = self.location()
        text = f"{self.severity}: {self.message}"
        if self.key is not None:
            text += f" (key {self.key})"
        return printable(f"{where}: {text}" if where else text)


SHOWN_LINE_WIDTH = 160
"""The most characters of a source line shown under a diagnostic; a longer line is cut to a
window around the span, marked with ``...`` at the cut ends."""

_BIDI = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_UNPRINTABLE = re.compile(f"[\\x00-\\x1f\\x7f-\\x9f\\ud800-\\udfff{_BIDI}]")
"""C0 and C1 controls, DEL, lone surrogates and the bidirectional controls."""
_UNPRINTABLE_IN_TEXT = re.compile(f"[\\x00-\\x08\\x0b-\\x1f\\x7f-\\x9f\\ud800-\\udfff{_BIDI}]")
BIDI_CONTROLS = re.compile(f"[{_BIDI}]")
"""The characters that reorder text on screen (U+202E RIGHT-TO-LEFT OVERRIDE and kin)."""


def _escaped(found: re.Match[str]) -> str:
    code = ord(found.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(text: str, *, one_column: bool = False) -> str:
    """``text`` made safe to print on a terminal: C0/C1 controls (tab and newline kept), DEL,
    lone surrogates and bidirectional controls become ``\\x1b`` / ``\\u202e`` escapes.

    Everything mergelang prints that came from a file (metadata values, key names, recipe
    text, diagnostics quoting them) goes through this one function, so a file cannot send
    escape sequences to the terminal or reorder what is shown. ``one_column=True`` puts a
    ``?`` in place of each such character instead (tabs and newlines included), for text
    shown above a caret, whose columns must stay where they are.
    """
    if one_column:
        return _UNPRINTABLE.sub("?", text)
    return _UNPRINTABLE_IN_TEXT.sub(_escaped, text)


def _window(line: str, start: int, width: int) -> tuple[str, int, int]:
    """``line`` cut to at most :data:`SHOWN_LINE_WIDTH` characters around ``start`` (keeping
    some text before it); returns the shown text and the span's start and width in it."""
    if len(line) <= SHOWN_LINE_WIDTH:
        return line, start, width
    budget = SHOWN_LINE_WIDTH - 6  # room for the "..." marks
    before = max((budget - min(width, budget)) // 2, min(start, 20))
    first = max(0, min(start - before, len(line) - budget))
    prefix = "..." if first > 0 else ""
    suffix = "..." if first + budget < len(line) else ""
    offset = start - first
    width = max(1, min(width, budget - offset))
    return prefix + line[first : first + budget] + suffix, offset + len(prefix), width


def caret_lines(diag: Diagnostic) -> list[str]:
    """The source line and a caret row under the span, or nothing if there is no source.

    Control characters in the line are shown as ``?`` (one column each, so the caret stays
    in place and nothing reaches the terminal as a control sequence), and a very long line
    is cut to a window around the span.
    """
    if diag.span is None or diag.source_line is None:
        return []
    line = printable(diag.source_line.rstrip("\n").expandtabs(1), one_column=True)
    start = max(diag.span.column - 1, 0)
    if diag.span.end_line == diag.span.line:
        width = max(diag.span.end_column - diag.span.column, 1)
    else:
        width = max(len(line) - start, 1)
    width = min(width, max(len(line) - start, 1))
    line, start, width = _window(line, start, width)
    gutter = f"{diag.span.line:>4} | "
    return [gutter + line, " " * (len(gutter) - 2) + "| " + " " * start + "^" * width]


def format_diagnostic(diag: Diagnostic) -> str:
    """Plain-text rendering: headline, source line with caret, then the hint."""
    lines = [diag.headline(), *caret_lines(diag)]
    if diag.hint:
        lines.append(f"  hint: {printable(diag.hint)}")
    return "\n".join(lines)


class MergelangError(Exception):
    """Base of every error mergelang raises on bad input. ``exit_code`` is what the CLI returns."""

    exit_code = 1

    def __init__(self, diagnostics: Sequence[Diagnostic]) -> None:
        self.diagnostics: tuple[Diagnostic, ...] = tuple(diagnostics)
        super().__init__(self._summary())

    def _summary(self) -> str:
        return "\n".join(format_diagnostic(d) for d in self.diagnostics)

    @property
    def errors(self) -> tuple[Diagnostic, ...]:
        return tuple(d for d in self.diagnostics if d.severity == "error")


class RecipeError(MergelangError):
    """A recipe that cannot be parsed or checked; holds every diagnostic found in one pass."""


class CheckpointError(MergelangError):
    """A checkpoint file that cannot be used: unreadable, corrupt, unsafe or incompatible."""

    def __init__(
        self,
        path: str,
        message: str,
        *,
        code: str = "checkpoint",
        key: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.path = path
        self.key = key
        self.hint = hint
        self.message = message
        super().__init__([Diagnostic(message, code, path=path, key=key, hint=hint)])


class OutputError(MergelangError):
    """An output that cannot be written (exists, would replace an input, disk full...)."""

    def __init__(self, path: str, message: str, *, code: str = "output", hint: str | None = None):
        self.path = path
        self.message = message
        self.hint = hint
        super().__init__([Diagnostic(message, code, path=path, hint=hint)])


class UsageError(MergelangError):
    """A bad command-line invocation (unknown flag value, malformed ``--set``)."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        super().__init__([Diagnostic(message, "usage", hint=hint)])


def source_lines(source: str) -> list[str]:
    """``source`` cut into lines as the parser counts them: only ``\\n`` ends a line, and a
    ``\\r`` before it is dropped. (:meth:`str.splitlines` would also cut at U+2028, U+2029,
    form feeds, ``\\x1c``..``\\x1e`` and others, so every later line would be quoted under
    the wrong number.) Every diagnostic that quotes a recipe line takes it from here."""
    return [line.removesuffix("\r") for line in source.split("\n")]


def source_line(source: str | None, line: int) -> str | None:
    """Line ``line`` (1-based) of ``source`` as :func:`source_lines` cuts it, or ``None``."""
    if source is None:
        return None
    lines = source_lines(source)
    return lines[line - 1] if 0 < line <= len(lines) else None


@dataclass
class DiagnosticSink:
    """Collects diagnostics during one pass so every problem is reported at once."""

    path: str | None = None
    source: str | None = None
    items: list[Diagnostic] = field(default_factory=list)
    _lines: list[str] | None = field(default=None, init=False, repr=False, compare=False)

    def _line(self, span: Span | None) -> str | None:
        if span is None or self.source is None:
            return None
        if self._lines is None:
            self._lines = source_lines(self.source)
        lines = self._lines
        return lines[span.line - 1] if 0 < span.line <= len(lines) else None

    def error(self, message: str, span: Span | None, *, code: str, hint: str | None = None) -> None:
        self.items.append(
            Diagnostic(message, code, self.path, span, hint, "error", self._line(span))
        )

    def warning(
        self, message: str, span: Span | None, *, code: str, hint: str | None = None
    ) -> None:
        self.items.append(
            Diagnostic(message, code, self.path, span, hint, "warning", self._line(span))
        )

    def extend(self, diagnostics: Iterable[Diagnostic]) -> None:
        self.items.extend(diagnostics)

    @property
    def has_errors(self) -> bool:
        return any(d.severity == "error" for d in self.items)

    def sorted(self) -> list[Diagnostic]:
        return sorted(self.items, key=lambda d: (d.line or 0, d.column or 0))

    def raise_if_errors(self) -> None:
        if self.has_errors:
            raise RecipeError(self.sorted())
