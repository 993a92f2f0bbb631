"""Elemental (per-key) entries of a weight map: a key pattern, optionally within some blocks.

``"attn2" in OUT03: 0.2`` gives every key of OUT03 whose name contains ``attn2`` the weight
0.2; the entries apply after the block values, later entries winning (see
:meth:`~mergelang.block_weights.weights.ResolvedWeights.value`).

A pattern holding spaces lists several elements, as SuperMerger's ELEMENTS field does
(checkpoint key names never hold a space): ``"attn proj"`` selects a key that matches any
of them, ``not "attn proj"`` one that matches none (SuperMerger's ``OUT05:NOT attn proj:0.2``).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, field

from mergelang.block_weights.keys import MapKey, key_blocks, unknown_key_error
from mergelang.block_weights.names import BASE, DEFAULT_KEY, vocabulary
from mergelang.block_weights.values import WeightsError, check_value, format_number
from mergelang.errors import Span

__all__ = ["ElementalEntry", "KeySelector", "quote_text", "selector_blocks"]

_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class KeySelector:
    """Which keys an elemental entry applies to.

    ``pattern`` is one or more elements separated by spaces; an element matches a key name
    as a substring, or, when it holds ``*``, ``?`` or ``[``, the whole name as a
    case-sensitive glob. The pattern matches a key that some element matches; ``negated``
    selects the keys it does not match (those that no element matches).
    ``blocks`` (block names and ``BASE``, in canonical order; ``None`` for every block)
    restricts the selector to keys of those blocks, or with ``exclude`` to keys of every
    other block. ``span`` is where the recipe wrote the entry (for warnings); it takes no
    part in equality.
    """

    pattern: str
    negated: bool = False
    blocks: tuple[str, ...] | None = None
    exclude: bool = False
    span: Span | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.pattern.split():
            raise WeightsError("an elemental key pattern is empty")
        if self.blocks is not None:
            object.__setattr__(self, "blocks", _canonical_blocks(self.blocks))

    @property
    def elements(self) -> tuple[str, ...]:
        """The pattern's elements (its words)."""
        return tuple(self.pattern.split())

    @property
    def is_glob(self) -> bool:
        return any(char in _GLOB_CHARS for char in self.pattern)

    def applies_to_block(self, block: str) -> bool:
        """Whether keys of ``block`` (a block name or ``BASE``) can be selected."""
        if self.blocks is None:
            return True
        return (block in self.blocks) != self.exclude

    def matches_key(self, key: str) -> bool:
        """Whether the key name matches the pattern (``not`` applied)."""
        hit = any(_element_matches(element, key) for element in self.elements)
        return hit != self.negated

    def matches(self, block: str, key: str) -> bool:
        return self.applies_to_block(block) and self.matches_key(key)

    def to_text(self) -> str:
        """Recipe text: ``[not] "PATTERN" [[not] in BLOCKS]``."""
        text = ("not " if self.negated else "") + quote_text(self.pattern)
        if self.blocks is None:
            return text
        items = vocabulary().describe(self.blocks).split(", ")
        where = items[0] if len(items) == 1 else "[" + ", ".join(items) + "]"
        return f"{text} {'not in' if self.exclude else 'in'} {where}"


@dataclass(frozen=True)
class ElementalEntry:
    """``selector: value``: the weight of the keys ``selector`` picks."""

    selector: KeySelector
    value: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", check_value(self.value, None, self.selector.pattern))

    def to_text(self) -> str:
        return f"{self.selector.to_text()}: {format_number(self.value)}"


def _element_matches(element: str, key: str) -> bool:
    if any(char in _GLOB_CHARS for char in element):
        return fnmatch.fnmatchcase(key, element)
    return element in key


def quote_text(text: str) -> str:
    """A recipe string literal whose value is ``text``: braces doubled (strings are
    templates), ``"`` escaped, a backslash doubled where it would start an escape."""
    out = ['"']
    for index, char in enumerate(text):
        following = text[index + 1] if index + 1 < len(text) else ""
        if char in "{}":
            out.append(char * 2)
        elif char == '"':
            out.append('\\"')
        elif char == "\\":
            out.append("\\\\" if following in ("", "\\", '"') else "\\")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def _canonical_blocks(names: Sequence[str]) -> tuple[str, ...]:
    """Block names (and BASE) without repeats, BASE first, then in block order."""
    vocab = vocabulary()
    for name in names:
        if not vocab.is_block(name):
            raise unknown_key_error(name, None)
    return vocab.sorted(list(names))


def selector_blocks(keys: Sequence[MapKey]) -> tuple[str, ...]:
    """The blocks a key pattern's block set covers: block names, groups, ranges, ``BASE``."""
    names: list[str] = []
    for key in keys:
        if key == BASE:
            names.append(BASE)
        elif key == DEFAULT_KEY:
            raise WeightsError(
                "default is not a block: an elemental entry's block set lists blocks, groups, "
                "ranges and BASE",
                hint=vocabulary().valid_keys_text(),
            )
        else:
            names.extend(key_blocks(key, None))
    return _canonical_blocks(names)
