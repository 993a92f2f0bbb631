"""``mergelang plan RECIPE``: what ``mergelang run`` would do, without reading any tensor.

Prints the inputs, each output with the tree of steps it is made from (fused, cached,
evaluated on whole tensors), the passes, the bytes read and written and the estimated working
memory (:func:`mergelang.plan.text.render_plan`); ``--json`` prints the same as one JSON
object. Paths are shown relative to the recipe's folder. By default only the inputs' headers
are read, so cache hits and up-to-date outputs that depend on an input whose content hash is
not known yet show as undecided; ``--hash`` hashes those inputs first (reading each file once;
the hashes are remembered in the cache folder).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from mergelang.cli.check import add_variable_arguments, load_recipe, parse_variables

if TYPE_CHECKING:
    from mergelang.check.checked_recipe import CheckedRecipe
    from mergelang.plan.plan import Plan

__all__ = ["add_planning_arguments", "check_recipe", "make_plan", "register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="show what run would do: steps, fusion, cache, passes, sizes; reads no tensor",
        description=(
            "Show what `mergelang run` would do with the same options, reading only the "
            "inputs' headers: each output with the tree of steps it is made from, which "
            "steps are fused, cached or already in the cache, which outputs are up to date, "
            "the passes over the keys, the bytes read and written and the estimated working "
            "memory. Paths are shown relative to the recipe's folder. Writes nothing but, "
            "with --hash, the inputs' hashes in the cache folder."
        ),
    )
    parser.add_argument("recipe", metavar="RECIPE", help="the .merge file, or - for stdin")
    add_variable_arguments(parser)
    add_planning_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    parser.add_argument(
        "--hash",
        action="store_true",
        help="hash the inputs whose content hash is not known yet (reads each such file "
        "once), so cache hits and up-to-date outputs are decided as run would",
    )
    parser.set_defaults(handler=run_plan)


MAX_WORKERS = 256
"""More worker threads than this is a typing mistake, not a machine: each holds buffers."""


def _workers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
    if not 1 <= value <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"expected 1 to {MAX_WORKERS}, not {value}")
    return value


def add_planning_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that decide a plan, shared by ``plan`` and ``run``."""
    parser.add_argument(
        "--models-dir",
        dest="models_dirs",
        action="append",
        default=[],
        type=Path,
        metavar="DIR",
        help="a folder to look models up by name in (repeatable; also $MERGELANG_MODELS)",
    )
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
        help="replace existing output files made from other steps, inputs or options "
        "(an up-to-date output is left as it is)",
    )
    parser.add_argument(
        "--workers",
        type=_workers,
        metavar="N",
        help="threads working on keys at once (default: up to 4 on CPU, 1 on CUDA)",
    )


def check_recipe(args: argparse.Namespace) -> CheckedRecipe:
    """Parse and check the recipe named by ``args`` with its ``--set`` variables."""
    from mergelang.check import check

    variables = parse_variables(args.variables)
    recipe = load_recipe(args.recipe)
    base_dir = Path.cwd() if args.recipe == "-" else None
    return check(recipe, variables=variables, base_dir=base_dir)


def make_plan(
    args: argparse.Namespace,
    checked: CheckedRecipe,
    *,
    hash_inputs: bool,
    device: str = "cpu",
    nan: str = "error",
) -> Plan:
    """The plan of ``checked`` with the planning options of ``args``."""
    from mergelang import api

    return api.plan(
        checked,
        models_dir=args.models_dirs,
        out_dir=args.out_dir,
        cache_dir=args.cache_dir,
        use_cache=args.use_cache,
        force=args.force,
        device=device,
        workers=args.workers,
        hash_inputs=hash_inputs,
        nan=nan,
    )


def run_plan(args: argparse.Namespace) -> int:
    from mergelang.cli.console import print_diagnostics, stderr_console
    from mergelang.plan.text import plan_json, render_plan

    checked = check_recipe(args)
    if checked.warnings:
        print_diagnostics(stderr_console(), checked.warnings)
    plan = make_plan(args, checked, hash_inputs=args.hash)
    if plan.warnings:
        print_diagnostics(stderr_console(), plan.warnings)
    try:
        if args.json:
            text = json.dumps(plan_json(plan), indent=2, ensure_ascii=False) + "\n"
        else:
            text = render_plan(plan)
    finally:
        plan.close()
    sys.stdout.write(text)
    return 0
