"""``mergelang fmt RECIPE...``: print recipes in their canonical form, or rewrite them.

Without options the formatted text goes to stdout. ``--write`` rewrites the files that
change, atomically (a temporary file in the same folder renamed over the original).
``--check`` rewrites nothing, lists the files that would change and exits 1 if there are any
(for CI and pre-commit). A file that does not parse is reported and left alone (exit 1).
Imports no torch.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import stat
import sys
import tempfile
from pathlib import Path

from mergelang.cli.options import STDIN_NAME, read_stdin_text
from mergelang.errors import OutputError, RecipeError, UsageError
from mergelang.io.text_files import normalise_line_ends, read_recipe_text
from mergelang.lang.formatter import format_text


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "fmt",
        help="format recipes canonically",
        description=(
            "Print recipes in their canonical form (one text per meaning, so diffs show "
            "changes of meaning only), or rewrite them in place with --write."
        ),
    )
    parser.add_argument(
        "recipes", nargs="+", metavar="RECIPE", help="the .merge files (- reads stdin)"
    )
    parser.add_argument(
        "--write", action="store_true", help="rewrite files whose text changes, in place"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="list the files that would change and exit 1 if any would; write nothing "
        "(with --write: rewrite them and still exit 1)",
    )
    parser.set_defaults(handler=run_fmt)


def line_ending(text: str) -> str:
    """``lf``, ``crlf`` (every line ends so) or ``mixed``. A recipe's line endings are the
    file's own business, like its byte order mark: the canonical form is judged on the text
    with them set aside, and ``--write`` keeps them (a file with both is made CRLF)."""
    crlf = text.count("\r\n")
    if not crlf:
        return "lf"
    return "crlf" if crlf == text.count("\n") and crlf == text.count("\r") else "mixed"


def _has_bom(argument: str) -> bool:
    try:
        with open(argument, "rb") as handle:
            return handle.read(3) == b"\xef\xbb\xbf"
    except OSError:
        return False


def write_atomically(path: Path, text: str, *, bom: bool = False) -> None:
    """Replace ``path`` with ``text`` (UTF-8, after a byte order mark with ``bom``) so readers
    see the old or the new file, whole, never a mix; the file keeps its permissions. A symlink
    stays a symlink: the file it leads to is the one replaced (atomically, in its own folder)."""
    path = Path(os.path.realpath(path))
    folder = path.parent
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        fd, temp_name = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".fmt")
    except OSError as exc:
        raise OutputError(str(path), f"cannot rewrite the recipe: {exc.strerror or exc}") from None
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, mode)
        os.replace(temp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise OutputError(str(path), f"cannot rewrite the recipe: {exc.strerror or exc}") from None


def _read(argument: str) -> str:
    if argument == "-":
        return read_stdin_text()
    return read_recipe_text(argument)


def run_fmt(args: argparse.Namespace) -> int:
    from mergelang.cli.console import print_error, stderr_console

    recipes: list[str] = args.recipes
    if args.write and "-" in recipes:
        raise UsageError("--write cannot rewrite standard input", hint="drop -, or --write")
    failed = False
    changed: list[str] = []
    show_names = len(recipes) > 1 and not (args.write or args.check)
    for argument in recipes:
        name = STDIN_NAME if argument == "-" else argument
        try:
            original = _read(argument)
            formatted = format_text(original, path=name)
        except RecipeError as exc:
            print_error(stderr_console(), exc)
            failed = True
            continue
        if not (args.write or args.check):
            if show_names:
                sys.stdout.write(f"==> {name} <==\n")
            sys.stdout.write(formatted)
            continue
        ending = line_ending(original)
        if formatted == normalise_line_ends(original) and ending != "mixed":
            continue
        changed.append(name)
        why = " (mixed line endings: all made CRLF)" if ending == "mixed" else ""
        if args.write:
            text = formatted.replace("\n", "\r\n") if ending != "lf" else formatted
            write_atomically(Path(argument), text, bom=argument != "-" and _has_bom(argument))
            sys.stderr.write(f"reformatted {name}{why}\n")
        else:
            sys.stdout.write(f"would reformat {name}{why}\n")
    if failed:
        return 1
    return 1 if args.check and changed else 0


def hook_main() -> None:
    """``mergelang-fmt ARGS``: ``mergelang fmt ARGS``, the pre-commit hook's command (also
    installed by the light ``hooks/fmt`` distribution, which has no torch)."""
    from mergelang.cli import main

    sys.exit(main(["fmt", *sys.argv[1:]]))
