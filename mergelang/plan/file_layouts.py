"""An output's file layout: all-in-one or bare key names, and what each leaves out.

Inputs are planned under the architecture's all-in-one names (a bare file's denoiser keys get
the denoiser's prefix when its handle is made), so a Black Forest Labs diffusion-only Flux
file lines up with a ComfyUI all-in-one checkpoint. :func:`lay_out` turns the canonical
output keys back into the names of the output's layout:

- the layout is the save's ``layout=`` option, else the first input's (the first model the
  saved expression reads, left to right);
- ``bare`` keeps the denoiser alone, its keys without the prefix; the VAE, the text encoders
  and everything else are left out, and the plan says how many keys that drops;
- ``all_in_one`` keeps every key under its prefix. The components a bare input lacks are
  taken unmerged from the first input that has them (in a two-model merge: as if the bare
  input's weight were 0 for them), and the plan says so. ``layout=all_in_one`` written out
  needs every component of the architecture: one no input has (nor a baked-in file) is an
  error naming it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from mergelang.arch import Architecture
from mergelang.arch.layout import FileLayout, output_name
from mergelang.errors import CheckpointError
from mergelang.io.save_options import OutputKey, SaveOptions
from mergelang.plan.graph import LoadNode, Node, walk

__all__ = ["lay_out", "loads_of", "output_file_layout"]


def loads_of(node: Node) -> list[LoadNode]:
    """The inputs ``node`` reads, each once, left to right."""
    return [n for n in walk([node]) if isinstance(n, LoadNode)]


def output_file_layout(node: Node, options: SaveOptions) -> FileLayout:
    """The layout the output of ``node`` is written in: the save's choice, else its first
    input's."""
    if options.layout is not None:
        return "bare" if options.layout == "bare" else "all_in_one"
    loads = loads_of(node)
    first = loads[0].handle.layout if loads else None
    return first or "all_in_one"


def lay_out(
    node: Node, options: SaveOptions, layout: Sequence[OutputKey], where: str
) -> tuple[list[OutputKey], tuple[str, ...]]:
    """The output keys under the names of the output's layout, and the notes the plan shows
    (see the module docstring). ``where`` names the output in errors."""
    arch = node.arch
    chosen = output_file_layout(node, options)
    if chosen == "bare":
        return _bare(arch, options, layout, where)
    notes: list[str] = []
    present = _components(arch, layout)
    if options.layout == "all_in_one":
        missing = [c for c in arch.components if c is not arch.denoiser and c.name not in present]
        if missing:
            titles = _titles([c.title for c in missing])
            raise CheckpointError(
                where,
                f"layout=all_in_one for '{where}' needs the {titles}, and no input has "
                f"{'it' if len(missing) == 1 else 'them'}",
                code="missing-component",
                hint="bake it in from its own file (vae=...), or save with layout=bare",
            )
    loads = loads_of(node)
    bare = [n for n in loads if n.handle.layout == "bare"]
    if bare and len(loads) > 1:
        taken = [c for c in arch.components if c is not arch.denoiser and c.name in present]
        sources = [n for n in loads if n.handle.layout != "bare"]
        if taken and sources:
            names = ", ".join(f"'{n.label}'" for n in bare)
            notes.append(
                f"{names} {'holds' if len(bare) == 1 else 'hold'} the {arch.denoiser.title} "
                f"alone: the {_titles([c.title for c in taken])} are taken unmerged from "
                f"the first input that has them ('{sources[0].label}')"
            )
    return list(layout), tuple(notes)


def _bare(
    arch: Architecture, options: SaveOptions, layout: Sequence[OutputKey], where: str
) -> tuple[list[OutputKey], tuple[str, ...]]:
    if options.vae is not None:
        raise CheckpointError(
            where,
            f"vae= bakes a VAE in, but a bare output holds the {arch.denoiser.title} alone",
            code="bad-save-option",
            hint="save with layout=all_in_one to bake the VAE in",
        )
    kept: list[OutputKey] = []
    dropped: dict[str, int] = {}
    for item in layout:
        name = output_name(arch, item.key, "bare")
        if name is None:
            found = arch.component_of(item.key)
            title = found[0].title if found is not None else "other keys"
            dropped[title] = dropped.get(title, 0) + 1
            continue
        kept.append(dataclasses.replace(item, key=name, source_key=item.read_key))
    notes: tuple[str, ...] = ()
    if dropped:
        count = sum(dropped.values())
        notes = (
            f"layout bare: the {arch.denoiser.title} alone, without its prefix; "
            f"{count} keys left out ({_titles(list(dropped))})",
        )
    return kept, notes


def _components(arch: Architecture, layout: Sequence[OutputKey]) -> set[str]:
    found: set[str] = set()
    for item in layout:
        comp = arch.component_of(item.key)
        if comp is not None:
            found.add(comp[0].name)
    return found


def _titles(titles: Sequence[str]) -> str:
    items = list(titles)
    if len(items) < 2:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]
