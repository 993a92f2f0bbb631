"""``mergelang page OUTPUTS... --images DIR``: the comparison page of a sweep's outputs.

Writes one self-contained HTML file (:mod:`mergelang.report.html`): each output with its
block weights as a small U chart, the blocks where it differs from the reference model, and
its images one column per seed, laid out as the U-Net's U for a one-block-per-output sweep
on SD1/SD2 or SDXL, as a grid otherwise. OUTPUTS are checkpoint files, folders of them, or
the ``.merge`` recipe that wrote them. Images are matched to outputs by their PNG info or
file names (:mod:`mergelang.report.matching`). Whatever cannot be shown (unmatched images,
outputs without images, unreadable files) is listed on the page and printed here; the page
is written all the same.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mergelang.errors import UsageError

__all__ = ["register", "write_page"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "page",
        help="write an HTML page comparing a sweep's outputs and their images",
        description=(
            "Write one self-contained HTML page comparing merge outputs: each with its "
            "block weights as a U chart, its difference from the reference model and the "
            "images rendered from it, one column per seed; laid out as the U-Net's U when "
            "each output changes one block (SD1/SD2, SDXL), as a grid otherwise. Images are "
            "matched to outputs by their PNG info (A1111/Forge model hash or name, ComfyUI "
            "checkpoint name) or their file names."
        ),
    )
    parser.add_argument(
        "sources",
        metavar="OUTPUTS",
        nargs="+",
        help="output checkpoints, folders of them, or the .merge recipe that wrote them",
    )
    parser.add_argument(
        "--images", metavar="DIR", help="the folder of images rendered from the outputs"
    )
    parser.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        default="page.html",
        help="the HTML file to write (default: page.html)",
    )
    parser.add_argument(
        "--reference",
        metavar="MODEL",
        help="the unmodified model the outputs are compared with (default: their first input)",
    )
    parser.add_argument(
        "--embed",
        action="store_true",
        help="embed the images in the page instead of referencing them by relative path",
    )
    parser.add_argument("--title", help="the page's title")
    parser.add_argument(
        "--out-dir",
        metavar="DIR",
        help="where a recipe's relative output paths are (as given to run; default: the "
        "recipe's folder)",
    )
    parser.add_argument(
        "--set",
        dest="variables",
        metavar="NAME=VALUE",
        action="append",
        default=[],
        help="a recipe variable, as for run (repeatable)",
    )
    parser.add_argument(
        "--hashes",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="hash the outputs to match images by model hash (cached; default: on)",
    )
    parser.set_defaults(handler=run_page)


def _variables(items: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(f"--set {item}: give NAME=VALUE")
        found[name] = value
    return found


def named_outputs(args: argparse.Namespace, doing: str) -> tuple[list[Path], list[str]]:
    """The output files ``args.sources`` name (recipes' saves, files, folders) and the
    problems found; none at all is a usage error saying there is nothing to ``doing``."""
    from mergelang.report.sources import output_paths

    outputs, problems = output_paths(
        [Path(s) for s in args.sources],
        out_dir=None if args.out_dir is None else Path(args.out_dir),
        variables=_variables(args.variables),
    )
    if not outputs:
        raise UsageError(
            f"no outputs to {doing}: " + ("; ".join(problems) if problems else "none were named")
        )
    return list(outputs), list(problems)


def run_page(args: argparse.Namespace) -> int:
    outputs, problems = named_outputs(args, "show")
    write_page(
        outputs,
        problems,
        None if args.images is None else Path(args.images),
        Path(args.output),
        reference=None if args.reference is None else Path(args.reference),
        title=args.title,
        hashes=args.hashes,
        embed=args.embed,
    )
    return 0


def write_page(
    outputs: list[Path],
    problems: list[str],
    images: Path | None,
    page: Path,
    *,
    reference: Path | None,
    title: str | None,
    hashes: bool,
    embed: bool,
) -> None:
    """Build the comparison, write the page and print what it shows and what it left out
    (``mergelang page`` and ``mergelang render`` both end here)."""
    from mergelang.cli.console import stderr_console, stdout_console
    from mergelang.report.comparison import build_comparison
    from mergelang.report.html import render_html

    comparison = build_comparison(outputs, images, reference=reference, title=title, hashes=hashes)
    comparison.problems[:0] = problems
    page.write_text(render_html(comparison, page, embed=embed), encoding="utf-8")
    shape = "in the U" if comparison.shape == "u" else "as a grid"
    seeds = [str(s) for s in comparison.seeds if s is not None]
    seed_text = f", seeds {', '.join(seeds)}" if seeds else ""
    ref = comparison.reference
    ref_text = (
        f"; reference {ref.stem} ({len(comparison.reference_images)} images)"
        if ref is not None
        else ""
    )
    stdout_console().print(
        f"wrote {page}: {len(comparison.cells)} outputs {shape}, "
        f"{comparison.image_count()} images{seed_text}{ref_text}",
        markup=False,
    )
    err = stderr_console()
    for problem in comparison.problems:
        err.print(f"warning: {problem}", markup=False, style="yellow")
    for item in comparison.unmatched:
        err.print(f"unmatched image {item.path}: {item.reason}", markup=False, style="yellow")
    if comparison.without_images and images is not None:
        names = ", ".join(comparison.without_images)
        err.print(f"outputs without images: {names}", markup=False, style="yellow")
