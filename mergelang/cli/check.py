"""``mergelang check RECIPE``: parse and check a recipe without loading any model.

Prints a one-line summary on success (``recipe.merge: ok: 3 models, 5 steps, 2 outputs``)
and every diagnostic on stderr otherwise. With ``--inputs`` (or ``--models-dir``) it also
finds every input checkpoint, reads the header of each safetensors file and checks the recipe
against the architectures found (:mod:`mergelang.plan.input_checks`); the summary then names them
(``recipe.merge: ok: 2 models (sd1), 1 step, 1 output``). No tensor is read and no torch is
imported.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mergelang.check import CheckedRecipe, check
from mergelang.errors import Diagnostic, RecipeError, UsageError
from mergelang.io.text_files import MAX_RECIPE_SIZE, decode_recipe, read_recipe_text, too_large
from mergelang.lang import ast
from mergelang.lang.parser import parse

if TYPE_CHECKING:
    from mergelang.plan.input_checks import InputsReport

STDIN_NAME = "<stdin>"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "check",
        help="check a recipe (names, arguments, types, weights) without loading models",
        description=(
            "Parse and check a recipe and report every problem at once, with its line and "
            "column. Reads no tensor. With --inputs or --models-dir it also finds every "
            "input checkpoint, reads the header of each safetensors file, detects its "
            "architecture and checks the recipe against it (models of different "
            "architectures merged together, block weights that do not fit the "
            "architecture); .ckpt files are found but not inspected."
        ),
    )
    parser.add_argument("recipe", metavar="RECIPE", help="the .merge file, or - for stdin")
    add_variable_arguments(parser)
    parser.add_argument(
        "--models-dir",
        dest="models_dirs",
        action="append",
        default=[],
        type=Path,
        metavar="DIR",
        help="a folder to look models up by name in (repeatable; also $MERGELANG_MODELS); "
        "implies --inputs",
    )
    parser.add_argument(
        "--inputs",
        action="store_true",
        help="also find every input checkpoint and check it against the recipe by reading "
        "its header; no tensor is read",
    )
    parser.set_defaults(handler=run_check)


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
    :data:`~mergelang.io.text_files.MAX_RECIPE_SIZE` bytes; anything else raises RecipeError."""
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


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def summary(name: str, checked: CheckedRecipe, inputs: InputsReport | None = None) -> str:
    """``recipe.merge: ok: 3 models, 5 steps, 2 outputs`` (plus the warnings, if any); with
    the inputs inspected, the models' architectures: ``2 models (sd1)``, ``3 models (sd1;
    1 .ckpt not inspected)``."""
    models = _plural(len(checked.models), "model")
    if inputs is not None:
        parts = [", ".join(inputs.architectures)] if inputs.architectures else []
        if inputs.not_inspected:
            parts.append(f"{len(inputs.not_inspected)} .ckpt not inspected")
        if parts:
            models += f" ({'; '.join(parts)})"
    text = (
        f"{name}: ok: {models}, "
        f"{_plural(len(checked.steps), 'step')}, {_plural(len(checked.saves), 'output')}"
    )
    warnings = len(checked.warnings) + (len(inputs.warnings) if inputs is not None else 0)
    if warnings:
        text += f", {_plural(warnings, 'warning')}"
    return text


def run_check(args: argparse.Namespace) -> int:
    from mergelang.cli.console import print_diagnostics, stderr_console

    variables = parse_variables(args.variables)
    recipe = load_recipe(args.recipe)
    base_dir = Path.cwd() if args.recipe == "-" else None
    checked = check(recipe, variables=variables, base_dir=base_dir)
    inputs = None
    if args.inputs or args.models_dirs:
        from mergelang.io.locate import ModelLocator
        from mergelang.plan.input_checks import check_inputs

        inputs = check_inputs(checked, ModelLocator(args.models_dirs))
    warnings = [*checked.warnings, *(inputs.warnings if inputs is not None else ())]
    if warnings:
        print_diagnostics(stderr_console(), warnings)
    name = STDIN_NAME if args.recipe == "-" else args.recipe
    sys.stdout.write(summary(name, checked, inputs) + "\n")
    return 0
