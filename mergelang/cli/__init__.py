"""The ``mergelang`` command line: ``main(argv) -> exit status``.

Each verb lives in its own module under ``mergelang.cli`` exposing ``register(subparsers)``,
which adds the verb's parser and sets ``handler`` to a function ``(args) -> int``. Verb modules
import nothing heavy at module level (no torch), so ``check`` and ``fmt`` start quickly.

Exit status: 0 success, 1 recipe or runtime error, 2 command-line usage error, 130 interrupted
(SIGINT, Ctrl-C), 143 terminated (SIGTERM), 129 hung up (SIGHUP: a closed terminal, a dropped
ssh connection), 131 quit (SIGQUIT), 138 and 140 (SIGUSR1, SIGUSR2, whose default is to end the
process). While a verb runs, each of SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 raises
:class:`Terminated`, a :class:`KeyboardInterrupt`, so a run cleans up (removes its
partial files) exactly as for Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence
from types import FrameType

from mergelang._version import __version__
from mergelang.errors import Diagnostic, MergelangError

VERBS: tuple[str, ...] = (
    "check",
    "plan",
    "run",
    "fmt",
    "show",
    "methods",
    "convert",
    "page",
    "render",
    "cache",
    "completion",
)
"""Verb modules, in the order ``--help`` lists them."""


class _ArgumentParser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so ``main`` owns the exit status."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        raise _UsageExit(f"{self.prog}: error: {message}")


class _UsageExit(Exception):
    pass


class Terminated(KeyboardInterrupt):
    """The process received one of :data:`TERMINATING` (exit status 128 + its number)."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def message(self) -> str:
        if self.signum == signal.SIGTERM:
            return "terminated"
        return f"terminated ({signal.Signals(self.signum).name})"


TERMINATING: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name)
    for name in ("SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")
    if hasattr(signal, name)
)
"""The signals that end a verb as :class:`Terminated` (SIGQUIT would otherwise dump core and
leave partial files; SIGHUP and the user signals, whose default is to end the process, would
leave them too)."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated(signum)


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into :class:`Terminated` in the main thread, then restore the handler
    that was there before (``main`` is also called from other programs and from tests)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, _raise_terminated) for signum in TERMINATING}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)


def system_error(exc: OSError) -> MergelangError:
    """An :class:`OSError` as an error naming the file concerned."""
    message = exc.strerror or str(exc) or type(exc).__name__
    if exc.filename2 is not None:
        message += f" (with {exc.filename2})"
    path = None if exc.filename is None else os.fsdecode(exc.filename)
    return MergelangError([Diagnostic(message, "system", path)])


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
    from mergelang.cli.streams import tolerate_closed_stderr

    with tolerate_closed_stderr():
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
    from mergelang.cli.console import print_error, stderr_console

    # torch warns at import when numpy is absent (mergelang depends on numpy, so only in an
    # environment installed without it).
    warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

    parser = build_parser()
    if (argv is None and len(sys.argv) <= 1) or (argv is not None and not list(argv)):
        # Bare ``mergelang``: the verbs, each with what it does.
        sys.stderr.write(parser.format_help())
        return 2
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except _UsageExit as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help and --version
        return int(exc.code or 0)
    try:
        with _sigterm_raises():
            status: int = args.handler(args)
        return status
    except MergelangError as exc:
        print_error(stderr_console(), exc)
        return exc.exit_code
    except OSError as exc:
        # A failure of the operating system that no verb turned into its own message (a
        # file where a folder is needed, a full disk): reported plainly, never a traceback.
        print_error(stderr_console(), system_error(exc))
        return 1
    except Terminated as stopped:
        stderr_console().print(stopped.message, style="bold red")
        return 128 + stopped.signum
    except KeyboardInterrupt:
        stderr_console().print("interrupted", style="bold red")
        return 130
