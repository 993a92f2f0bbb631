"""Where the checker's diagnostics go: every one kept, the check stopped at too many.

:class:`CheckerSink` is a :class:`~mergelang.errors.DiagnosticSink` that raises
:class:`TooManyErrors` at :data:`~mergelang.lang.syntax_errors.MAX_ERRORS` distinct errors;
:func:`deduplicate` drops the repeats a loop body makes (one per iteration).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mergelang.errors import Diagnostic, DiagnosticSink, Span
from mergelang.lang.syntax_errors import MAX_ERRORS

__all__ = ["CheckerSink", "TooManyErrors", "deduplicate"]


class TooManyErrors(Exception):
    """Raised by :class:`CheckerSink` at :data:`~mergelang.lang.syntax_errors.MAX_ERRORS`
    distinct errors: the check stops there."""


@dataclass
class CheckerSink(DiagnosticSink):
    """A :class:`DiagnosticSink` that ends the check at ``MAX_ERRORS`` distinct errors (a loop
    body's error found at every iteration counts once), so a recipe with thousands of
    mistakes is not checked, and reported, for minutes."""

    distinct: set[tuple[str, str, Span | None]] = field(default_factory=set, repr=False)

    def error(self, message: str, span: Span | None, *, code: str, hint: str | None = None) -> None:
        super().error(message, span, code=code, hint=hint)
        self.distinct.add((code, message, span))
        if len(self.distinct) >= MAX_ERRORS:
            raise TooManyErrors

    def source_line(self, span: Span) -> str | None:
        """The text of the recipe line ``span`` starts on."""
        return self._line(span)


def deduplicate(diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    """A problem inside a loop body is found once per iteration: report it once."""
    seen: set[tuple[str, str, Span | None, str]] = set()
    unique: list[Diagnostic] = []
    for diag in diagnostics:
        key = (diag.code, diag.message, diag.span, diag.severity)
        if key not in seen:
            seen.add(key)
            unique.append(diag)
    return unique
