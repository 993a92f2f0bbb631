"""The ``mergelang`` command line: ``main(argv) -> exit status``.

Each verb lives in its own module under ``mergelang.cli`` exposing ``register(subparsers)``,
which adds the verb's parser and sets ``handler`` to a function ``(args) -> int``. Verb modules
import nothing heavy at module level (no torch), so ``check`` and ``fmt`` start quickly.

Exit status: 0 success, 1 recipe or runtime error, 2 command-line usage error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from collections.abc import Sequence

from mergelang._version import __version__
from mergelang.errors import MergelangError

VERBS: tuple[str, ...] = ("check", "fmt", "show")
"""Verb modules, in the order ``--help`` lists them."""


class _ArgumentParser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so ``main`` owns the exit status."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        raise _UsageExit(f"{self.prog}: error: {message}")


class _UsageExit(Exception):
    pass


def build_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(
        prog="mergelang",
        description="Merge Stable Diffusion checkpoints from .merge recipes.",
    )
    parser.add_argument("--version", action="version", version=f"mergelang {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_ArgumentParser)
    sub.required = True
    for verb in VERBS:
        importlib.import_module(f"mergelang.cli.{verb}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from mergelang.cli.console import print_error, stderr_console

    # torch warns at import when numpy is absent; mergelang never needs numpy.
    warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

    parser = build_parser()
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except _UsageExit as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help and --version
        return int(exc.code or 0)
    try:
        status: int = args.handler(args)
        return status
    except MergelangError as exc:
        print_error(stderr_console(), exc)
        return exc.exit_code
    except KeyboardInterrupt:
        stderr_console().print("interrupted", style="bold red")
        return 130


def run() -> None:
    sys.exit(main())
