"""MBW Each "multi merge" command lines to model arithmetic.

One merge per line, ``KEY=VALUE`` items separated by commas, later items overriding earlier
ones on the same line::

    O=merge/test04/SD15-75-IN_00, IN_A_00=0.75
    Preset_Weights=ALL_A, O=out/x, OUT_A_11=0.2, OUT_B_11=0.8, Model_A=sd-v1-5, Model_B=wd-1-3

MBW Each merges ``wA * A + wB * B`` per block, without normalisation, so each line becomes
``save a * {...} + b * {...} to "O.safetensors"``. Keys (any letter case):

- ``O``: the output (required); ``.safetensors`` is appended unless it ends in
  ``.safetensors`` or ``.ckpt``;
- ``Model_A``, ``Model_B``: checkpoint names; a missing one becomes the recipe variable
  ``$MODEL_A`` / ``$MODEL_B`` (MBW Each takes it from its model selector);
- ``IN_A_00``..``IN_A_11``, ``M_A_00``, ``OUT_A_00``..``OUT_A_11`` (and ``_B_``): one block's
  weight for A (B);
- ``Preset_Weights``: a preset name (25 values, the MBW table): B's weights are the preset,
  A's are 1 minus it; ``weight_values``: the same with 25 numbers given directly, separated
  by spaces as MBW Each reads them (``weight_values=0.5 0.5 ... 1``; since commas separate
  the items of a line, MBW Each ignores a comma-separated list, which mergelang accepts);
- ``base_alpha``: B's share of every key outside the U-Net blocks (text encoder, VAE, ...),
  A's share being ``1 - base_alpha``.

Unset values take the defaults of MBW Each's sliders in its source: every block weight of A
and of B 0.5, and ``base_alpha`` 0. MBW Each itself takes them from wherever the sliders
stand when the lines run; a line written for sliders at A 1 / B 0 (the layer-influence
study's ``IN_A_00=0.75``) starts with ``Preset_Weights=ALL_A`` to say so.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from mergelang.arch.sd1 import SD_BLOCKS
from mergelang.block_weights import BASE
from mergelang.convert.recipe_writer import (
    RecipeWriter,
    convert_error,
    format_weight_map,
    identifier_for,
)
from mergelang.errors import RecipeError
from mergelang.io.file_formats import DEFAULT_FORMAT, FILE_FORMATS
from mergelang.lang.formatter import format_string

__all__ = ["DEFAULT_A", "DEFAULT_B", "DEFAULT_BASE_ALPHA", "convert_mbw_each"]

DEFAULT_A = 0.5
"""Model A's weight for a block the line does not set (the default of MBW Each's sliders)."""
DEFAULT_B = 0.5
"""Model B's weight for a block the line does not set (the default of MBW Each's sliders)."""
DEFAULT_BASE_ALPHA = 0.0
"""B's share of the keys outside the U-Net blocks when ``base_alpha`` is not given."""

_BLOCK_KEY = re.compile(r"^(IN|M|OUT)_([AB])_(\d\d)$", re.IGNORECASE)
_MODEL_SUFFIXES = tuple(f.suffix for f in FILE_FORMATS.values())
"""An output name ending in one of these keeps it; any other gets the default format's."""


@dataclass
class _Item:
    key: str
    values: list[tuple[str, int]] = field(default_factory=list)  # (text, column)
    column: int = 1


@dataclass
class _Merge:
    line: int
    output: str
    output_column: int
    model_a: str | None
    model_b: str | None
    weights_a: dict[str, float]
    weights_b: dict[str, float]


class _LineReader:
    def __init__(self, text: str, path: str | None) -> None:
        self.text = text
        self.path = path

    def error(
        self, message: str, line: int, column: int, length: int = 1, hint: str | None = None
    ) -> RecipeError:
        return convert_error(
            message, self.path, line, column, length, source=self.text, code="mbw-each", hint=hint
        )

    def items(self, line_text: str, line: int) -> list[_Item]:
        """Split a line into ``KEY=VALUE`` items; a piece without ``=`` continues the value
        list of the item before it (``weight_values=0.5,0.5,...``)."""
        items: list[_Item] = []
        position = 0
        for piece in line_text.split(","):
            start = position
            position += len(piece) + 1
            stripped = piece.strip()
            column = start + len(piece) - len(piece.lstrip()) + 1
            if not stripped:
                continue
            key, equals, value = stripped.partition("=")
            if not equals:
                if not items:
                    raise self.error(
                        f"expected KEY=VALUE, found '{stripped}'",
                        line,
                        column,
                        len(stripped),
                        hint="e.g. O=merge/out, IN_A_00=0.75, Model_A=sd-v1-5",
                    )
                items[-1].values.extend(_words(stripped, column))
                continue
            value_column = column + len(key) + 1 + len(value) - len(value.lstrip())
            item = _Item(key.strip(), column=column)
            if value.strip():
                if item.key.lower() == "weight_values":
                    item.values.extend(_words(value.strip(), value_column))
                else:
                    item.values.append((value.strip(), value_column))
            items.append(item)
        return items


def _words(text: str, column: int) -> list[tuple[str, int]]:
    """The space-separated words of ``text`` (which starts at ``column``), with their
    columns."""
    return [(m.group(), column + m.start()) for m in re.finditer(r"\S+", text)]


def _number(reader: _LineReader, text: str, line: int, column: int) -> float:
    try:
        value = float(text)
    except ValueError:
        raise reader.error(f"'{text}' is not a number", line, column, len(text)) from None
    if not math.isfinite(value):
        raise reader.error(f"'{text}' is not a finite number", line, column, len(text))
    return value


def _parse_line(reader: _LineReader, line_text: str, line: int) -> _Merge:
    from mergelang.presets import BUILTIN_PRESETS

    weights_a = dict.fromkeys(SD_BLOCKS, DEFAULT_A)
    weights_b = dict.fromkeys(SD_BLOCKS, DEFAULT_B)
    base_alpha = DEFAULT_BASE_ALPHA
    output: tuple[str, int] | None = None
    models: dict[str, str] = {}
    for item in reader.items(line_text, line):
        key = item.key.lower()
        if not item.values:
            raise reader.error(f"{item.key} has no value", line, item.column, len(item.key) + 1)
        first, first_column = item.values[0]
        if key != "weight_values" and len(item.values) > 1:
            extra, extra_column = item.values[1]
            raise reader.error(
                f"{item.key} takes one value; '{extra}' has no key",
                line,
                extra_column,
                len(extra),
                hint="items are separated by commas: KEY=VALUE, KEY=VALUE",
            )
        block = _BLOCK_KEY.match(item.key)
        if block is not None:
            group, side, number = block.group(1).upper(), block.group(2).upper(), block.group(3)
            name = f"{group}{number}"
            if name not in SD_BLOCKS:
                raise reader.error(
                    f"unknown block key '{item.key}' ({name} is no block)",
                    line,
                    item.column,
                    len(item.key),
                    hint="blocks are IN_x_00..IN_x_11, M_x_00, OUT_x_00..OUT_x_11 (x = A or B)",
                )
            target = weights_a if side == "A" else weights_b
            target[name] = _number(reader, first, line, first_column)
        elif key == "o":
            output = (first, first_column)
        elif key in ("model_a", "model_b"):
            models[key] = first
        elif key == "base_alpha":
            base_alpha = _number(reader, first, line, first_column)
        elif key == "preset_weights":
            preset = BUILTIN_PRESETS.get(first) or BUILTIN_PRESETS.get(first.upper())
            if preset is None or preset.vector is None or len(preset.vector) != len(SD_BLOCKS):
                raise reader.error(
                    f"unknown preset '{first}'",
                    line,
                    first_column,
                    len(first),
                    hint="the MBW presets: GRAD_V, GRAD_A, FLAT_25, ..., ALL_A, ALL_B",
                )
            for name, value in zip(SD_BLOCKS, preset.vector, strict=True):
                weights_b[name] = value
                weights_a[name] = 1 - value
        elif key == "weight_values":
            numbers = [_number(reader, t, line, c) for t, c in item.values]
            if len(numbers) != len(SD_BLOCKS):
                raise reader.error(
                    f"weight_values needs 25 numbers (IN00..OUT11), found {len(numbers)}",
                    line,
                    item.column,
                    len(item.key),
                )
            for name, value in zip(SD_BLOCKS, numbers, strict=True):
                weights_b[name] = value
                weights_a[name] = 1 - value
        else:
            raise reader.error(
                f"unknown MBW Each key '{item.key}'",
                line,
                item.column,
                len(item.key),
                hint="keys: O, Model_A, Model_B, base_alpha, Preset_Weights, weight_values, "
                "IN_A_00..OUT_B_11",
            )
    if output is None:
        raise reader.error(
            "the line has no output (O=...)",
            line,
            1,
            len(line_text.rstrip()),
            hint="add O=folder/name",
        )
    return _Merge(
        line,
        output[0],
        output[1],
        models.get("model_a"),
        models.get("model_b"),
        {BASE: 1 - base_alpha, **weights_a},
        {BASE: base_alpha, **weights_b},
    )


def _output_path(output: str) -> str:
    path = output.replace("\\", "/")
    default = FILE_FORMATS[DEFAULT_FORMAT].suffix
    return path if path.lower().endswith(_MODEL_SUFFIXES) else path + default


def convert_mbw_each(text: str, path: str | None = None) -> str:
    """A recipe with one ``save`` per MBW Each command line (canonical text); raises
    ``RecipeError`` at the line and column of the first bad item."""
    reader = _LineReader(text, path)
    merges: list[_Merge] = []
    for number, line_text in enumerate(text.splitlines(), start=1):
        stripped = line_text.strip()
        if stripped and not stripped.startswith("#"):
            merges.append(_parse_line(reader, line_text, number))
    if not merges:
        raise convert_error("no MBW Each command line found", path, 1, 1, code="mbw-each")
    writer = RecipeWriter()
    models: dict[str, str] = {}
    variables: list[str] = []
    for merge in merges:
        for ref, variable in ((merge.model_a, "MODEL_A"), (merge.model_b, "MODEL_B")):
            key = ref if ref is not None else f"${variable}"
            if key not in models:
                wanted = identifier_for(ref) if ref is not None else variable.lower()
                models[key] = writer.new_name(wanted)
                if ref is None:
                    variables.append(variable)
    if variables:
        writer.comment("run with: " + " ".join(f"--set {v}=PATH" for v in variables))
    for key, name in models.items():
        source = key if key.startswith("$") else format_string(key)
        writer.statement(f"model {name} = {source}")
    writer.blank()
    seen: dict[str, int] = {}
    for merge in merges:
        target = _output_path(merge.output)
        if target in seen:
            raise reader.error(
                f"the output '{merge.output}' is already written by line {seen[target]}",
                merge.line,
                merge.output_column,
                len(merge.output),
            )
        seen[target] = merge.line
        a = models[merge.model_a if merge.model_a is not None else "$MODEL_A"]
        b = models[merge.model_b if merge.model_b is not None else "$MODEL_B"]
        weights_a = format_weight_map(merge.weights_a)
        expr = f"{a} * {weights_a} + {b} * {format_weight_map(merge.weights_b)}"
        writer.statement(f"save {expr} to {format_string(target)}")
    return writer.text()
