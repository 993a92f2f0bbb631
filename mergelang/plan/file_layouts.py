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
from collections.abc import Mapping, Sequence
from functools import cache

from mergelang.arch import Architecture, Component
from mergelang.arch.layout import FileLayout, output_name
from mergelang.errors import CheckpointError
from mergelang.io.save_choices import COMPONENT_FILES
from mergelang.io.save_options import OutputKey, SaveOptions, layout_code
from mergelang.plan.graph import LoadNode, Node, walk
from mergelang.plan.inputs import KeyMeta

COMFY_HEAD = "transformer."
"""What ComfyUI puts before a text encoder's own key names inside a checkpoint
(``text_encoders.t5xxl.transformer.encoder...``); a separate file (``t5xxl_fp16.safetensors``,
``clip_l.safetensors``) stores them without it."""

__all__ = ["bake_components", "lay_out", "loads_of", "output_file_layout"]


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
    node: Node,
    options: SaveOptions,
    layout: Sequence[OutputKey],
    where: str,
    *,
    baked: bool = False,
) -> tuple[list[OutputKey], tuple[str, ...]]:
    """The output keys under the names of the output's layout, and the notes the plan shows
    (see the module docstring). ``where`` names the output in errors; ``baked``: the save
    bakes text-encoder files in."""
    arch = node.arch
    chosen = output_file_layout(node, options)
    if chosen == "bare":
        return _bare(arch, options, layout, where, baked)
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
                hint="bake it in from its own file (vae=, clip_l=, clip_g=, t5=), or save "
                "with layout=bare",
            )
    loads = loads_of(node)
    bare = [n for n in loads if n.handle.layout == "bare"]
    if bare and len(loads) > 1:
        merged = _components(arch, [i for i in layout if i.source in ("model", "position_ids")])
        taken = [c for c in arch.components if c is not arch.denoiser and c.name in merged]
        sources = [n for n in loads if n.handle.layout != "bare"]
        if taken and sources:
            names = ", ".join(f"'{n.label}'" for n in bare)
            notes.append(
                f"{names} {'holds' if len(bare) == 1 else 'hold'} the {arch.denoiser.title} "
                f"alone: the {_titles([c.title for c in taken])} are taken unmerged from "
                f"the first input that has them ('{sources[0].label}')"
            )
    return list(layout), tuple(notes)


def baked_component(arch: Architecture, option: str, where: str) -> Component:
    """The component a save's text-encoder option (``clip_l``, ``clip_g``, ``t5``) bakes in;
    an error when the architecture has none."""
    name = COMPONENT_FILES[option]
    for comp in arch.components:
        if comp.name == name:
            return comp
    have = [o for o, n in COMPONENT_FILES.items() if any(c.name == n for c in arch.components)]
    raise CheckpointError(
        where,
        f"{option}= bakes in a text encoder {arch.title} models do not have",
        code="bad-save-option",
        hint=f"{arch.title} takes {', '.join(o + '=' for o in have)}" if have else None,
    )


@cache
def _local_names(comp: Component) -> frozenset[str]:
    return frozenset(comp.spec.layout(1.0))


def component_index(comp: Component, header: Mapping[str, KeyMeta], label: str) -> dict[str, str]:
    """The component's local key name -> the key in its own file, whose keys may carry the
    component's checkpoint prefix, its local names, or (a separate text-encoder file) the
    names without ComfyUI's ``transformer.``. A file with none of them is an error."""
    names = _local_names(comp)
    index: dict[str, str] = {}
    for key in header:
        if key.startswith(comp.prefix):
            local = key[len(comp.prefix) :]
        elif key in names:
            local = key
        else:
            local = COMFY_HEAD + key
        if local in names:
            index.setdefault(local, key)
    if not index:
        shown = ", ".join(list(header)[:3])
        raise CheckpointError(
            label,
            f"the file holds none of the {comp.title}'s keys (it has {shown}, ...)",
            code="component-missing-key",
        )
    return index


def bake_components(
    arch: Architecture,
    layout: Sequence[OutputKey],
    files: Sequence[tuple[Component, Mapping[str, KeyMeta], str]],
    options: SaveOptions,
) -> list[OutputKey]:
    """``layout`` with each component of ``files`` (its component, the file's header, the
    file's label) read from that file: a key the model has keeps its dtype and must have the
    file's shape; a component the model lacks is added under its prefix, after the rest."""
    out = list(layout)
    for comp, header, label in files:
        index = component_index(comp, header, label)
        optional = comp.spec.optional_keys()
        found = False
        for position, item in enumerate(out):
            local = comp.local(item.key)
            if local is None or item.source == "position_ids":
                continue
            found = True
            source = index.get(local)
            if source is None:
                if local in optional:
                    continue
                raise CheckpointError(
                    label,
                    f"the {comp.title} file has no {local!r}, which the model's {item.key!r} needs",
                    code="component-missing-key",
                    key=local,
                )
            shape = tuple(header[source].shape)
            if shape != item.shape:
                raise CheckpointError(
                    label,
                    f"shape {list(shape)} in the {comp.title} file, but {list(item.shape)} for "
                    f"{item.key!r} in the model",
                    code="component-shape-mismatch",
                    key=source,
                )
            out[position] = OutputKey(
                item.key, item.dtype, shape, "component", source, component=comp.name
            )
        if not found:
            for local, source in index.items():
                meta = header[source]
                shape = tuple(meta.shape)
                code = layout_code(meta.dtype, options, shape)
                out.append(
                    OutputKey(
                        comp.prefix + local, code, shape, "component", source, component=comp.name
                    )
                )
    return out


def _bare(
    arch: Architecture,
    options: SaveOptions,
    layout: Sequence[OutputKey],
    where: str,
    baked: bool = False,
) -> tuple[list[OutputKey], tuple[str, ...]]:
    if options.vae is not None or baked:
        raise CheckpointError(
            where,
            f"a bare output holds the {arch.denoiser.title} alone: it has no place for the "
            "files the save bakes in",
            code="bad-save-option",
            hint="save with layout=all_in_one to bake them in",
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
