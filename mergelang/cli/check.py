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
import sys
from typing import TYPE_CHECKING

from mergelang.cli.options import (
    STDIN_NAME,
    add_models_dir_argument,
    add_recipe_argument,
    add_variable_arguments,
    check_recipe,
)

if TYPE_CHECKING:
    from mergelang.check import CheckedRecipe
    from mergelang.plan.input_checks import InputsReport


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
    add_recipe_argument(parser)
    add_variable_arguments(parser)
    add_models_dir_argument(
        parser,
        "a folder to look models up by name in (repeatable; also $MERGELANG_MODELS); "
        "implies --inputs",
    )
    parser.add_argument(
        "--inputs",
        action="store_true",
        help="also find every input checkpoint and check it against the recipe by reading "
        "its header; no tensor is read",
    )
    parser.set_defaults(handler=run_check)


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

    checked = check_recipe(args)
    inputs = None
    if args.inputs or args.models_dirs:
        from mergelang.io.locate import ModelLocator
        from mergelang.plan.input_checks import check_inputs
        from mergelang.plan.inputs import resolve_inputs

        with resolve_inputs(checked, ModelLocator(args.models_dirs)) as resolved:
            inputs = check_inputs(checked, resolved)
    warnings = [*checked.warnings, *(inputs.warnings if inputs is not None else ())]
    if warnings:
        print_diagnostics(stderr_console(), warnings)
    name = STDIN_NAME if args.recipe == "-" else args.recipe
    sys.stdout.write(summary(name, checked, inputs) + "\n")
    return 0
