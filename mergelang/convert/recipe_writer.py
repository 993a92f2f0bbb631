"""Writing converted recipes: unique names, weight values and canonical layout.

Every converter builds its output through :class:`RecipeWriter`, so the text it returns is
already in the form ``mergelang fmt`` prints (statements one per line, full-line comments,
at most one blank line between groups, a newline at the end).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence

from mergelang.arch.flux import FLUX_BLOCKS
from mergelang.arch.sd1 import SD_BLOCKS
from mergelang.arch.sdxl import SDXL_BLOCKS
from mergelang.block_weights import BASE, format_number, vocabulary
from mergelang.errors import Diagnostic, RecipeError, Span
from mergelang.lang.syntax_errors import RESERVED_WORDS

__all__ = [
    "RecipeWriter",
    "convert_error",
    "format_weight_map",
    "identifier_for",
    "weights_from_vector",
]

_NOT_NAMES = frozenset(
    {*RESERVED_WORDS, *vocabulary().names, *vocabulary().groups, BASE, "default", "not"}
)


def convert_error(
    message: str,
    path: str | None,
    line: int,
    column: int,
    length: int = 1,
    *,
    source: str | None = None,
    code: str = "convert",
    hint: str | None = None,
) -> RecipeError:
    """A :class:`RecipeError` located at ``line:column`` of the text being converted."""
    span = Span(line, column, line, column + max(length, 1))
    source_line = None
    if source is not None:
        lines = source.splitlines()
        if 0 < line <= len(lines):
            source_line = lines[line - 1]
    return RecipeError([Diagnostic(message, code, path, span, hint=hint, source_line=source_line)])


def identifier_for(text: str) -> str:
    """A lower-case recipe name derived from ``text``: ``SD-WD Fix`` -> ``sd_wd_fix``,
    ``SD1.5`` -> ``sd1_5``; a leading digit gets an ``m`` in front."""
    name = re.sub(r"[^0-9A-Za-z_]+", "_", text.strip()).strip("_").lower()
    name = re.sub(r"_+", "_", name)
    if not name:
        return "model"
    if name[0].isdigit():
        name = "m" + name
    return name


class RecipeWriter:
    """Collects the lines of a converted recipe and hands out names that do not clash."""

    def __init__(self, taken: Sequence[str] = ()) -> None:
        self._lines: list[str] = []
        self._taken: set[str] = set(taken)

    def reserve(self, name: str) -> None:
        """Mark ``name`` as used (a name the converted recipe keeps as written)."""
        self._taken.add(name)

    def new_name(self, wanted: str) -> str:
        """A fresh name like ``wanted`` (made an identifier; ``_2``, ``_3``... on a clash)."""
        base = wanted if wanted.isidentifier() else identifier_for(wanted)
        if base in _NOT_NAMES:
            base = f"{base}_model"
        name = base
        counter = 2
        while name in self._taken or name in _NOT_NAMES:
            name = f"{base}_{counter}"
            counter += 1
        self._taken.add(name)
        return name

    def comment(self, text: str) -> None:
        """A full-line comment; ``text`` may hold several lines."""
        for line in text.splitlines() or [""]:
            self._lines.append(f"# {line}".rstrip() if line else "#")

    def statement(self, text: str, trailing_comment: str | None = None) -> None:
        if trailing_comment:
            text += "  " + trailing_comment
        self._lines.append(text)

    def raw(self, text: str) -> None:
        """A line written as given (already canonical, e.g. an indented loop body line)."""
        self._lines.append(text)

    def blank(self) -> None:
        self._lines.append("")

    def text(self) -> str:
        """The recipe: no blank line at the start or end, never two in a row."""
        out: list[str] = []
        for line in self._lines:
            if line == "" and (not out or out[-1] == ""):
                continue
            out.append(line)
        while out and out[-1] == "":
            out.pop()
        return "".join(line + "\n" for line in out)


def weights_from_vector(values: Sequence[float], *, base: float | None) -> dict[str, float]:
    """``{BASE: ..., IN00: ..., ...}`` from 25 (SD1/SD2), 19 (SDXL), 61 (Flux.1) or 59
    (Flux.1 without CLIP and T5, which then follow BASE) block values."""
    if len(values) == len(SD_BLOCKS):
        blocks: Sequence[str] = SD_BLOCKS
    elif len(values) == len(SDXL_BLOCKS):
        blocks = SDXL_BLOCKS
    elif len(values) == len(FLUX_BLOCKS):
        blocks = FLUX_BLOCKS
    elif len(values) == len(FLUX_BLOCKS) - 2:
        blocks = FLUX_BLOCKS[2:]
    else:  # pragma: no cover - callers check the count
        raise ValueError(f"{len(values)} block values")
    weights: dict[str, float] = {}
    if base is not None:
        weights[BASE] = base
    weights.update(zip(blocks, values, strict=True))
    return weights


def format_weight_map(weights: Mapping[str, float], extra: Sequence[str] = ()) -> str:
    """The shortest canonical text for block weights that set every key of ``weights``.

    The most common value becomes ``default`` and only the other keys are written:
    ``{IN00: 0.75, default: 1}``; a value the same everywhere is written as the number.
    ``extra`` are further map entries (already formatted) appended after the block entries.
    """
    counts = Counter(weights.values())
    common = max(counts, key=lambda v: (counts[v], -list(weights.values()).index(v)))
    entries = [f"{k}: {format_number(v)}" for k, v in weights.items() if v != common]
    if not entries and not extra:
        return format_number(common)
    entries.append(f"default: {format_number(common)}")
    entries.extend(extra)
    return "{" + ", ".join(entries) + "}"
