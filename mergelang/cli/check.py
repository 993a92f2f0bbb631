"""``mergelang check RECIPE``: parse and check a recipe without loading any model.

Prints a one-line summary on success (``recipe.merge: ok: 3 models, 5 steps, 2 outputs``)
and every diagnostic on stderr otherwise. When every input checkpoint can be found, it reads
the header of each safetensors file and checks the recipe against the architectures found
(:mod:`mergelang.plan.input_checks`); the summary then names them (``recipe.merge: ok: 2
models (sd1), 1 step, 1 output``). When one cannot be found, the summary says so: ``ok
(inputs not checked: model 'a' not found, and 1 more)``; with ``--inputs`` (or
``--models-dir``) that is an error instead. A save that would write over an input is an
error in any case. No tensor is read and no torch is imported.
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
    from mergelang.plan.inputs import ResolvedInputs, ResolvedSource


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "check",
        help="check a recipe (names, arguments, types, weights) without loading models",
        description=(
            "Parse and check a recipe and report every problem at once, with its line and "
            "column. Reads no tensor. When every input checkpoint can be found, it reads the "
            "header of each safetensors file, detects its architecture and checks the recipe "
            "against it (models of different architectures merged together, block weights "
            "that do not fit the architecture); .ckpt files are found but not inspected. "
            "When an input cannot be found it says 'ok (inputs not checked: ...)', or with "
            "--inputs or --models-dir fails. A save over an input is always an error."
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
    from mergelang.io.locate import ModelLocator
    from mergelang.plan.input_checks import check_inputs
    from mergelang.plan.inputs import resolve_inputs

    checked = check_recipe(args)
    inputs = None
    unchecked: str | None = None
    strict = bool(args.inputs or args.models_dirs)
    with resolve_inputs(checked, ModelLocator(args.models_dirs)) as resolved:
        _refuse_saves_over_inputs(checked, resolved)
        missing = [r for r in resolved.models.values() if r.stage == "locate"]
        if missing and not strict:
            # Plain check: the inputs are checked when they can all be found.
            unchecked = _why_unchecked(missing)
        else:
            inputs = check_inputs(checked, resolved)
    warnings = [*checked.warnings, *(inputs.warnings if inputs is not None else ())]
    if warnings:
        print_diagnostics(stderr_console(), warnings)
    name = STDIN_NAME if args.recipe == "-" else args.recipe
    text = summary(name, checked, inputs)
    if unchecked is not None:
        text = text.replace(": ok: ", f": ok (inputs not checked: {unchecked}): ", 1)
    sys.stdout.write(text + "\n")
    return 0


def _why_unchecked(missing: list[ResolvedSource]) -> str:
    """``model 'z' not found (did you mean 'sd15-anime'? ...)``: the first input that could
    not be found, and how many more."""
    first = missing[0]
    hint = first.problem.hint if first.problem is not None else None
    text = f"{first.label} not found"
    if hint is not None and hint.startswith("did you mean"):
        text += f" ({hint})"
    if len(missing) > 1:
        text += f", and {len(missing) - 1} more"
    return text


def _refuse_saves_over_inputs(checked: CheckedRecipe, resolved: ResolvedInputs) -> None:
    """A save whose file is one of the recipe's inputs is an error, whatever the flags."""
    import os
    from pathlib import Path

    from mergelang.errors import Diagnostic, RecipeError, source_line

    inputs = [r.path for r in [*resolved.models.values(), *resolved.vaes.values()] if r.path]
    base = checked.base_dir or Path.cwd()
    found: list[Diagnostic] = []
    for save in checked.saves:
        target = Path(os.path.expanduser(save.path))
        target = target if target.is_absolute() else base / target
        for path in inputs:
            if os.path.abspath(target) == os.path.abspath(path) or (
                target.exists() and os.path.samefile(target, path)
            ):
                found.append(
                    Diagnostic(
                        f"{save.path}: this save would write over an input of the recipe ({path})",
                        "overwrite-input",
                        checked.path,
                        save.span,
                        "choose another output path; inputs are never modified",
                        source_line=source_line(checked.recipe.source, save.span.line),
                    )
                )
                break
    if found:
        raise RecipeError(found)
