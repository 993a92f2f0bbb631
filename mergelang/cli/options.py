"""The command-line options the verbs share, and turning them into the API's arguments.

``--set`` binds recipe variables (every verb that reads a recipe); the planning options
(``--models-dir``, ``--out-dir``, ``--cache-dir``, ``--no-cache``, ``--force``,
``--workers``) decide a plan (``plan`` and ``run``); ``--device`` and ``--nan`` decide how a
run computes. :func:`api_arguments` gives the keyword arguments of
:func:`mergelang.api.plan` and :func:`mergelang.api.run` that they set, and
:func:`check_recipe` reads and checks the recipe a verb is given.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from mergelang.errors import Diagnostic, RecipeError, UsageError
from mergelang.io.text_files import MAX_RECIPE_SIZE, decode_recipe, read_recipe_text, too_large
from mergelang.lang import ast
from mergelang.lang.parser import parse

if TYPE_CHECKING:
    from mergelang.check.checked_recipe import CheckedRecipe

__all__ = [
    "MAX_WORKERS",
    "STDIN_NAME",
    "ApiArguments",
    "add_compute_arguments",
    "add_models_dir_argument",
    "add_planning_arguments",
    "add_recipe_argument",
    "add_variable_arguments",
    "api_arguments",
    "check_recipe",
    "load_recipe",
    "parse_variables",
    "read_stdin_text",
]

STDIN_NAME = "<stdin>"

MAX_WORKERS = 256
"""More worker threads than this is a typing mistake, not a machine: each holds buffers."""


# ---- the recipe -----------------------------------------------------------------------------


def add_recipe_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", metavar="RECIPE", help="the .merge file, or - for stdin")


def add_variable_arguments(parser: argparse.ArgumentParser) -> None:
    """``--set NAME=VALUE`` (repeatable), shared by every verb that reads a recipe."""
    parser.add_argument(
        "--set",
        dest="variables",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="bind the recipe variable $NAME and __NAME__ to VALUE (a path, a model name or "
        "a number); repeatable",
    )


_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OUTPUT_REFERENCE = re.compile(r"O[0-9]+")


def parse_variables(items: Sequence[str]) -> dict[str, str]:
    """``["A=x", "B=1"]`` -> ``{"A": "x", "B": "1"}``; a malformed item is a usage error.

    ``NAME`` may be written ``$NAME`` or ``__NAME__``; it is letters, digits and ``_``, not
    starting with a digit (what a recipe can write after ``$``), and not ``O`` followed by
    digits: ``__O1__`` is the output of Merge Board line 1, never a variable.
    """
    variables: dict[str, str] = {}
    for item in items:
        written, equals, value = item.partition("=")
        name = written.strip()
        if name.startswith("$"):
            name = name[1:]
        elif len(name) > 4 and name.startswith("__") and name.endswith("__"):
            name = name[2:-2]
        problem = None
        if not equals or not name:
            problem = ""
        elif not _VARIABLE_NAME.fullmatch(name):
            problem = ", with NAME letters, digits and _, not starting with a digit"
        elif _OUTPUT_REFERENCE.fullmatch(name):
            problem = f"; __{name}__ is a Merge Board output reference, not a variable"
        if problem is not None:
            raise UsageError(
                f"--set {item}: expected NAME=VALUE{problem}",
                hint="e.g. --set SD15=models/v1-5-pruned-emaonly.safetensors",
            )
        variables[name] = value
    return variables


def read_stdin_text() -> str:
    """Standard input as recipe text: UTF-8 (a BOM allowed), at most
    :data:`~mergelang.lang.parser.MAX_RECIPE_SIZE` bytes; anything else raises RecipeError."""
    stdin = sys.stdin
    if stdin is None:
        raise RecipeError([Diagnostic("standard input is closed", "recipe-file", STDIN_NAME)])
    buffer = getattr(stdin, "buffer", None)
    if buffer is None:  # a text stream put in place of stdin (by a test, an embedding)
        text: str = stdin.read(MAX_RECIPE_SIZE + 1)
        if len(text) > MAX_RECIPE_SIZE:
            raise too_large(STDIN_NAME)
        return text
    return decode_recipe(buffer.read(MAX_RECIPE_SIZE + 1), STDIN_NAME)


def load_recipe(argument: str) -> ast.Recipe:
    """Parse the recipe named on the command line (``-`` reads standard input)."""
    if argument == "-":
        return parse(read_stdin_text(), path=STDIN_NAME)
    return parse(read_recipe_text(argument), path=argument)


def check_recipe(args: argparse.Namespace) -> CheckedRecipe:
    """Parse and check the recipe named by ``args`` with its ``--set`` variables; a recipe
    read from standard input has the working folder as its folder."""
    from mergelang.check import check

    variables = parse_variables(args.variables)
    recipe = load_recipe(args.recipe)
    base_dir = Path.cwd() if args.recipe == "-" else None
    return check(recipe, set=variables, base_dir=base_dir)


# ---- planning and computing -------------------------------------------------------------------


def _workers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
    if not 1 <= value <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"expected 1 to {MAX_WORKERS}, not {value}")
    return value


MODELS_DIR_HELP = "a folder to look models up by name in (repeatable; also $MERGELANG_MODELS)"


def add_models_dir_argument(parser: argparse.ArgumentParser, help: str = MODELS_DIR_HELP) -> None:
    """``--models-dir DIR`` (repeatable)."""
    parser.add_argument(
        "--models-dir",
        dest="models_dirs",
        action="append",
        default=[],
        type=Path,
        metavar="DIR",
        help=help,
    )


def add_planning_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that decide a plan, shared by ``plan`` and ``run``."""
    add_models_dir_argument(parser)
    parser.add_argument(
        "--out-dir",
        type=Path,
        metavar="DIR",
        help="where relative output paths go (default: the recipe's folder)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        metavar="DIR",
        help="the cache folder for intermediate steps and input hashes (default: "
        "$MERGELANG_CACHE, else $XDG_CACHE_HOME/mergelang, else ~/.cache/mergelang)",
    )
    parser.add_argument(
        "--no-cache",
        dest="use_cache",
        action="store_false",
        help="neither read nor store intermediate steps in the cache",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace existing files at output paths that this save of this recipe did not "
        "make (its own earlier outputs are remade without it when its steps or inputs "
        "changed; an up-to-date output is left as it is)",
    )
    parser.add_argument(
        "--rebuild",
        action="store_true",
        help="remake every output, even those that are up to date",
    )
    parser.add_argument(
        "--workers",
        type=_workers,
        metavar="N",
        help="threads working on keys at once (default: up to 4 on CPU, 1 on CUDA)",
    )


def add_compute_arguments(parser: argparse.ArgumentParser) -> None:
    """``--device`` and ``--nan``: how a run computes."""
    parser.add_argument(
        "--device",
        default="cpu",
        metavar="DEVICE",
        help="where to compute: cpu (default), cuda or cuda:N",
    )
    parser.add_argument(
        "--nan",
        choices=("error", "keep"),
        default="error",
        help="NaN or infinite values in the inputs of a merge: refuse them, naming the model "
        "and key (error, the default), or merge them as they are (keep)",
    )


class ApiArguments(TypedDict, total=False):
    """Keyword arguments of :func:`mergelang.api.plan` and :func:`mergelang.api.run`."""

    models_dir: list[Path]
    out_dir: Path | None
    cache_dir: Path | None
    use_cache: bool
    force: bool
    rebuild: bool
    workers: int | None
    device: str
    nan: str


def api_arguments(args: argparse.Namespace) -> ApiArguments:
    """The API's keyword arguments that the planning options set, and the compute options
    where the verb has them."""
    found = ApiArguments(
        models_dir=args.models_dirs,
        out_dir=args.out_dir,
        cache_dir=args.cache_dir,
        use_cache=args.use_cache,
        force=args.force,
        rebuild=args.rebuild,
        workers=args.workers,
    )
    if hasattr(args, "device"):
        found["device"] = args.device
    if hasattr(args, "nan"):
        found["nan"] = args.nan
    return found
