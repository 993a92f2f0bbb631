"""ComfyUI's per-architecture merge nodes (ModelMergeFlux1, ModelMergeSD3_2B,
ModelMergeSD35_Large) as weighted sums with per-block weights.

The input is a ComfyUI workflow as JSON, in the API form (``{"12": {"class_type": ...,
"inputs": {...}}}``) or the editor's form (``{"nodes": [{"type": ..., "widgets_values":
[...]}]}``). Every merge node of those classes becomes one ``save weighted_sum(model1,
model2, alpha=...)``; models come from the loader node a model input links to (its
``ckpt_name`` or ``unet_name``), or are named ``model1`` / ``model2``.

A slider's value is model1's share (``1.0`` keeps model1), so the direction is reversed
against MBW's: mergelang's ``alpha``, model2's share, is ``1 - ratio``. Sliders map to the
blocks of :mod:`mergelang.arch.flux` and :mod:`mergelang.arch.sd3`: the double and single
(or joint) blocks one to one, the embedding sliders to ``IN`` (the first slider's value, the
others as elemental entries where they differ) and ``final_layer.`` to ``OUT``. The nodes merge
the diffusion model only, so the text encoders (and SD3's VAE) keep model1's weights.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mergelang.block_weights import BASE, format_number
from mergelang.convert.recipe_writer import RecipeWriter, convert_error
from mergelang.lang.formatter import format_string

__all__ = ["NODES", "SliderNode", "convert_comfyui"]


@dataclass(frozen=True)
class SliderNode:
    """One ComfyUI merge node: its sliders in widget order and the block each one sets
    (``None``: the IN block, set by the first embedding slider), and the blocks it never
    merges."""

    title: str
    embedders: tuple[str, ...]
    blocks: tuple[tuple[str, str], ...]
    """(slider, block) for the numbered blocks, then ``final_layer.`` -> OUT."""
    unmerged: tuple[str, ...]

    @property
    def sliders(self) -> tuple[str, ...]:
        return (*self.embedders, *(slider for slider, _ in self.blocks))


def _flux() -> SliderNode:
    doubles = tuple((f"double_blocks.{i}.", f"D{i:02d}") for i in range(19))
    singles = tuple((f"single_blocks.{i}.", f"S{i:02d}") for i in range(38))
    return SliderNode(
        "Flux.1",
        ("img_in.", "time_in.", "guidance_in", "vector_in.", "txt_in."),
        (*doubles, *singles, ("final_layer.", "OUT")),
        ("CLIP", "T5"),
    )


def _sd3(depth: int, title: str) -> SliderNode:
    joints = tuple((f"joint_blocks.{i}.", f"J{i:02d}") for i in range(depth))
    return SliderNode(
        title,
        ("pos_embed.", "x_embedder.", "context_embedder.", "y_embedder.", "t_embedder."),
        (*joints, ("final_layer.", "OUT")),
        ("CLIP_L", "CLIP_G", "T5", "VAE"),
    )


NODES: dict[str, SliderNode] = {
    "ModelMergeFlux1": _flux(),
    "ModelMergeSD3_2B": _sd3(24, "SD3 Medium"),
    "ModelMergeSD35_Large": _sd3(38, "SD3.5 Large"),
}
"""ComfyUI class name -> its sliders and blocks."""

_LOADER_INPUTS = ("ckpt_name", "unet_name", "model_name")


@dataclass(frozen=True)
class _Found:
    node_id: str
    class_type: str
    ratios: dict[str, float]
    models: tuple[str | None, str | None]


def convert_comfyui(text: str, path: str | None = None) -> str:
    """The recipe for every ComfyUI Flux.1 / SD3 merge node of the workflow ``text``."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise convert_error(
            f"not a ComfyUI workflow: {exc.msg}",
            path,
            exc.lineno,
            exc.colno,
            source=text,
            code="comfyui",
        ) from None
    found = _nodes(data, text, path)
    if not found:
        known = ", ".join(NODES)
        raise convert_error(
            f"no ComfyUI merge node of a known class ({known}) in the workflow",
            path,
            1,
            1,
            source=text,
            code="comfyui",
        )
    out = RecipeWriter()
    models: dict[str, str] = {}
    saves: list[str] = []
    for index, node in enumerate(found):
        spec = NODES[node.class_type]
        names: list[str] = []
        for slot, default in zip(node.models, ("model1", "model2"), strict=True):
            ref = slot if slot is not None else f"{default}.safetensors"
            if ref not in models:
                models[ref] = out.new_name(ref.rsplit("/", 1)[-1].rsplit(".", 1)[0])
            names.append(models[ref])
        alpha = _alpha_map(spec, node, text, path)
        target = "merged.safetensors" if index == 0 else f"merged_{index + 1}.safetensors"
        saves.append(
            f"save weighted_sum({names[0]}, {names[1]}, alpha={alpha}) to {format_string(target)}"
        )
    out.comment(
        "ComfyUI merge nodes: a slider is model1's share, so alpha (model2's) is 1 - ratio;\n"
        "the text encoders are not merged (model1's)."
    )
    for ref, name in models.items():
        out.statement(f"model {name} = {format_string(ref)}")
    out.blank()
    for line in saves:
        out.statement(line)
    return out.text()


def _alpha_map(spec: SliderNode, node: _Found, text: str, path: str | None) -> str:
    missing = [s for s in spec.sliders if s not in node.ratios]
    if missing:
        line, column = _position(text, node.node_id, node.class_type)
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise convert_error(
            f"{node.class_type} node {node.node_id} has no value for {len(missing)} sliders "
            f"({shown})",
            path,
            line,
            column,
            source=text,
            code="comfyui",
        )

    def alpha(slider: str) -> str:
        return format_number(round(1.0 - node.ratios[slider], 12))

    first, *others = spec.embedders
    entries = [f"IN: {alpha(first)}"]
    entries += _runs([(block, alpha(slider)) for slider, block in spec.blocks])
    entries += [f"{block}: 0" for block in (*spec.unmerged, BASE)]
    for slider in others:
        if node.ratios[slider] != node.ratios[first]:
            glob = f"*.{slider}*" if slider.endswith(".") else f"*.{slider}.*"
            entries.append(f"{format_string(glob)} in IN: {alpha(slider)}")
    return "{" + ", ".join(entries) + "}"


def _runs(values: Sequence[tuple[str, str]]) -> list[str]:
    """Map entries for blocks in order, consecutive blocks of one value as a range:
    ``D00..D18: 0.3``."""
    entries: list[str] = []
    start = 0
    for end in range(1, len(values) + 1):
        if end < len(values) and values[end][1] == values[start][1]:
            continue
        first, value = values[start]
        last = values[end - 1][0]
        entries.append(f"{first}: {value}" if first == last else f"{first}..{last}: {value}")
        start = end
    return entries


def _position(text: str, node_id: str, class_type: str) -> tuple[int, int]:
    """Line and column of the node's class name in the JSON text (1:1 when not found)."""
    at = text.find(f'"{class_type}"')
    if at < 0:
        return 1, 1
    line = text.count("\n", 0, at) + 1
    return line, at - (text.rfind("\n", 0, at) + 1) + 1


def _nodes(data: Any, text: str, path: str | None) -> list[_Found]:
    if isinstance(data, Mapping) and isinstance(data.get("nodes"), list):
        return _editor_nodes(data["nodes"], text, path)
    if not isinstance(data, Mapping):
        raise convert_error(
            "not a ComfyUI workflow: expected a JSON object",
            path,
            1,
            1,
            source=text,
            code="comfyui",
        )
    found: list[_Found] = []
    for node_id, node in data.items():
        if not isinstance(node, Mapping) or node.get("class_type") not in NODES:
            continue
        inputs = node.get("inputs", {})
        ratios = {k: float(v) for k, v in inputs.items() if isinstance(v, int | float)}
        models = (_loader(data, inputs.get("model1")), _loader(data, inputs.get("model2")))
        found.append(_Found(str(node_id), str(node["class_type"]), ratios, models))
    return found


def _loader(data: Mapping[str, Any], link: Any) -> str | None:
    """The file the loader node at the other end of an API-form link loads, if any."""
    if not isinstance(link, Sequence) or isinstance(link, str) or not link:
        return None
    source = data.get(str(link[0]))
    if not isinstance(source, Mapping):
        return None
    inputs = source.get("inputs", {})
    for name in _LOADER_INPUTS:
        value = inputs.get(name)
        if isinstance(value, str) and value:
            return value
    return None


def _editor_nodes(nodes: Sequence[Any], text: str, path: str | None) -> list[_Found]:
    found: list[_Found] = []
    for node in nodes:
        if not isinstance(node, Mapping) or node.get("type") not in NODES:
            continue
        class_type = str(node["type"])
        spec = NODES[class_type]
        values = node.get("widgets_values") or []
        numbers = [float(v) for v in values if isinstance(v, int | float)]
        if len(numbers) != len(spec.sliders):
            line, column = _position(text, str(node.get("id")), class_type)
            raise convert_error(
                f"{class_type} node {node.get('id')} has {len(numbers)} slider values, "
                f"not {len(spec.sliders)}",
                path,
                line,
                column,
                source=text,
                code="comfyui",
            )
        ratios = dict(zip(spec.sliders, numbers, strict=True))
        found.append(_Found(str(node.get("id")), class_type, ratios, (None, None)))
    return found
