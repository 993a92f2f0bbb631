"""``mergelang plan RECIPE``: what ``mergelang run`` would do, without reading any tensor.

Prints the inputs, each output with the tree of steps it is made from (fused, cached,
evaluated on whole tensors), the passes, the bytes read and written and the estimated working
memory (:func:`mergelang.plan.text.render_plan`); ``--json`` prints the same as one JSON
object. Paths are shown relative to the recipe's folder. By default only the inputs' headers
are read, so cache hits and up-to-date outputs that depend on an input whose content hash is
not known yet show as undecided; ``--hash`` hashes those inputs first (reading each file once;
the hashes are remembered in the cache folder).

After the plan, every weight of a step that differs between blocks is drawn as the U-Net's U
(:func:`mergelang.report.terminal.weights_text`, the chart ``mergelang show`` draws);
``--no-charts`` leaves them out.
"""

from __future__ import annotations

import argparse
import json
import sys
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
    from rich.text import Text

    from mergelang.plan.plan import Plan

__all__ = ["register", "run_plan", "step_charts"]


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
    add_recipe_argument(parser)
    add_variable_arguments(parser)
    add_planning_arguments(parser)
    add_compute_arguments(parser)
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="print no warnings (the plan itself still goes to standard output)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    parser.add_argument(
        "--hash",
        action="store_true",
        help="hash the inputs whose content hash is not known yet (reads each such file "
        "once), so cache hits and up-to-date outputs are decided as run would",
    )
    parser.add_argument(
        "--charts",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="draw each step's per-block weights as the U-Net's U after the plan (default: on)",
    )
    parser.set_defaults(handler=run_plan)


def run_plan(args: argparse.Namespace) -> int:
    """:func:`mergelang.api.plan`, rendered as text or JSON."""
    from mergelang import api
    from mergelang.cli.console import print_diagnostics, stderr_console
    from mergelang.cli.progress import LOG_SECONDS, RichReporter
    from mergelang.plan.text import plan_json, render_plan

    checked = check_recipe(args)
    console = stderr_console()
    if checked.warnings and not args.quiet:
        print_diagnostics(console, checked.warnings)
    enabled = console.is_terminal and not args.quiet
    log_every = None if console.is_terminal or args.quiet else LOG_SECONDS
    with RichReporter(console, enabled, log_every) as reporter:
        # --hash reads each new input whole: a bar with its bytes and rate.
        plan = api.plan(checked, **api_arguments(args), hash_inputs=args.hash, reporter=reporter)
    if plan.warnings and not args.quiet:
        print_diagnostics(stderr_console(), plan.warnings)
    try:
        if args.json:
            text = json.dumps(plan_json(plan), indent=2, ensure_ascii=False) + "\n"
        else:
            text = render_plan(plan)
        charts = step_charts(plan) if args.charts and not args.json else []
    finally:
        plan.close()
    sys.stdout.write(text)
    if charts:
        from mergelang.cli.console import stdout_console

        console = stdout_console()
        for chart in charts:
            console.print()
            console.print(chart)
    return 0


def step_charts(plan: Plan) -> list[Text]:
    """One U chart per weight of a step that is not the same on every block, titled with
    the step's number as the plan prints it (``#2 weighted_sum alpha``, ``#3 weight of
    #1``)."""
    from mergelang.block_weights import BASE
    from mergelang.errors import printable
    from mergelang.plan.graph import LinearNode, MethodNode
    from mergelang.plan.plan import step_numbers
    from mergelang.report.terminal import weights_text

    nodes = plan.all_nodes()
    numbers = step_numbers(nodes)
    charts: list[Text] = []
    for node in nodes:
        if isinstance(node, MethodNode):
            method = node.kind.removeprefix("method:")
            labelled = [(f"{method} {name}", w) for name, w in node.weights.items()]
        elif isinstance(node, LinearNode):
            labelled = [
                (f"weight of #{numbers[id(child)]}", w)
                for w, child in zip(node.weights, node.children, strict=True)
            ]
        else:
            continue
        scheme = node.arch.scheme
        for label, weights in labelled:
            if len(set(weights.values.values())) < 2:
                continue
            values = {**weights.values, BASE: weights.base}
            title = f"#{numbers[id(node)]} {label} ({node.arch.name})"
            charts.append(weights_text(values, scheme, title=printable(title)))
    return charts
