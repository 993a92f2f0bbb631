"""``mergelang check RECIPE``: parse and check a recipe without loading any model.

Prints a one-line summary on success (``recipe.merge: ok: 3 models, 5 steps, 2 outputs``)
and every diagnostic on stderr otherwise. With ``--models-dir`` it also checks that every
input model can be found. Imports no torch.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from mergelang import ast
from mergelang.check import CheckedRecipe, ModelSource, check
from mergelang.errors import CheckpointError, Diagnostic, RecipeError, UsageError
from mergelang.parser import parse, read_recipe_text

STDIN_NAME = "<stdin>"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "check",
        help="check a recipe (names, arguments, types, weights) without loading models",
        description=(
            "Parse and check a recipe and report every problem at once, with its line and "
            "column. Loads no model; with --models-dir it also checks that every input "
            "model can be found."
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
        "makes check verify that every input model can be found",
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


def parse_variables(items: Sequence[str]) -> dict[str, str]:
    """``["A=x", "B=1"]`` -> ``{"A": "x", "B": "1"}``; a malformed item is a usage error."""
    variables: dict[str, str] = {}
    for item in items:
        name, equals, value = item.partition("=")
        name = name.strip()
        if name.startswith("$"):
            name = name[1:]
        elif len(name) > 4 and name.startswith("__") and name.endswith("__"):
            name = name[2:-2]
        if not equals or not name.isidentifier():
            raise UsageError(
                f"--set {item}: expected NAME=VALUE",
                hint="e.g. --set SD15=models/v1-5-pruned-emaonly.safetensors",
            )
        variables[name] = value
    return variables


def load_recipe(argument: str) -> ast.Recipe:
    """Parse the recipe named on the command line (``-`` reads standard input)."""
    if argument == "-":
        data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else None
        if data is None:
            return parse(sys.stdin.read(), path=STDIN_NAME)
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise RecipeError(
                [Diagnostic("the recipe is not UTF-8 text", "recipe-encoding", STDIN_NAME)]
            ) from None
        return parse(text, path=STDIN_NAME)
    return parse(read_recipe_text(argument), path=argument)


def locate_models(
    checked: CheckedRecipe,
    search_dirs: Sequence[Path],
    *,
    env: Mapping[str, str] = os.environ,
) -> list[Diagnostic]:
    """A diagnostic, at the model's place in the recipe, for every input that cannot be
    found (paths relative to the recipe's folder; variable values relative to the working
    folder; names searched in ``search_dirs`` and ``$MERGELANG_MODELS``)."""
    from mergelang.io.locate import ModelLocator

    locator = ModelLocator(search_dirs, env=env)
    recipe_dir = checked.base_dir or Path.cwd()
    problems: list[Diagnostic] = []
    sources: list[ModelSource] = list(checked.models.values())
    sources += [s.vae for s in checked.saves if s.vae is not None and s.vae.kind == "path"]
    seen: set[tuple[str, str]] = set()
    lines = (checked.recipe.source or "").splitlines()
    for source in sources:
        if (source.kind, source.ref) in seen:
            continue
        seen.add((source.kind, source.ref))
        relative = Path.cwd() if source.kind == "variable" else recipe_dir
        try:
            locator.find(source.ref, relative_to=relative)
        except CheckpointError as exc:
            span = source.span
            line = lines[span.line - 1] if 0 < span.line <= len(lines) else None
            for diag in exc.diagnostics:
                problems.append(
                    Diagnostic(
                        f"model '{source.name}': {diag.message}",
                        diag.code,
                        checked.path,
                        span,
                        diag.hint,
                        source_line=line,
                    )
                )
    return problems


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def summary(name: str, checked: CheckedRecipe) -> str:
    """``recipe.merge: ok: 3 models, 5 steps, 2 outputs`` (plus the warnings, if any)."""
    text = (
        f"{name}: ok: {_plural(len(checked.models), 'model')}, "
        f"{_plural(len(checked.steps), 'step')}, {_plural(len(checked.saves), 'output')}"
    )
    if checked.warnings:
        text += f", {_plural(len(checked.warnings), 'warning')}"
    return text


def run_check(args: argparse.Namespace) -> int:
    from mergelang.cli.console import print_diagnostics, stderr_console

    variables = parse_variables(args.variables)
    recipe = load_recipe(args.recipe)
    base_dir = Path.cwd() if args.recipe == "-" else None
    checked = check(recipe, variables=variables, base_dir=base_dir)
    if args.models_dirs:
        missing = locate_models(checked, args.models_dirs)
        if missing:
            everything = [*missing, *checked.warnings]
            raise RecipeError(sorted(everything, key=lambda d: (d.line or 0, d.column or 0)))
    if checked.warnings:
        print_diagnostics(stderr_console(), checked.warnings)
    name = STDIN_NAME if args.recipe == "-" else args.recipe
    sys.stdout.write(summary(name, checked) + "\n")
    return 0
