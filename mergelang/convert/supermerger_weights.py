"""SuperMerger block-weight strings and elemental strings.

Block weights: 26 numbers ``BASE,IN00..IN11,M00,OUT00..OUT11`` (SD1/SD2), 20 numbers
``BASE,IN00..IN08,M00,OUT00..OUT08`` (SDXL), the same without BASE (25 or 19), 61 numbers
``CLIP,T5,IN,D00..D18,S00..S37,OUT`` (Flux.1, SuperMerger's ``BLOCKIDFLUX``; 59 without
CLIP and T5), or a preset name. They convert to a mergelang weights value: the list as
given (mergelang reads each length in the same order), or the preset's name.

Elemental strings: ``BLOCKS:ELEMENTS:RATIO`` entries separated by newlines or commas, e.g.
``OUT03 OUT04:attn2:0.5``. BLOCKS are block names and ranges (``OUT03-OUT06``) separated by
spaces, blank for every block, ``NOT`` first to take every other block; ELEMENTS are key
substrings separated by spaces, ``NOT`` first to take the keys matching none of them (one
element only). Each element becomes one mergelang elemental map entry, in order (later
entries win, as in SuperMerger):

    OUT03 OUT04:attn2:0.5     ->  "attn2" in [OUT03, OUT04]: 0.5
    NOT OUT03:attn:0.5        ->  "attn" not in [OUT03]: 0.5
    :attn2:0.5                ->  "attn2": 0.5
    IN01:NOT norm:0.7         ->  not "norm" in [IN01]: 0.7
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from mergelang.arch.flux import FLUX_BLOCKS
from mergelang.arch.sd1 import SD_BLOCKS
from mergelang.arch.sdxl import SDXL_BLOCKS
from mergelang.block_weights import BASE, block_range, format_number, is_block_name
from mergelang.convert.recipe_writer import convert_error
from mergelang.errors import RecipeError
from mergelang.lang.formatter import format_string

__all__ = [
    "ElementalEntry",
    "block_weight_values",
    "convert_block_weights",
    "format_elemental",
    "parse_elemental",
]

_COUNTS = {
    len(SD_BLOCKS) + 1: "SD1/SD2 with BASE",
    len(SD_BLOCKS): "SD1/SD2",
    len(SDXL_BLOCKS) + 1: "SDXL with BASE",
    len(SDXL_BLOCKS): "SDXL",
    len(FLUX_BLOCKS): "Flux.1",
    len(FLUX_BLOCKS) - 2: "Flux.1 without CLIP and T5",
}


@dataclass(frozen=True)
class ElementalEntry:
    """One elemental override: keys containing ``pattern`` (or, ``negate_pattern``, not
    containing it) in ``blocks`` (all blocks when empty; every other block when
    ``negate_blocks``) take ``value``."""

    pattern: str
    blocks: tuple[str, ...]
    value: float
    negate_blocks: bool = False
    negate_pattern: bool = False


@dataclass(frozen=True)
class _Where:
    text: str
    path: str | None
    line: int
    column: int  # of the string's first character

    def error(self, message: str, offset: int, length: int, hint: str | None = None) -> RecipeError:
        return convert_error(
            message,
            self.path,
            self.line,
            self.column + offset,
            length,
            source=self.text,
            code="supermerger",
            hint=hint,
        )


def block_weight_values(
    text: str, path: str | None = None, line: int = 1, column: int = 1, *, source: str | None = None
) -> list[float] | str:
    """The numbers of a block-weight string, or the preset name it is; raises
    ``RecipeError`` at the bad value or for a count that fits no architecture."""
    where = _Where(source if source is not None else text, path, line, column)
    stripped = text.strip()
    lead = len(text) - len(text.lstrip())
    if stripped.isidentifier() or _is_builtin_preset(stripped):
        return _preset_name(stripped, where, lead)
    values: list[float] = []
    position = 0
    for piece in text.split(","):
        offset = position + len(piece) - len(piece.lstrip())
        position += len(piece) + 1
        token = piece.strip()
        if not token:
            raise where.error("missing value between commas", offset, 1)
        try:
            number = float(token)
        except ValueError:
            raise where.error(f"'{token}' is not a number", offset, len(token)) from None
        if not math.isfinite(number):
            raise where.error(f"'{token}' is not a finite number", offset, len(token))
        values.append(number)
    if len(values) not in _COUNTS:
        raise where.error(
            f"a block-weight string has 26 or 25 values (SD1/SD2), 20 or 19 (SDXL) or 61 or "
            f"59 (Flux.1), not {len(values)}",
            lead,
            len(stripped),
            hint="SuperMerger's orders: BASE,IN00..IN11,M00,OUT00..OUT11 and "
            "CLIP,T5,IN,D00..D18,S00..S37,OUT",
        )
    return values


def _is_builtin_preset(name: str) -> bool:
    from mergelang.presets import BUILTIN_PRESETS

    return name in BUILTIN_PRESETS or name.upper() in BUILTIN_PRESETS


def _preset_name(name: str, where: _Where, offset: int) -> str:
    from mergelang.presets import BUILTIN_PRESETS

    if name in BUILTIN_PRESETS:
        return name
    if name.upper() in BUILTIN_PRESETS:
        return name.upper()
    raise where.error(
        f"unknown preset '{name}'",
        offset,
        len(name),
        hint="the MBW presets: GRAD_V, GRAD_A, FLAT_25, ..., ALL_A, ALL_B; your own preset "
        'files are loaded with presets "FILE"',
    )


def convert_block_weights(
    text: str, path: str | None = None, line: int = 1, column: int = 1
) -> str:
    """The mergelang weights value of a SuperMerger block-weight string: ``[0.5, 1, ...]``
    (the values in SuperMerger's order, which mergelang reads the same way) or a preset
    name as a recipe writes it (:func:`~mergelang.presets.preset_identifier`)."""
    from mergelang.presets import preset_identifier

    values = block_weight_values(text, path, line, column)
    if isinstance(values, str):
        return preset_identifier(values)
    return "[" + ", ".join(format_number(v) for v in values) + "]"


def _blocks(field: str, where: _Where, offset: int) -> tuple[tuple[str, ...], bool]:
    words: list[tuple[str, int]] = []
    position = 0
    for word in field.split(" "):
        if word:
            words.append((word, offset + position))
        position += len(word) + 1
    negate = bool(words) and words[0][0].upper() == "NOT"
    if negate:
        words = words[1:]
        if not words:
            raise where.error("NOT needs the blocks it excludes", offset, len(field.strip()))
    blocks: list[str] = []
    for word, at in words:
        start, dash, end = word.partition("-")
        names = [start.upper()] + ([end.upper()] if dash else [])
        for name in names:
            if not is_block_name(name) and name not in SDXL_BLOCKS:
                raise where.error(
                    f"unknown block '{name}'",
                    at,
                    len(word),
                    hint="blocks: BASE, IN00..IN11, M00, OUT00..OUT11; ranges as OUT03-OUT06",
                )
        if dash:
            if BASE in names:
                raise where.error("BASE cannot start or end a range", at, len(word))
            expanded = block_range(names[0], names[1])
            if not expanded:
                raise where.error(f"the range {word} is empty", at, len(word))
            blocks.extend(expanded)
        else:
            blocks.append(names[0])
    return tuple(dict.fromkeys(blocks)), negate


def _entries_of(item: str, where: _Where, offset: int) -> list[ElementalEntry]:
    parts = item.split(":")
    stripped = item.strip()
    lead = offset + len(item) - len(item.lstrip())
    if len(parts) != 3:
        raise where.error(
            f"an elemental entry is BLOCKS:ELEMENTS:RATIO, found '{stripped}'",
            lead,
            len(stripped),
            hint="e.g. OUT03 OUT04:attn2:0.5 (blank BLOCKS for every block)",
        )
    block_field, element_field, ratio_field = parts
    blocks, negate_blocks = _blocks(block_field, where, offset)
    element_offset = offset + len(block_field) + 1
    ratio_offset = element_offset + len(element_field) + 1
    ratio = ratio_field.strip()
    try:
        value = float(ratio)
    except ValueError:
        at = ratio_offset + len(ratio_field) - len(ratio_field.lstrip())
        raise where.error(f"'{ratio}' is not a number", at, len(ratio)) from None
    elements = element_field.split()
    negate_pattern = bool(elements) and elements[0].upper() == "NOT"
    if negate_pattern:
        elements = elements[1:]
    if not elements:
        if negate_pattern:
            raise where.error(
                "NOT needs the element it excludes (a key substring such as attn2)",
                element_offset,
                max(len(element_field), 1),
            )
        # a blank ELEMENTS is every key of the blocks (SuperMerger tests "" in key)
        elements = ["*"]
    if negate_pattern and len(elements) > 1:
        raise where.error(
            "NOT takes one element",
            element_offset,
            len(element_field),
            hint="write one entry per element",
        )
    return [
        ElementalEntry(pattern, blocks, value, negate_blocks, negate_pattern)
        for pattern in elements
    ]


def parse_elemental(
    text: str, path: str | None = None, line: int = 1, column: int = 1
) -> list[ElementalEntry]:
    """The entries of a SuperMerger elemental string (newlines or commas between entries)."""
    entries: list[ElementalEntry] = []
    for line_index, line_text in enumerate(text.split("\n")):
        where = _Where(text, path, line + line_index, column if line_index == 0 else 1)
        position = 0
        for item in line_text.split(","):
            offset = position
            position += len(item) + 1
            if item.strip():
                entries.extend(_entries_of(item, where, offset))
    return entries


def format_elemental(entry: ElementalEntry) -> str:
    """The mergelang map entry of one elemental override."""
    text = ("not " if entry.negate_pattern else "") + format_string(entry.pattern)
    if entry.blocks:
        text += (
            (" not in " if entry.negate_blocks else " in ") + "[" + ", ".join(entry.blocks) + "]"
        )
    return f"{text}: {format_number(entry.value)}"


def elemental_entries_text(entries: Sequence[ElementalEntry]) -> list[str]:
    return [format_elemental(e) for e in entries]
