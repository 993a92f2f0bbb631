"""SuperMerger input: block-weight and elemental strings, or a whole merge's recipe.

Two inputs are accepted:

- text: each line a block-weight string (26/25/20/19 numbers, 61/59 for Flux.1, or a preset
  name) or an
  elemental entry (``BLOCKS:ELEMENTS:RATIO``; commas may separate several on one line).
  Each block-weight line becomes ``weights = ...`` (``weights_2``, ... for more lines);
  elemental lines are appended, in order, to the map of the block-weight line before them,
  or make an ``elemental = {...}`` map when none comes before.
- JSON: the ``sd_merge_recipe`` object SuperMerger (and A1111's merger) write into a
  merged file's metadata, the whole ``__metadata__`` object holding it, or a safetensors
  file's header. It becomes a recipe with the merge's models, method and weights; the
  output is ``merged.safetensors`` (the recipe records no output name), and the recipe
  chooses ``convention supermerger`` so keys go to the blocks SuperMerger gives them.

SuperMerger's modes and calculation modes map to mergelang methods as in :data:`MODES`
and :data:`CALCMODES`.
"""

from __future__ import annotations

import json
from typing import Any

from mergelang.block_weights import format_number
from mergelang.convert.recipe_writer import (
    RecipeWriter,
    convert_error,
    format_weight_map,
    identifier_for,
    weights_from_vector,
)
from mergelang.convert.supermerger_weights import (
    block_weight_values,
    format_elemental,
    parse_elemental,
)
from mergelang.errors import RecipeError
from mergelang.lang.formatter import format_string

__all__ = ["CALCMODES", "MODES", "convert_supermerger"]

MODES: dict[str, tuple[str, int, bool]] = {
    "weight sum": ("weighted_sum", 2, False),
    "weighted sum": ("weighted_sum", 2, False),
    "add difference": ("add_difference", 3, False),
    "triple sum": ("triple_sum", 3, True),
    "sum twice": ("sum_twice", 3, True),
}
"""SuperMerger mode (the text before ``:``, any case) -> (method, models, uses beta)."""

CALCMODES: dict[str, tuple[str, int, bool]] = {
    "cosinea": ("cosine_a", 2, False),
    "cosineb": ("cosine_b", 2, False),
    "traindifference": ("train_difference", 3, False),
    "smoothadd": ("smooth_add", 3, False),
    "extract": ("extract", 3, True),
    "tensor": ("tensor_sum", 2, True),
}
"""SuperMerger calcmode (any case, spaces ignored) -> (method, models, uses beta); ``normal``
keeps the mode's method."""


def _weights_text(
    values: list[float] | str, elemental: list[str], base: float | None = None
) -> str:
    if not elemental:
        if isinstance(values, str):
            from mergelang.presets import preset_identifier

            return preset_identifier(values)
        if base is not None and len(values) in (25, 19):
            values = [base, *values]
        elif base is not None and len(values) == 59:
            # Flux.1 without CLIP and T5: those follow BASE, which a list cannot hold
            return format_weight_map(weights_from_vector(values, base=base))
        return "[" + ", ".join(format_number(v) for v in values) + "]"
    if isinstance(values, str):
        from mergelang.presets import BUILTIN_PRESETS

        preset = BUILTIN_PRESETS[values]
        numbers = list(preset.vector or ())
        weights = weights_from_vector(numbers, base=preset.base if base is None else base)
    elif len(values) in (26, 20):
        weights = weights_from_vector(values[1:], base=values[0])
    else:
        weights = weights_from_vector(values, base=base)
    return format_weight_map(weights, elemental)


def _convert_text(text: str, path: str | None) -> str:
    groups: list[tuple[list[float] | str | None, list[str]]] = []
    for number, line_text in enumerate(text.splitlines(), start=1):
        stripped = line_text.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if ":" in stripped:
            entries = parse_elemental(line_text, path, number, 1)
            if not groups:
                groups.append((None, []))
            groups[-1][1].extend(format_elemental(e) for e in entries)
        else:
            groups.append((block_weight_values(line_text, path, number, 1, source=text), []))
    if not groups:
        raise convert_error("no SuperMerger weights found", path, 1, 1, code="supermerger")
    writer = RecipeWriter()
    for values, elemental in groups:
        if values is None:
            writer.statement(f"{writer.new_name('elemental')} = {{{', '.join(elemental)}}}")
        else:
            writer.statement(f"{writer.new_name('weights')} = {_weights_text(values, elemental)}")
    return writer.text()


def _recipe_object(data: Any, path: str | None) -> dict[str, Any]:
    """The ``sd_merge_recipe`` object inside what was given."""
    if isinstance(data, dict) and "__metadata__" in data:
        data = data["__metadata__"]
    if isinstance(data, dict) and "sd_merge_recipe" in data:
        data = data["sd_merge_recipe"]
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except json.JSONDecodeError as exc:
                raise convert_error(
                    f"sd_merge_recipe is not JSON: {exc.msg}", path, 1, 1, code="supermerger"
                ) from None
    if not isinstance(data, dict):
        raise convert_error(
            "expected a JSON object (sd_merge_recipe)", path, 1, 1, code="supermerger"
        )
    return data


def _number_field(recipe: dict[str, Any], key: str, path: str | None) -> float | None:
    value = recipe.get(key)
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise convert_error(
            f"{key} is not a number: {value!r}", path, 1, 1, code="supermerger"
        ) from None


def _weights_field(recipe: dict[str, Any], key: str, path: str | None) -> list[float] | str | None:
    """The block weights under ``key`` (numbers, or a preset name); ``None`` if unset."""
    value = recipe.get(key)
    if value is None or value in ("", False):
        return None
    if isinstance(value, int | float):
        return [float(value)]
    if isinstance(value, list):
        value = ",".join(str(v) for v in value)
    if not isinstance(value, str):
        raise convert_error(f"{key} is not a weights string", path, 1, 1, code="supermerger")
    try:
        return block_weight_values(value, path)
    except RecipeError as exc:
        raise convert_error(
            f"{key}: {exc.diagnostics[0].message}", path, 1, 1, code="supermerger"
        ) from None


def _weights_value(
    values: list[float] | str | None, base: float | None, elemental: list[str]
) -> str | None:
    if values is None:
        if base is None:
            return None if not elemental else _weights_value([0.5], None, elemental)
        values = [base]
    if isinstance(values, list) and len(values) == 1:
        if not elemental:
            return format_number(values[0])
        return "{" + ", ".join([f"default: {format_number(values[0])}", *elemental]) + "}"
    return _weights_text(values, elemental, base)


def _convert_json(data: Any, path: str | None) -> str:
    recipe = _recipe_object(data, path)
    if recipe.get("type") == "webui" or "interp_method" in recipe:
        return _convert_webui(recipe, path)
    mode = str(recipe.get("mode", "Weight sum")).split(":")[0].strip().lower()
    calcmode = str(recipe.get("calcmode", "normal")).replace(" ", "").lower()
    if calcmode in ("", "normal"):
        chosen = MODES.get(mode)
        what = f"mode {recipe.get('mode')!r}"
    else:
        chosen = CALCMODES.get(calcmode)
        what = f"calcmode {recipe.get('calcmode')!r}"
    if chosen is None:
        raise convert_error(
            f"{what} has no mergelang method",
            path,
            1,
            1,
            code="supermerger",
            hint="modes: " + ", ".join(MODES) + "; calcmodes: normal, " + ", ".join(CALCMODES),
        )
    method, count, uses_beta = chosen
    base_alpha = _number_field(recipe, "base_alpha", path)
    base_beta = _number_field(recipe, "base_beta", path)
    use_blocks = recipe.get("mbw", True) not in (False, "False", "false")
    alpha_values = _weights_field(recipe, "weights_alpha", path) if use_blocks else None
    beta_values = _weights_field(recipe, "weights_beta", path) if use_blocks else None
    elemental_text = recipe.get("elemental_merge") or ""
    if isinstance(elemental_text, list):
        # SuperMerger's form since 2023-04: the string split at commas and newlines
        elemental_text = "\n".join(e for e in elemental_text if isinstance(e, str) and e.strip())
    entries: list[str] = []
    if isinstance(elemental_text, str) and elemental_text.strip():
        entries = [format_elemental(e) for e in parse_elemental(elemental_text, path)]
    alpha = _weights_value(alpha_values, base_alpha, entries) or "0.5"
    beta = _weights_value(beta_values, base_beta, [])
    writer = RecipeWriter()
    writer.statement("convention supermerger")
    names = []
    for key in ("model_a", "model_b", "model_c")[:count]:
        ref = recipe.get(key)
        if not isinstance(ref, str) or not ref:
            raise convert_error(
                f"{method} needs {key}, which the recipe does not give",
                path,
                1,
                1,
                code="supermerger",
            )
        name = writer.new_name(key)
        names.append(name)
        writer.statement(f"model {name} = {format_string(ref)}")
    writer.blank()
    args = ", ".join(names) + f", alpha={alpha}"
    if uses_beta and beta is not None:
        args += f", beta={beta}"
    elif uses_beta and method in ("triple_sum", "sum_twice"):
        args += ", beta=0"
    mode_text = recipe.get("mode", "Weight sum")
    writer.comment(f"SuperMerger: mode {mode_text}, calcmode {recipe.get('calcmode', 'normal')}")
    writer.statement(f"merged = {method}({args})")
    writer.statement('save merged to "merged.safetensors"')
    return writer.text()


def _convert_webui(recipe: dict[str, Any], path: str | None) -> str:
    method_name = str(recipe.get("interp_method", ""))
    methods = {"weighted sum": ("weighted_sum", 2), "add difference": ("add_difference", 3)}
    chosen = methods.get(method_name.strip().lower())
    if chosen is None:
        raise convert_error(
            f"interp_method {method_name!r} has no mergelang method",
            path,
            1,
            1,
            code="supermerger",
            hint="A1111's merges: Weighted sum, Add difference",
        )
    method, count = chosen
    multiplier = _number_field(recipe, "multiplier", path)
    writer = RecipeWriter()
    names = []
    for key in ("primary_model_hash", "secondary_model_hash", "tertiary_model_hash")[:count]:
        ref = recipe.get(key)
        if not isinstance(ref, str) or not ref:
            raise convert_error(f"{method} needs {key}", path, 1, 1, code="supermerger")
        name = writer.new_name(identifier_for(key.split("_")[0]))
        names.append(name)
        writer.statement(f"model {name} = {format_string(ref)}")
    writer.blank()
    alpha = format_number(multiplier if multiplier is not None else 0.3)
    dtype = " as fp16" if recipe.get("save_as_half") in (True, "True", "true") else ""
    writer.statement(f"merged = {method}({', '.join(names)}, alpha={alpha})")
    writer.statement(f'save merged to "merged.safetensors"{dtype}')
    return writer.text()


def convert_supermerger(text: str, path: str | None = None) -> str:
    """A recipe from SuperMerger text (weights and elemental strings) or from a merge's
    ``sd_merge_recipe`` JSON; raises ``RecipeError`` at the place of the first problem."""
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise convert_error(
                f"not valid JSON: {exc.msg}", path, exc.lineno, exc.colno, code="supermerger"
            ) from None
        return _convert_json(data, path)
    return _convert_text(text, path)
