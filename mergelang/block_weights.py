"""Block weights: one number per merge block, plus BASE.

A merge method's weight can differ per U-Net block. :class:`BlockWeights` holds one optional
value for each of the 25 SD1/SD2 blocks (``IN00..IN11, M00, OUT00..OUT11``, in that order) and
one for ``BASE`` (everything outside the U-Net blocks: the text encoders and whatever the
key->block convention puts there). SDXL's 19 blocks are a subset of the same names, so one
value serves every architecture: a 25-value vector used for SDXL simply has no effect on
IN09..IN11 and OUT09..OUT11 (SuperMerger's rule), while a 19-value SDXL vector leaves those
six blocks unset and so cannot be resolved for an SD1/SD2 model.

A value may also carry elemental entries (:class:`ElementalEntry`): per-key overrides chosen
by a key-name pattern, optionally restricted to some blocks. They apply after the block
values, later entries winning, so :meth:`ResolvedWeights.value` answers per ``(block, key)``.

A slot may be unset (``None``): a map that names only some blocks, a 25-value vector's BASE.
Arithmetic keeps an unset slot unset, and :meth:`BlockWeights.resolve` turns the value into
plain floats for the blocks an architecture has, filling an unset BASE from the fallback the
merge method supplies. Values are kept exactly as given: no rounding anywhere.

This module imports nothing heavy (no torch): the recipe checker evaluates weights with it.
"""

from __future__ import annotations

import difflib
import fnmatch
import math
import operator
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

from mergelang.arch.blocks import BASE, GROUPS, SD_BLOCKS, SDXL_BLOCKS, block_range
from mergelang.errors import Span

__all__ = [
    "BlockValues",
    "BlockWeights",
    "ElementalEntry",
    "KeySelector",
    "MapKey",
    "ResolvedWeights",
    "WeightsError",
    "describe_blocks",
    "format_number",
    "suggest_block",
]

MapKey: TypeAlias = str | tuple[str, str]
"""A weight map key: a block name, a group (``IN``, ``M``, ``OUT``), ``BASE``, ``default``, or
an inclusive ``(start, end)`` block range in IN..M..OUT order."""

DEFAULT_KEY = "default"

_BLOCK_INDEX: dict[str, int] = {name: i for i, name in enumerate(SD_BLOCKS)}
_SD_ONLY: frozenset[str] = frozenset(SD_BLOCKS) - frozenset(SDXL_BLOCKS)
_SDXL_INDICES: tuple[int, ...] = tuple(_BLOCK_INDEX[name] for name in SDXL_BLOCKS)

VALID_KEYS_TEXT = (
    "blocks are IN00..IN11, M00, OUT00..OUT11 (SDXL: IN00..IN08, M00, OUT00..OUT08); "
    "also the groups IN, M, OUT, and BASE and default"
)

_LENGTH_HINT = (
    "25 values are IN00..IN11, M00, OUT00..OUT11; 26 put BASE first, then those 25. "
    "For SDXL, 19 values are IN00..IN08, M00, OUT00..OUT08 and 20 put BASE first"
)

_NO_BASE_HINT = "give 26 values, a BASE: entry, a default:, or base="


class WeightsError(ValueError):
    """A block weight value that is malformed or cannot be used.

    ``index`` is the 0-based position of the vector element or map entry at fault, or ``None``
    when the value as a whole is wrong; the recipe checker turns it into a line and column.
    """

    def __init__(self, message: str, *, hint: str | None = None, index: int | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.index = index


# ---------------------------------------------------------------------------------------------
# Small text helpers shared with the recipe tools


def format_number(value: float) -> str:
    """The canonical text of a weight: integral values without a fraction (``1``, ``-2``,
    ``-0``), others as Python's shortest round-tripping repr (``0.5``, ``1e-05``).

    ``float(format_number(x)) == x`` always holds, signed zero included.
    """
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    if value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(value)


def describe_blocks(names: Sequence[str]) -> str:
    """Block names in IN..M..OUT order with consecutive runs written as ranges.

    ``["IN09", "IN10", "IN11", "OUT09"]`` -> ``"IN09..IN11, OUT09"``. ``BASE`` comes first.
    """
    parts: list[str] = [BASE] if BASE in names else []
    indices = sorted({_BLOCK_INDEX[n] for n in names if n in _BLOCK_INDEX})
    for start, end in _runs(indices):
        parts.append(SD_BLOCKS[start] if start == end else f"{SD_BLOCKS[start]}..{SD_BLOCKS[end]}")
    return ", ".join(parts)


def _runs(indices: Sequence[int]) -> Iterator[tuple[int, int]]:
    """Maximal runs of consecutive integers in a sorted sequence, as (first, last) pairs."""
    start: int | None = None
    prev = -2
    for i in indices:
        if start is None:
            start = i
        elif i != prev + 1:
            yield start, prev
            start = i
        prev = i
    if start is not None:
        yield start, prev


_BLOCKISH = re.compile(r"(IN|INPUT|OUT|OUTPUT|M|MID|MIDDLE)[_\-\s]*(\d+)?")


def suggest_block(name: str) -> str | None:
    """The valid weight-map key closest to a mistyped one, or ``None``.

    Understands the usual slips: a block number past the end (``IN12`` -> ``IN11``), a
    missing zero (``IN5`` -> ``IN05``), case (``out03`` -> ``OUT03``), other tools' spellings
    (``MID``, ``IN_05``, ``OUT-11``); anything else goes to difflib.
    """
    upper = name.strip().upper()
    if upper == BASE:
        return BASE
    if upper == DEFAULT_KEY.upper():
        return DEFAULT_KEY
    match = _BLOCKISH.fullmatch(upper)
    if match is not None:
        kind, digits = match.group(1), match.group(2)
        if kind in ("M", "MID", "MIDDLE"):
            return "M" if kind == "M" and digits is None else "M00"
        group = "IN" if kind.startswith("IN") else "OUT"
        if digits is None:
            return group
        last = len(GROUPS[group]) - 1
        return f"{group}{min(int(digits), last):02d}"
    candidates = [*SD_BLOCKS, *GROUPS, BASE, DEFAULT_KEY]
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return close[0] if close else None


def _unknown_key_error(name: str, index: int | None, *, what: str = "block") -> WeightsError:
    suggestion = suggest_block(name)
    hint = VALID_KEYS_TEXT
    if suggestion is not None and suggestion != name:
        hint = f"did you mean {suggestion}? {hint}"
    return WeightsError(f"unknown {what} {name!r}", hint=hint, index=index)


def _check_value(value: object, index: int | None, where: str) -> float:
    """A weight as a float, or a WeightsError: numbers only (no bools), finite."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise WeightsError(f"a block weight is a number, not {value!r} ({where})", index=index)
    number = float(value)
    if not math.isfinite(number):
        raise WeightsError(
            f"a block weight must be a finite number, not {number!r} ({where})", index=index
        )
    return number


# ---------------------------------------------------------------------------------------------
# Resolved weights


class BlockValues(Mapping[str, float]):
    """An immutable, hashable ``block name -> value`` mapping that keeps its order."""

    __slots__ = ("_items", "_lookup")

    def __init__(self, items: Sequence[tuple[str, float]]) -> None:
        self._items: tuple[tuple[str, float], ...] = tuple(items)
        self._lookup: dict[str, float] = dict(self._items)

    def __getitem__(self, key: str) -> float:
        return self._lookup[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._lookup)

    def __len__(self) -> int:
        return len(self._lookup)

    def __hash__(self) -> int:
        return hash(frozenset(self._lookup.items()))

    def __repr__(self) -> str:
        return f"BlockValues({dict(self._items)!r})"


# ---------------------------------------------------------------------------------------------
# Elemental entries

_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class KeySelector:
    """Which keys an elemental entry applies to.

    ``pattern`` matches a key name as a substring, or, when it holds ``*``, ``?`` or ``[``,
    the whole name as a case-sensitive glob; ``negated`` selects the keys it does not match.
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
        if not self.pattern:
            raise WeightsError("an elemental key pattern is empty")
        if self.blocks is not None:
            object.__setattr__(self, "blocks", _canonical_blocks(self.blocks))

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
        hit = fnmatch.fnmatchcase(key, self.pattern) if self.is_glob else self.pattern in key
        return hit != self.negated

    def matches(self, block: str, key: str) -> bool:
        return self.applies_to_block(block) and self.matches_key(key)

    def to_text(self) -> str:
        """Recipe text: ``[not] "PATTERN" [[not] in BLOCKS]``."""
        text = ("not " if self.negated else "") + _quote(self.pattern)
        if self.blocks is None:
            return text
        items = describe_blocks(self.blocks).split(", ")
        where = items[0] if len(items) == 1 else "[" + ", ".join(items) + "]"
        return f"{text} {'not in' if self.exclude else 'in'} {where}"


@dataclass(frozen=True)
class ElementalEntry:
    """``selector: value``: the weight of the keys ``selector`` picks."""

    selector: KeySelector
    value: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", _check_value(self.value, None, self.selector.pattern))

    def to_text(self) -> str:
        return f"{self.selector.to_text()}: {format_number(self.value)}"


def _quote(text: str) -> str:
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
    """Block names (and BASE) without repeats, BASE first, then IN..M..OUT order."""
    for name in names:
        if name != BASE and name not in _BLOCK_INDEX:
            raise _unknown_key_error(name, None)
    unique = set(names)
    ordered = [BASE] if BASE in unique else []
    ordered += [name for name in SD_BLOCKS if name in unique]
    return tuple(ordered)


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
                hint=VALID_KEYS_TEXT,
            )
        else:
            names.extend(_keys_blocks(key, None))
    return _canonical_blocks(names)


@dataclass(frozen=True)
class ResolvedWeights:
    """Plain floats for exactly the blocks an architecture has, and BASE, with the elemental
    entries that override them for some keys."""

    base: float
    values: Mapping[str, float]
    elemental: tuple[ElementalEntry, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.values, BlockValues):
            object.__setattr__(self, "values", BlockValues(tuple(self.values.items())))

    def __getitem__(self, block: str) -> float:
        """The weight of a block name, or of ``"BASE"``."""
        if block == BASE:
            return self.base
        try:
            return self.values[block]
        except KeyError:
            raise KeyError(f"no weight resolved for block {block!r}") from None

    def keyed(self, block: str) -> bool:
        """Whether some elemental entry can apply to keys of ``block``, so that the weight
        there depends on the key (:meth:`value`) rather than on the block alone."""
        return any(e.selector.applies_to_block(block) for e in self.elemental)

    def value(self, block: str, key: str) -> float:
        """The weight of ``key`` (a key of ``block``): the block's value, overridden by the
        last elemental entry that matches."""
        found = self[block]
        for entry in self.elemental:
            if entry.selector.matches(block, key):
                found = entry.value
        return found


# ---------------------------------------------------------------------------------------------
# Block weights

_OPERATORS: dict[str, Callable[[float, float], float]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
}


def _is_operand(value: object) -> bool:
    """Block weights combine with other block weights and with plain numbers (not bools)."""
    if isinstance(value, bool):
        return False
    return isinstance(value, (BlockWeights, int, float))


@dataclass(frozen=True)
class BlockWeights:
    """A weight per merge block: ``blocks`` holds 25 values in SD_BLOCKS order, ``base`` the
    BASE value; ``None`` marks a slot the value does not set.

    ``origin`` says how the value was written (``"GRAD_V"``, ``"19-value vector"``, ``"map"``)
    so messages can name it; it takes no part in equality.
    """

    base: float | None
    blocks: tuple[float | None, ...]
    origin: str = field(default="", compare=False)
    elemental: tuple[ElementalEntry, ...] = ()
    """Per-key overrides, applied after the block values in order (later ones win)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "elemental", tuple(self.elemental))
        blocks = tuple(self.blocks)
        if len(blocks) != len(SD_BLOCKS):
            raise WeightsError(
                f"BlockWeights holds {len(SD_BLOCKS)} block slots, not {len(blocks)}"
            )
        checked = tuple(
            None if v is None else _check_value(v, i, SD_BLOCKS[i]) for i, v in enumerate(blocks)
        )
        object.__setattr__(self, "blocks", checked)
        if self.base is not None:
            object.__setattr__(self, "base", _check_value(self.base, None, BASE))

    # -- constructors ---------------------------------------------------------------------

    @classmethod
    def scalar(cls, value: float) -> BlockWeights:
        """The same value for every block and BASE."""
        number = _check_value(value, None, "scalar")
        return cls(number, (number,) * len(SD_BLOCKS), origin=format_number(number))

    @classmethod
    def from_vector(cls, values: Sequence[float]) -> BlockWeights:
        """A positional list: 25 (IN00..OUT11), 26 (BASE first), 19 (SDXL's IN00..IN08, M00,
        OUT00..OUT08) or 20 (BASE first) values.

        SDXL vectors leave IN09..IN11 and OUT09..OUT11 unset; 25/26 vectors leave nothing but
        (for 25) BASE unset.
        """
        count = len(values)
        if count not in (19, 20, 25, 26):
            raise WeightsError(
                "a block weight vector has 25 or 26 values (SD1/SD2) or 19 or 20 (SDXL), "
                f"not {count}",
                hint=_LENGTH_HINT,
            )
        numbers = [_check_value(v, i, f"value {i + 1} of {count}") for i, v in enumerate(values)]
        has_base = count in (20, 26)
        base = numbers[0] if has_base else None
        body = numbers[1:] if has_base else numbers
        if count in (25, 26):
            blocks: list[float | None] = list(body)
        else:
            blocks = [None] * len(SD_BLOCKS)
            for slot, number in zip(_SDXL_INDICES, body, strict=True):
                blocks[slot] = number
        return cls(base, tuple(blocks), origin=f"{count}-value vector")

    @classmethod
    def from_map(cls, entries: Sequence[tuple[MapKey | KeySelector, float]]) -> BlockWeights:
        """Entries ``(key, value)`` applied in order, later ones overriding earlier ones.

        A key is a block name, a group (``IN`` = IN00..IN11, ``M``, ``OUT``), ``BASE``, a
        ``(start, end)`` range, or ``default``. ``default`` fills every slot (BASE included)
        that no other entry set, wherever it is written, and may appear once. A
        :class:`KeySelector` key makes an elemental entry: those apply after every block
        entry, in their order. A malformed entry raises :class:`WeightsError` with ``index``
        set to its position.
        """
        blocks: list[float | None] = [None] * len(SD_BLOCKS)
        base: float | None = None
        default: float | None = None
        default_index: int | None = None
        elemental: list[ElementalEntry] = []
        for index, (key, value) in enumerate(entries):
            if isinstance(key, KeySelector):
                number = _check_value(value, index, key.pattern)
                elemental.append(ElementalEntry(key, number))
                continue
            where = _key_text(key)
            number = _check_value(value, index, where)
            if key == DEFAULT_KEY:
                if default_index is not None:
                    raise WeightsError(
                        f"a block weight map has one default:, but entry {index + 1} is a "
                        f"second (the first is entry {default_index + 1})",
                        hint="remove one of the default: entries",
                        index=index,
                    )
                default, default_index = number, index
                continue
            if key == BASE:
                base = number
                continue
            for name in _keys_blocks(key, index):
                blocks[_BLOCK_INDEX[name]] = number
        if default is not None:
            blocks = [default if v is None else v for v in blocks]
            if base is None:
                base = default
        return cls(base, tuple(blocks), origin="map", elemental=tuple(elemental))

    # -- queries --------------------------------------------------------------------------

    @property
    def is_scalar(self) -> float | None:
        """The value if every slot, BASE included, is set and equal and no elemental entry
        overrides it; else ``None``."""
        first = self.base
        if first is None or self.elemental:
            return None
        for value in self.blocks:
            if value is None or value != first:
                return None
        return first

    def get(self, block: str) -> float | None:
        """The value of ``"BASE"`` or a block name; ``None`` if unset."""
        if block == BASE:
            return self.base
        index = _BLOCK_INDEX.get(block)
        if index is None:
            raise _unknown_key_error(block, None)
        return self.blocks[index]

    def with_base(self, base: float) -> BlockWeights:
        """The same blocks with BASE set (or replaced)."""
        number = _check_value(base, None, BASE)
        return BlockWeights(number, self.blocks, origin=self.origin, elemental=self.elemental)

    def resolve(self, blocks: Sequence[str], *, base: float | None = None) -> ResolvedWeights:
        """Plain floats for exactly ``blocks`` (an architecture's block list).

        An unset BASE takes ``base`` (the merge method's fallback); if that is ``None`` too,
        or a requested block is unset, :class:`WeightsError` says what is missing.
        """
        wanted = list(dict.fromkeys(b for b in blocks if b != BASE))
        for name in wanted:
            if name not in _BLOCK_INDEX:
                raise _unknown_key_error(name, None)
        missing = [name for name in wanted if self.blocks[_BLOCK_INDEX[name]] is None]
        if missing:
            raise self._missing_blocks_error(missing)
        resolved_base = self.base if self.base is not None else base
        if resolved_base is None:
            raise WeightsError(
                f"{self._subject()} sets no BASE weight (text encoders and other keys "
                "outside the U-Net blocks)",
                hint=_NO_BASE_HINT,
            )
        resolved_base = _check_value(resolved_base, None, BASE)
        values: list[tuple[str, float]] = []
        for name in wanted:
            value = self.blocks[_BLOCK_INDEX[name]]
            assert value is not None  # checked above
            values.append((name, value))
        return ResolvedWeights(resolved_base, BlockValues(values), self.elemental)

    def _subject(self) -> str:
        if self.origin.endswith("-value vector"):
            return f"a {self.origin}"
        if self.origin in ("", "map"):
            return "a block weight map" if self.origin == "map" else "the block weights"
        return self.origin

    def _missing_blocks_error(self, missing: list[str]) -> WeightsError:
        sdxl_complete = all(self.blocks[i] is not None for i in _SDXL_INDICES)
        if sdxl_complete and set(missing) <= _SD_ONLY:
            sdxl = "IN00..IN08, M00, OUT00..OUT08"
            also = f"this SD1/SD2 model also has {describe_blocks(missing)}"
            if self.origin.endswith("-value vector"):
                message = f"a {self.origin} is SDXL's ({sdxl}); {also}"
            else:
                message = f"{self._subject()} sets only SDXL's 19 blocks ({sdxl}); {also}"
            return WeightsError(
                message, hint="give 25 values (26 with BASE first) for SD1/SD2 models"
            )
        return WeightsError(
            f"{self._subject()} sets no weight for {describe_blocks(missing)}",
            hint="add a default: entry, or give those blocks a value",
        )

    # -- arithmetic -----------------------------------------------------------------------

    def _combine(self, other: BlockWeights | float, symbol: str, reflected: bool) -> BlockWeights:
        """Elementwise ``self <symbol> other`` (``other <symbol> self`` when reflected).

        Elemental entries go through the same operation with the other operand's value, which
        must then be one number for every key: combining two values when one has elemental
        entries and the other varies by block (or has its own) is refused.
        """
        elemental = self._combine_elemental(other, symbol, reflected)
        if isinstance(other, BlockWeights):
            other_base, other_blocks = other.base, other.blocks
            other_text = _operand_text(other.origin)
        else:
            number = _check_value(other, None, "operand")
            other_base, other_blocks = number, (number,) * len(SD_BLOCKS)
            other_text = format_number(number)
        op = _OPERATORS[symbol]

        def apply(mine: float | None, theirs: float | None, slot: str) -> float | None:
            if mine is None or theirs is None:
                return None
            left, right = (theirs, mine) if reflected else (mine, theirs)
            if symbol == "/" and right == 0:
                raise WeightsError(
                    f"division by zero in block weights ({slot} of the divisor is 0)",
                    hint="a divisor must be non-zero in every block it sets",
                )
            result = op(left, right)
            if not math.isfinite(result):
                raise WeightsError(
                    f"block weight arithmetic gives {result!r} for {slot} "
                    f"({format_number(left)} {symbol} {format_number(right)})"
                )
            return result

        base = apply(self.base, other_base, BASE)
        blocks = tuple(
            apply(mine, theirs, name)
            for mine, theirs, name in zip(self.blocks, other_blocks, SD_BLOCKS, strict=True)
        )
        mine_text = _operand_text(self.origin)
        left_text, right_text = (other_text, mine_text) if reflected else (mine_text, other_text)
        origin = _bounded(f"{left_text} {symbol} {right_text}")
        return BlockWeights(base, blocks, origin=origin, elemental=elemental)

    def _combine_elemental(
        self, other: BlockWeights | float, symbol: str, reflected: bool
    ) -> tuple[ElementalEntry, ...]:
        other_elemental = other.elemental if isinstance(other, BlockWeights) else ()
        if not self.elemental and not other_elemental:
            return ()
        if self.elemental and other_elemental:
            raise WeightsError(
                "cannot combine two block weights that both have elemental (per-key) entries",
                hint="compute one of them without key patterns, or write the combined value "
                "as one map",
            )
        if isinstance(other, BlockWeights):
            # Exactly one side has entries; the other must be one number everywhere.
            plain, keyed = (self, other) if other_elemental else (other, self)
            number = plain.is_scalar
            if number is None:
                raise WeightsError(
                    "block weights with elemental (per-key) entries combine only with a "
                    "number, not with weights that differ per block",
                    hint="write the combined value as one map, its key patterns last",
                )
            swap = (keyed is other) != reflected
        else:
            keyed, number, swap = self, _check_value(other, None, "operand"), reflected
        op = _OPERATORS[symbol]
        result: list[ElementalEntry] = []
        for entry in keyed.elemental:
            left, right = (number, entry.value) if swap else (entry.value, number)
            if symbol == "/" and right == 0:
                raise WeightsError(
                    "division by zero in block weights (an elemental entry of the divisor "
                    f"is 0: {entry.selector.to_text()})",
                    hint="a divisor must be non-zero in every entry it sets",
                )
            value = op(left, right)
            if not math.isfinite(value):
                raise WeightsError(
                    f"block weight arithmetic gives {value!r} for the elemental entry "
                    f"{entry.selector.to_text()}"
                )
            result.append(ElementalEntry(entry.selector, value))
        return tuple(result)

    def __add__(self, other: BlockWeights | float) -> BlockWeights:
        if not _is_operand(other):
            return NotImplemented
        return self._combine(other, "+", reflected=False)

    def __radd__(self, other: float) -> BlockWeights:
        if not _is_operand(other):
            return NotImplemented
        return self._combine(other, "+", reflected=True)

    def __sub__(self, other: BlockWeights | float) -> BlockWeights:
        if not _is_operand(other):
            return NotImplemented
        return self._combine(other, "-", reflected=False)

    def __rsub__(self, other: float) -> BlockWeights:
        if not _is_operand(other):
            return NotImplemented
        return self._combine(other, "-", reflected=True)

    def __mul__(self, other: BlockWeights | float) -> BlockWeights:
        if not _is_operand(other):
            return NotImplemented
        return self._combine(other, "*", reflected=False)

    def __rmul__(self, other: float) -> BlockWeights:
        if not _is_operand(other):
            return NotImplemented
        return self._combine(other, "*", reflected=True)

    def __truediv__(self, other: BlockWeights | float) -> BlockWeights:
        if not _is_operand(other):
            return NotImplemented
        return self._combine(other, "/", reflected=False)

    def __rtruediv__(self, other: float) -> BlockWeights:
        if not _is_operand(other):
            return NotImplemented
        return self._combine(other, "/", reflected=True)

    def __neg__(self) -> BlockWeights:
        return BlockWeights(
            None if self.base is None else -self.base,
            tuple(None if v is None else -v for v in self.blocks),
            origin=_bounded(f"-{_operand_text(self.origin)}"),
            elemental=tuple(ElementalEntry(e.selector, -e.value) for e in self.elemental),
        )

    # -- text -----------------------------------------------------------------------------

    def to_text(self) -> str:
        """Canonical recipe text for this value.

        A scalar is a number (``0.5``). If every one of the 25 blocks is set, a 25-value
        vector (26 with BASE first when BASE is set); if exactly SDXL's 19 blocks are set, a
        19/20-value vector. Anything else is a map: ``BASE`` first, then runs of consecutive
        blocks sharing a value as ranges, ``{BASE: 0.3, IN00..IN05: 1, M00: 0.5}``.
        A value with elemental entries is always a map, its entries last.
        Reading the text back gives an equal value.
        """
        scalar = self.is_scalar
        if scalar is not None:
            return format_number(scalar)
        set_indices = [i for i, v in enumerate(self.blocks) if v is not None]
        full = len(set_indices) == len(SD_BLOCKS) or set_indices == list(_SDXL_INDICES)
        if full and not self.elemental:
            body = [self.blocks[i] for i in set_indices]
            values = body if self.base is None else [self.base, *body]
            return "[" + ", ".join(format_number(v) for v in values if v is not None) + "]"
        entries: list[str] = []
        if self.base is not None:
            entries.append(f"{BASE}: {format_number(self.base)}")
        for start, end in _equal_runs(self.blocks):
            value = self.blocks[start]
            assert value is not None
            key = SD_BLOCKS[start] if start == end else f"{SD_BLOCKS[start]}..{SD_BLOCKS[end]}"
            entries.append(f"{key}: {format_number(value)}")
        entries += [entry.to_text() for entry in self.elemental]
        return "{" + ", ".join(entries) + "}"


def _equal_runs(blocks: Sequence[float | None]) -> Iterator[tuple[int, int]]:
    """Runs of consecutive set slots holding the same value (signed zeros kept apart)."""
    start: int | None = None
    for i, value in enumerate(blocks):
        if start is not None and not _same(value, blocks[start]):
            yield start, i - 1
            start = None
        if start is None and value is not None:
            start = i
    if start is not None:
        yield start, len(blocks) - 1


def _same(x: float | None, y: float | None) -> bool:
    if x is None or y is None:
        return x is y
    return x == y and math.copysign(1.0, x) == math.copysign(1.0, y)


_MAX_ORIGIN = 80
"""The longest ``origin`` arithmetic keeps: a longer one reads as "the block weights".
Without a bound, a chain like ``w2 = w1 * 0.5 + w1 * 0.5`` doubles it at every step."""


def _bounded(origin: str) -> str:
    return origin if len(origin) <= _MAX_ORIGIN else ""


def _operand_text(origin: str) -> str:
    if not origin:
        return "weights"
    return f"({origin})" if " " in origin and not origin.endswith("-value vector") else origin


def _key_text(key: MapKey) -> str:
    if isinstance(key, tuple):
        return f"{key[0]}..{key[1]}"
    return key


def _keys_blocks(key: MapKey, index: int | None) -> tuple[str, ...]:
    """The blocks a map key (other than BASE and default) covers."""
    if isinstance(key, tuple):
        start, end = key
        for endpoint in (start, end):
            if endpoint not in _BLOCK_INDEX:
                raise _unknown_key_error(endpoint, index, what="block in range")
        if _BLOCK_INDEX[end] < _BLOCK_INDEX[start]:
            raise WeightsError(
                f"block range {start}..{end} runs backwards",
                hint=f"ranges run IN00..IN11, M00, OUT00..OUT11: write {end}..{start}",
                index=index,
            )
        return block_range(start, end)
    if key in GROUPS:
        return GROUPS[key]
    if key in _BLOCK_INDEX:
        return (key,)
    raise _unknown_key_error(key, index)
