"""``mergelang convert [--from FORMAT] INPUT [-o OUT]``: another tool's merge as a recipe.

Reads INPUT (``-``: stdin; a ``.safetensors`` file: the merge recipe in its metadata) and
prints the canonical recipe, or writes it to OUT (refused if OUT exists, unless
``--force``; the file appears whole or not at all). Imports no torch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from mergelang.cli.options import STDIN_NAME, read_stdin_text
from mergelang.errors import OutputError, UsageError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="turn a Merge Board, MBW Each or SuperMerger merge into a recipe",
        description=(
            "Convert another tool's merge description into a canonical mergelang recipe: "
            "Merge Board recipes, MBW Each multi-merge command lines, SuperMerger "
            "block-weight and elemental strings, or a merge's sd_merge_recipe metadata "
            "(JSON, or read from a .safetensors file's header); given a .safetensors file "
            "that mergelang wrote, the recipe that made it, with the loop values of that "
            "output bound."
        ),
    )
    parser.add_argument("input", metavar="INPUT", help="the text to convert (- reads stdin)")
    parser.add_argument(
        "--from",
        dest="source",
        choices=("auto", "merge-board", "mbw-each", "supermerger", "comfyui"),
        default="auto",
        help="the input's format (default: auto, guessed from the text)",
    )
    parser.add_argument(
        "-o", "--output", type=Path, metavar="OUT", help="write the recipe here, not stdout"
    )
    parser.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    parser.set_defaults(handler=run_convert)


def _read_input(argument: str) -> tuple[str, str]:
    """``(text, name)`` of INPUT."""
    if argument == "-":
        return read_stdin_text(), STDIN_NAME
    if argument.lower().endswith(".safetensors"):
        from mergelang.io.safetensors_header import read_safetensors_header

        header = read_safetensors_header(argument)
        return json.dumps({"__metadata__": header.metadata}), argument
    return _read_recipe(argument), argument


def _own_recipe(argument: str) -> str | None:
    """The recipe that made INPUT, when INPUT is a safetensors file mergelang wrote."""
    if argument == "-" or not argument.lower().endswith(".safetensors"):
        return None
    from mergelang.convert.output_recipe import recipe_of_output
    from mergelang.io.safetensors_header import read_safetensors_header

    return recipe_of_output(read_safetensors_header(argument).metadata)


def _read_recipe(argument: str) -> str:
    from mergelang.io.text_files import read_recipe_text

    return read_recipe_text(argument)


def _write_new(path: Path, text: str) -> None:
    """Create ``path`` holding ``text``: written to a temporary file beside it, then renamed,
    so the recipe appears whole or not at all."""
    import contextlib
    import os
    import tempfile

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            handle.write(text.encode("utf-8"))
        os.chmod(temp_name, 0o644)
        os.replace(temp_name, path)
    except OSError as exc:
        with contextlib.suppress(OSError, UnboundLocalError):
            os.unlink(temp_name)
        raise OutputError(str(path), f"cannot write the recipe: {exc.strerror or exc}") from None


def _same_file(first: Path, second: Path) -> bool:
    try:
        return os.path.samefile(first, second)
    except OSError:
        return False


def run_convert(args: argparse.Namespace) -> int:
    from mergelang.cli.fmt import write_atomically
    from mergelang.convert import convert

    own = _own_recipe(args.input) if args.source in ("auto", "supermerger") else None
    if own is not None:
        recipe = own
    else:
        text, name = _read_input(args.input)
        recipe = convert(text, args.source, path=name)
    output: Path | None = args.output
    if output is None:
        sys.stdout.write(recipe)
        return 0
    if output.is_dir():
        raise UsageError(f"{output} is a folder", hint="-o names the recipe file to write")
    if args.input != "-" and output.exists() and _same_file(Path(args.input), output):
        raise OutputError(
            str(output),
            "refusing to overwrite the file being converted",
            code="overwrite-input",
            hint="write the recipe to another file with -o",
        )
    if output.exists() and not args.force:
        raise OutputError(
            str(output), "the file exists; not overwritten", hint="add --force to replace it"
        )
    if output.exists():
        write_atomically(output, recipe)
    else:
        _write_new(output, recipe)
    sys.stderr.write(f"wrote {output}\n")
    return 0
