"""``mergelang show FILE``: what a checkpoint is, without loading its tensors.

Prints the format, size, architecture and variant (or why it is unknown, as a warning), key
and parameter counts by role, dtypes, the file's hashes (AutoV2, sha256, legacy; through the
hash cache), the recipe it was made with (mergelang's own, or A1111's ``sd_merge_recipe``)
and its other metadata. ``--json`` prints one JSON object with stable keys instead.

A safetensors file is described from its header alone, without torch; a pickle ``.ckpt`` needs
torch's weights-only loader.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mergelang.errors import CheckpointError

if TYPE_CHECKING:
    from rich.console import Console

    from mergelang.io.metadata import Provenance

PROVENANCE_KEYS = frozenset({"sd_merge_recipe", "sd_merge_models"})
VALUE_WIDTH = 160
"""Metadata values longer than this are shortened in the human-readable output."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "show",
        help="describe a checkpoint: architecture, keys, dtypes, hashes, recipe",
        description=(
            "Describe a checkpoint without loading its tensors: format, size, architecture "
            "and variant, keys and parameters by role, dtypes, hashes, the recipe it was "
            "made with and its other metadata."
        ),
    )
    parser.add_argument("file", metavar="FILE", help="a .safetensors or .ckpt checkpoint")
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object instead of tables"
    )
    parser.add_argument(
        "--hashes",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="compute the file's sha256, AutoV2 and legacy hashes (cached; default: on)",
    )
    parser.set_defaults(handler=run_show)


def run_show(args: argparse.Namespace) -> int:
    info = describe_checkpoint(Path(args.file), hashes=args.hashes)
    from mergelang.cli.console import stdout_console

    if args.json:
        print(json.dumps(info, indent=2, ensure_ascii=False))
    else:
        _render(stdout_console(), info)
    return 0


def _read(
    path: Path, fmt: str
) -> tuple[dict[str, tuple[int, ...]], dict[str, str], dict[str, str], int]:
    """Shapes, dtype codes and metadata of every key, and the file size. The dtypes are as
    stored: ``F8_E4M3`` for a scaled fp8 weight (whose scales are not model keys), the GGML
    type (``Q8_0``...) of a GGUF tensor."""
    if fmt == "safetensors":
        from mergelang.io.safetensors_header import read_safetensors_header
        from mergelang.io.scaled_fp8 import is_scaled, model_metas

        header = read_safetensors_header(path)
        tensors = header.tensors
        metas = model_metas(tensors, path) if is_scaled(tensors) else tensors
        shapes = {key: tuple(meta.shape) for key, meta in metas.items()}
        dtypes = {key: header.tensors[key].dtype for key in shapes}
        return shapes, dtypes, dict(header.metadata), header.file_size
    if fmt == "gguf":
        from mergelang.io.gguf_format import GGUFCheckpoint

        with GGUFCheckpoint(path) as gguf_file:
            shapes = gguf_file.shapes()
            dtypes = {key: gguf_file.quant_type(key) for key in shapes}
            metadata = dict(gguf_file.metadata)
        return shapes, dtypes, metadata, path.stat().st_size
    from mergelang.io.readers import open_checkpoint

    with open_checkpoint(path) as reader:
        keys = reader.keys()
        shapes = {key: tuple(reader.info(key).shape) for key in keys}
        dtypes = {key: reader.info(key).dtype for key in keys}
        metadata = dict(reader.metadata)
    return shapes, dtypes, metadata, path.stat().st_size


def _is_recipe(path: Path) -> bool:
    """Whether ``path`` is a recipe: named ``.merge``, or text that parses as one."""
    if path.suffix.lower() == ".merge":
        return True
    from mergelang.errors import MergelangError
    from mergelang.lang.parser import parse_file

    try:
        parse_file(path)
    except (MergelangError, OSError):
        return False
    return True


def describe_checkpoint(path: Path, *, hashes: bool = True) -> dict[str, Any]:
    """Everything ``show`` reports, as a JSON-ready dict with a fixed set of keys."""
    from mergelang.arch import ROLES, classify_role, detect
    from mergelang.io.file_formats import format_of_content
    from mergelang.io.formats import sniff_format
    from mergelang.io.metadata import read_provenance

    try:
        fmt = format_of_content(sniff_format(path)).name
    except CheckpointError as exc:
        if exc.diagnostics[0].code == "unknown-format" and _is_recipe(path):
            raise CheckpointError(
                str(path),
                "this is a mergelang recipe, not a checkpoint",
                code="recipe-not-checkpoint",
                hint=f"to see what it would make: mergelang plan {path}",
            ) from None
        raise
    shapes, dtypes, metadata, size = _read(path, fmt)

    architecture: dict[str, Any] | None = None
    detection_error: str | None = None
    arch = None
    try:
        found = detect(shapes, path=str(path))
    except CheckpointError as exc:
        detection_error = exc.message
    else:
        arch = found.arch
        architecture = {
            "name": arch.name,
            "title": arch.title,
            "variant": found.variant,
            "notes": list(found.notes),
        }

    roles: dict[str, dict[str, int]] = {}
    for key, shape in shapes.items():
        role = classify_role(key, arch)
        entry = roles.setdefault(role, {"keys": 0, "parameters": 0})
        entry["keys"] += 1
        entry["parameters"] += math.prod(shape)
    ordered_roles = {role: roles[role] for role in ROLES if role in roles}

    counts: dict[str, int] = {}
    for code in dtypes.values():
        counts[code] = counts.get(code, 0) + 1
    ordered_dtypes = dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))

    hash_info: dict[str, str] | None = None
    if hashes:
        from mergelang.io.hashing import file_hashes

        try:
            digest = file_hashes(path)
        except OSError as exc:
            raise CheckpointError(
                str(path), f"cannot hash: {exc.strerror}", code="unreadable"
            ) from None
        hash_info = {"autov2": digest.autov2, "sha256": digest.sha256, "legacy": digest.legacy}

    provenance = read_provenance(metadata)
    other = {
        key: value
        for key, value in metadata.items()
        if not key.startswith("mergelang.") and key not in PROVENANCE_KEYS
    }
    return {
        "path": str(path),
        "format": fmt,
        "size": size,
        "architecture": architecture,
        "detection_error": detection_error,
        "keys": len(shapes),
        "parameters": sum(math.prod(shape) for shape in shapes.values()),
        "roles": ordered_roles,
        "dtypes": ordered_dtypes,
        "hashes": hash_info,
        "recipe": _provenance_json(provenance, metadata),
        "metadata": other,
    }


def _loop_values(metadata: Mapping[str, str]) -> dict[str, str]:
    """``mergelang.bindings``: the values of the ``for`` loops around the save that made
    this file (empty when none)."""
    try:
        found = json.loads(metadata.get("mergelang.bindings", "{}"))
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}


def _provenance_json(
    provenance: Provenance | None, metadata: Mapping[str, str]
) -> dict[str, Any] | None:
    if provenance is None:
        return None
    return {
        "tool": provenance.tool,
        "text": provenance.recipe,
        "version": provenance.version,
        "format_version": provenance.format_version,
        "inputs": [record.to_json() for record in provenance.inputs],
        "sd_merge_recipe": provenance.merge_recipe,
        "sd_merge_models": provenance.merge_models,
        "problems": list(provenance.problems),
        "loop_values": _loop_values(metadata),
    }


def human_size(size: int) -> str:
    """``2,132,625,612 bytes`` -> ``2.13 GB`` (decimal units, as file managers show)."""
    value = float(size)
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{size} bytes" if unit == "bytes" else f"{value:.2f} {unit}"
        value /= 1000
    return f"{size} bytes"


def _shorten(text: str, width: int = VALUE_WIDTH) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _render(console: Console, info: Mapping[str, Any]) -> None:
    from rich.table import Table

    from mergelang.cli.console import shown as escape

    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold")
    summary.add_column()
    summary.add_row("file", escape(info["path"]))
    summary.add_row("format", info["format"])
    summary.add_row("size", f"{human_size(info['size'])} ({info['size']:,} bytes)")
    arch = info["architecture"]
    if arch is not None:
        summary.add_row(
            "architecture", f"{arch['name']} ({escape(arch['title'])}), {arch['variant']}"
        )
        for note in arch["notes"]:
            summary.add_row("", f"[dim]{escape(note)}[/dim]")
    else:
        summary.add_row("architecture", "[yellow]unknown[/yellow]")
    summary.add_row("keys", f"{info['keys']:,}")
    summary.add_row("parameters", f"{info['parameters']:,}")
    hashes = info["hashes"]
    if hashes is not None:
        summary.add_row("AutoV2", hashes["autov2"])
        summary.add_row("sha256", hashes["sha256"])
        summary.add_row("legacy hash", hashes["legacy"])
    console.print(summary)
    if info["detection_error"] is not None:
        _warn_detection(info)

    roles = Table(title="keys by role", title_justify="left")
    roles.add_column("role")
    roles.add_column("keys", justify="right")
    roles.add_column("parameters", justify="right")
    for role, entry in info["roles"].items():
        roles.add_row(role, f"{entry['keys']:,}", f"{entry['parameters']:,}")
    dtypes = Table(title="dtypes", title_justify="left")
    dtypes.add_column("dtype")
    dtypes.add_column("keys", justify="right")
    for code, count in info["dtypes"].items():
        dtypes.add_row(code, f"{count:,}")
    console.print(roles)
    console.print(dtypes)

    recipe = info["recipe"]
    if recipe is not None:
        _render_recipe(console, recipe)
        _render_weights(console, info)
    if info["metadata"]:
        meta = Table(title="metadata", title_justify="left")
        meta.add_column("key")
        meta.add_column("value")
        for key, value in info["metadata"].items():
            meta.add_row(escape(key), escape(_shorten(value)))
        console.print(meta)


def _warn_detection(info: Mapping[str, Any]) -> None:
    from mergelang.cli.console import print_diagnostics, stderr_console
    from mergelang.errors import Diagnostic

    diagnostic = Diagnostic(
        info["detection_error"], "unknown-architecture", path=info["path"], severity="warning"
    )
    print_diagnostics(stderr_console(), [diagnostic])


def _render_weights(console: Console, info: Mapping[str, Any]) -> None:
    """The block weights of the step that wrote the file, drawn as the U-Net's U, when its
    embedded mergelang recipe gives them (see :func:`mergelang.report.outputs.read_output`)."""
    if info["format"] != "safetensors" or info["architecture"] is None:
        return
    if info["recipe"]["text"] is None:
        return
    from mergelang.report.outputs import read_output
    from mergelang.report.terminal import weights_text

    output = read_output(Path(info["path"]), hashes=False)
    if output.weights is None or output.architecture is None:
        return
    title = f"block weights ({output.weight_label})"
    console.print(
        weights_text(
            output.weights, output.architecture.scheme, title=title, changed=output.changed
        )
    )


def _render_recipe(console: Console, recipe: Mapping[str, Any]) -> None:
    from mergelang.cli.console import shown as escape

    tool = recipe["tool"] or "unknown tool"
    version = f" {recipe['version']}" if recipe["version"] else ""
    console.print(f"[bold]made by[/bold] {escape(tool)}{escape(version)}")
    if recipe["text"] is not None:
        console.print("[bold]recipe[/bold]")
        for line in recipe["text"].splitlines():
            console.print("  " + escape(line))
    loops = recipe.get("loop_values") or {}
    if loops:
        shown = ", ".join(f"{name} = {value}" for name, value in loops.items())
        console.print(f"[bold]loop values[/bold] {escape(shown)}")
    for record in recipe["inputs"]:
        line = f"  input {record['name']}: {record['file']} [{record['autov2']}]"
        console.print(escape(line))
    merge_recipe = recipe["sd_merge_recipe"]
    if merge_recipe is not None and recipe["text"] is None:
        console.print("[bold]sd_merge_recipe[/bold]")
        for key, value in merge_recipe.items():
            shown = value if isinstance(value, str) else json.dumps(value)
            console.print(f"  {escape(str(key))}: {escape(_shorten(shown))}")
    models = recipe["sd_merge_models"]
    if models:
        console.print(f"[bold]sd_merge_models[/bold]: {len(models)} models")
        for sha, entry in models.items():
            name = entry.get("name") if isinstance(entry, dict) else None
            console.print(f"  {escape(str(sha)[:10])} {escape(str(name))}")
    for problem in recipe["problems"]:
        console.print(f"  [yellow]unreadable:[/yellow] {escape(problem)}")
