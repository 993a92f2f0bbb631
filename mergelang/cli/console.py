"""Rich rendering of diagnostics on stderr. The library never imports this module.

rich honours plain (non-terminal) streams by itself, so a redirected stderr gets the same text
as :func:`mergelang.errors.format_diagnostic`, without escapes; with ``NO_COLOR`` set, a
terminal gets no escapes either (no colour, bold or dim).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from rich.console import Console
from rich.markup import escape

from mergelang.errors import Diagnostic, MergelangError, caret_lines, printable


def no_color() -> bool:
    """Whether ``NO_COLOR`` is set (to anything but the empty string): https://no-color.org
    asks for no ANSI styling at all, so bold and dim go too, not only the colours."""
    return bool(os.environ.get("NO_COLOR"))


def stderr_console() -> Console:
    if no_color():
        return Console(stderr=True, highlight=False, soft_wrap=True, color_system=None)
    return Console(stderr=True, highlight=False, soft_wrap=True)


def stdout_console() -> Console:
    if no_color():
        return Console(highlight=False, soft_wrap=True, color_system=None)
    return Console(highlight=False, soft_wrap=True)


def shown(text: str) -> str:
    """Text from a file, ready for ``console.print``: controls escaped
    (:func:`mergelang.errors.printable`), then rich markup escaped."""
    return escape(printable(text))


def print_diagnostics(console: Console, diagnostics: Iterable[Diagnostic]) -> None:
    for diag in diagnostics:
        style = "bold red" if diag.severity == "error" else "bold yellow"
        where = diag.location()
        head = f"[bold]{shown(where)}:[/bold] " if where else ""
        key = f" (key {shown(diag.key)})" if diag.key is not None else ""
        console.print(f"{head}[{style}]{diag.severity}:[/{style}] {shown(diag.message)}{key}")
        caret = caret_lines(diag)
        if caret:
            console.print(escape(caret[0]), style="dim")
            console.print(escape(caret[1]), style="bold red")
        if diag.hint:
            console.print(f"  [cyan]hint:[/cyan] {shown(diag.hint)}")


def print_error(console: Console, exc: MergelangError) -> None:
    print_diagnostics(console, exc.diagnostics)
    errors = len(exc.errors)
    if errors > 1:
        console.print(f"[bold red]{errors} errors[/bold red]")
