"""``mergelang run RECIPE``: write the recipe's outputs.

Standard output stays empty, so ``run`` can be scripted on its exit status alone (0 done,
1 an error in the recipe, its inputs or its outputs, 2 a command-line error, 130 interrupted,
143 terminated); ``mergelang plan --json`` lists the outputs a recipe makes. Everything meant
for a person goes to standard error: warnings, a progress bar while the run goes (when
stderr is a terminal; otherwise a line every few seconds with the bytes done, the rate and the
time left) and, at the end, a summary with one line per output::

    wrote 2 outputs (3.8 MB) in 1.2 s; 1 up to date; cache: 1 hit, 1 stored
      written     out/mix.safetensors
      ...

A partial file that a killed run left beside one of this run's outputs (or cache objects)
is removed, with a warning naming it.

``--quiet`` leaves out all of it but the errors. ``--dry-run`` plans the run, hashes the
inputs and checks everything a run checks, then prints what each output would become and the
passes and sizes, and writes nothing.

torch is imported only once the plan is made (or up front for a ``--device`` other than
``cpu``, to report a missing GPU before anything is read), so a recipe, input or output
problem is reported without that wait.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from mergelang.cli.options import (
    add_compute_arguments,
    add_planning_arguments,
    add_recipe_argument,
    add_variable_arguments,
    api_arguments,
    check_recipe,
)

if TYPE_CHECKING:
    from rich.console import Console

    from mergelang.errors import Diagnostic
    from mergelang.plan.plan import Plan
    from mergelang.run.executor import RunResult

__all__ = ["register", "removed_partial_warnings", "run_recipe", "shown_path"]

PLANNING = "planning: reading headers, hashing new inputs"
"""What the spinner says until the run's first phase."""

STATUS_TEXT = {
    "written": "written",
    "up-to-date": "up to date",
    "memory": "in memory",
    "write": "would write",
}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run a recipe: write its outputs",
        description=(
            "Run a recipe and write its outputs (relative paths are relative to the "
            "recipe's folder, or to --out-dir). Outputs already made by the same steps from "
            "the same inputs are left alone (unless --rebuild); an earlier output of the same "
            "save is remade when its steps or inputs changed, saying what changed; another "
            "existing file is refused unless --force. "
            "Nothing is printed on standard output: progress (on a terminal) and a summary "
            "of what was written go to standard error, and the exit status says whether the "
            "run succeeded (0), failed (1), was called wrongly (2), interrupted (130) or "
            "terminated (143; 129 for SIGHUP, 131 for SIGQUIT, 138 for SIGUSR1); an interrupted "
            "run leaves no partial file."
        ),
    )
    add_recipe_argument(parser)
    add_variable_arguments(parser)
    add_planning_arguments(parser)
    add_compute_arguments(parser)
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="hash the inputs and check everything, print what would be written, write nothing",
    )
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="print nothing but errors (no progress, no warnings, no summary)",
    )
    parser.set_defaults(handler=run_recipe)


def run_recipe(args: argparse.Namespace) -> int:
    """:func:`mergelang.api.run` with a progress reporter, and its summary rendered; a dry
    run is :func:`mergelang.api.plan` (inputs hashed), rendered."""
    from mergelang import api
    from mergelang.cli.console import print_diagnostics, stderr_console
    from mergelang.cli.progress import LOG_SECONDS, RichReporter

    console = stderr_console()
    if args.device != "cpu":
        from mergelang.run.executor import resolve_device

        # An absent CUDA is reported before anything is read.
        resolve_device(args.device)
    checked = check_recipe(args)
    if checked.warnings and not args.quiet:
        print_diagnostics(console, checked.warnings)
    enabled = console.is_terminal and not args.quiet
    if args.dry_run:
        with RichReporter(console, enabled) as reporter:
            reporter.waiting(PLANNING)
            plan = api.plan(checked, **api_arguments(args), hash_inputs=True, reporter=reporter)
            plan.close()
        if not args.quiet:
            print_diagnostics(console, plan.warnings)
            print_dry_run(console, plan)
        return 0
    log_every = None if console.is_terminal or args.quiet else LOG_SECONDS
    with RichReporter(console, enabled, log_every) as reporter:
        reporter.waiting(PLANNING)
        result = api.run(checked, **api_arguments(args), reporter=reporter)
    if not args.quiet:
        print_diagnostics(console, result.warnings)
        print_diagnostics(console, removed_partial_warnings(result))
        print_summary(console, result)
    return 0


def removed_partial_warnings(result: RunResult) -> list[Diagnostic]:
    """One warning per partial file of a killed run that this run removed."""
    from mergelang.errors import Diagnostic

    return [
        Diagnostic(
            f"removed a partial file left by an interrupted run (process {pid})",
            "stale-partial",
            shown_path(path),
            severity="warning",
        )
        for path, pid in result.removed_partials
    ]


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def shown_path(path: Path | None, name: str = "") -> str:
    """An output's path as the summary shows it: relative to the current folder when it is
    inside it, else absolute."""
    if path is None:
        return name
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return str(path)
    return str(path) if relative.startswith("..") else relative


def _cache_part(hits: int, stores: int, stored_word: str) -> str | None:
    if not hits and not stores:
        return None
    found = []
    if hits:
        found.append(_plural(hits, "hit"))
    if stores:
        found.append(f"{stores} {stored_word}")
    return "cache: " + ", ".join(found)


def _output_lines(
    console: Console, rows: list[tuple[str, str]], why: list[tuple[str, ...]] | None = None
) -> None:
    """One line per output: its status and path, and what changed when an earlier output of
    the same save was remade."""
    from mergelang.cli.console import shown as escape

    width = max((len(status) for status, _ in rows), default=0)
    for index, (status, path) in enumerate(rows):
        style = "green" if status in ("written", "would write") else "dim"
        changed = why[index] if why is not None else ()
        tail = f"  [dim]({escape('; '.join(changed))})[/dim]" if changed else ""
        console.print(f"  [{style}]{status.ljust(width)}[/{style}]  {escape(path)}{tail}")


def summary_line(result: RunResult) -> str:
    """``wrote 2 outputs (3.8 MB) in 1.2 s; 1 up to date; cache: 1 hit, 1 stored``."""
    from mergelang.plan.text import human_bytes

    written = [o for o in result.outputs if o.status == "written"]
    current = [o for o in result.outputs if o.status == "up-to-date"]
    parts: list[str] = []
    if written:
        size = human_bytes(sum(o.nbytes for o in written))
        parts.append(f"wrote {_plural(len(written), 'output')} ({size}) in {result.seconds:.1f} s")
    if current:
        if written:
            parts.append(f"{len(current)} up to date")
        else:
            parts.append(f"nothing to do: {_plural(len(current), 'output')} up to date")
    cache = _cache_part(len(result.cache_hits), len(result.cache_stores), "stored")
    if cache is not None:
        parts.append(cache)
    return "; ".join(parts) if parts else "the recipe saves no output"


def print_summary(console: Console, result: RunResult) -> None:
    from mergelang.cli.console import shown as escape

    console.print(escape(summary_line(result)), style="bold")
    rows = [
        (STATUS_TEXT.get(o.status, o.status), shown_path(o.path, o.name)) for o in result.outputs
    ]
    _output_lines(console, rows, [o.changes for o in result.outputs])


def dry_run_lines(plan: Plan) -> tuple[str, str]:
    """The head line (what would be written) and the plan line (passes, sizes, memory)."""
    from mergelang.plan.text import human_bytes

    pending = [o for o in plan.outputs if o.status == "write"]
    current = [o for o in plan.outputs if o.status == "up-to-date"]
    parts = [
        f"dry run: would write {_plural(len(pending), 'output')} "
        f"({human_bytes(sum(o.nbytes for o in pending))})"
    ]
    if current:
        parts.append(f"{len(current)} up to date")
    hits = sum(1 for e in plan.cache if e.status == "hit")
    cache = _cache_part(hits, len(plan.stores), "to store")
    if cache is not None:
        parts.append(cache)
    passes = plan.passes
    count = f"{len(passes)} pass" + ("" if len(passes) == 1 else "es")
    passes_text = f"{count} ({' then '.join(passes)})" if passes else "no pass"
    workers = _plural(plan.workers, "worker")
    detail = (
        f"{passes_text}; read {human_bytes(plan.bytes_read)}, "
        f"write {human_bytes(plan.bytes_written)}; working memory about "
        f"{human_bytes(plan.working_memory())} ({workers})"
    )
    return "; ".join(parts), detail


def print_dry_run(console: Console, plan: Plan) -> None:
    from mergelang.cli.console import shown as escape
    from mergelang.plan.plan import FileOutput

    head, detail = dry_run_lines(plan)
    console.print(escape(head), style="bold")
    rows = [(STATUS_TEXT.get(o.status, o.status), shown_path(o.path, o.name)) for o in plan.outputs]
    why = [o.changes if isinstance(o, FileOutput) else () for o in plan.outputs]
    _output_lines(console, rows, why)
    console.print(escape(detail))
