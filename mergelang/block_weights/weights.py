"""Block weights: a number per merge block, keyed by block name, resolved per architecture.

A :class:`BlockWeights` is a weight as a recipe writes it: a number, a plain vector, a map by
block name, a preset, or arithmetic on those. Recipes are checked before their inputs are
known, so the value is kept by block *name* and resolved against an architecture's
:class:`~mergelang.arch.scheme.BlockScheme` only when the planner knows which one it is
(:meth:`BlockWeights.resolve`): a map ``{IN00..IN05: 1, default: 0}`` means the same thing
for every scheme that has those names, and SDXL's 19 blocks are a subset of SD1's 25.

A plain vector is the one form whose meaning depends on the scheme: its values name blocks by
position, through the scheme's vector forms (25 values are SD1's IN00..OUT11, 26 put BASE
first). A vector is read in every registered scheme that has a form of its length, each
reading kept (:class:`Reading`); resolving for an architecture uses the reading that sets
all its blocks. So a length that two schemes share stays unambiguous once the model is known,
and a vector no scheme of the model reads is an error that says what it is for.

A slot may be unset: a map that names only some blocks, a 25-value vector's BASE. Arithmetic
keeps an unset slot unset; ``default:`` sets every slot the map leaves unset, in whatever
scheme it is resolved for. An unset BASE is filled from the fallback the merge method supplies
(``base=``, or the parameter's default). Values are kept exactly as given: no rounding.

A value may also carry elemental entries (:mod:`mergelang.block_weights.elemental`): per-key
overrides chosen by a key-name pattern. They apply after the block values, later entries
winning, so :meth:`ResolvedWeights.value` answers per ``(block, key)``.

This module imports nothing heavy (no torch): the recipe checker evaluates weights with it.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from mergelang.arch import block_schemes
from mergelang.arch.scheme import BlockScheme, VectorForm
from mergelang.block_weights.elemental import ElementalEntry, KeySelector
from mergelang.block_weights.keys import MapKey, key_blocks, key_text, unknown_key_error
from mergelang.block_weights.names import BASE, DEFAULT_KEY, vocabulary
from mergelang.block_weights.values import WeightsError, check_value, format_number
from mergelang.block_weights.written import WrittenBlock, merge_written

__all__ = ["BlockValues", "BlockWeights", "Reading", "ResolvedWeights"]


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


@dataclass(frozen=True)
class Reading:
    """One reading of a weight: values by block name (``BASE`` included), the value of every
    other slot (``default``, or ``None``: unset), and, for a plain vector, the vector form it
    was read with and the scheme that form belongs to."""

    values: Mapping[str, float]
    default: float | None = None
    form: VectorForm | None = None
    scheme: BlockScheme | None = None

    def get(self, name: str) -> float | None:
        found = self.values.get(name)
        return self.default if found is None else found

    @property
    def empty(self) -> bool:
        return not self.values and self.default is None


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


@dataclass(frozen=True, eq=False)
class BlockWeights:
    """A weight per merge block, by block name; see the module docstring.

    ``readings`` holds one reading, or for a plain vector one per scheme that reads its
    length. ``origin`` says how the value was written (``"GRAD_V"``, ``"19-value vector"``,
    ``"map"``) so messages can name it. Two values are equal when they resolve alike for every
    registered block scheme (``origin`` takes no part).
    """

    readings: tuple[Reading, ...]
    origin: str = ""
    elemental: tuple[ElementalEntry, ...] = ()
    """Per-key overrides, applied after the block values in order (later ones win)."""
    written: tuple[WrittenBlock, ...] = ()
    """The block names the recipe wrote for this value, with their places (see
    :mod:`mergelang.block_weights.written`); arithmetic keeps both operands'. They take no
    part in equality."""

    def __post_init__(self) -> None:
        if not self.readings:
            raise WeightsError("block weights need a reading")
        object.__setattr__(self, "elemental", tuple(self.elemental))
        object.__setattr__(self, "written", tuple(self.written))

    # -- constructors ---------------------------------------------------------------------

    @classmethod
    def scalar(cls, value: float) -> BlockWeights:
        """The same value for every block and BASE."""
        number = check_value(value, None, "scalar")
        return cls((Reading({}, number),), origin=format_number(number))

    @classmethod
    def from_blocks(
        cls,
        values: Mapping[str, float | None],
        *,
        base: float | None = None,
        default: float | None = None,
        origin: str = "",
        elemental: Sequence[ElementalEntry] = (),
    ) -> BlockWeights:
        """Values by block name (``None`` leaves a block unset), an optional BASE and an
        optional value for every other slot."""
        vocab = vocabulary()
        found: dict[str, float] = {}
        if base is not None:
            found[BASE] = check_value(base, None, BASE)
        for name, value in values.items():
            if not vocab.is_block(name):
                raise WeightsError(f"unknown block {name!r}", hint=vocab.valid_keys_text())
            if value is not None:
                found[name] = check_value(value, None, name)
        number = None if default is None else check_value(default, None, DEFAULT_KEY)
        return cls((Reading(found, number),), origin=origin, elemental=tuple(elemental))

    @classmethod
    def from_vector(cls, values: Sequence[float]) -> BlockWeights:
        """A positional list, read in every registered scheme with a form of its length
        (25 or 26 for SD1/SD2, 19 or 20 for SDXL; see :meth:`BlockScheme.vector_form`)."""
        count = len(values)
        vocab = vocabulary()
        forms = vocab.forms(count)
        if not forms:
            raise WeightsError(
                f"a block weight vector has {vocab.lengths_text()}, not {count}",
                hint=vocab.lengths_hint() or None,
            )
        numbers = [check_value(v, i, f"value {i + 1} of {count}") for i, v in enumerate(values)]
        readings = tuple(
            Reading(dict(zip(form.names, numbers, strict=True)), None, form, scheme)
            for scheme, form in forms
        )
        return cls(readings, origin=f"{count}-value vector")

    @classmethod
    def from_map(
        cls,
        entries: Sequence[tuple[MapKey | KeySelector, float]],
        *,
        written: Sequence[WrittenBlock] = (),
    ) -> BlockWeights:
        """Entries ``(key, value)`` applied in order, later ones overriding earlier ones.

        A key is a block name, a group (``IN`` = every input block), ``BASE``, a
        ``(start, end)`` range, or ``default``. ``default`` sets every slot (BASE included)
        that no other entry set, wherever it is written, and may appear once. A
        :class:`KeySelector` key makes an elemental entry: those apply after every block
        entry, in their order. A malformed entry raises :class:`WeightsError` with ``index``
        set to its position. ``written`` are the block names as the recipe wrote them, kept
        for the checks against the model's architecture.
        """
        values: dict[str, float] = {}
        default: float | None = None
        default_index: int | None = None
        elemental: list[ElementalEntry] = []
        for index, (key, value) in enumerate(entries):
            if isinstance(key, KeySelector):
                number = check_value(value, index, key.pattern)
                elemental.append(ElementalEntry(key, number))
                continue
            number = check_value(value, index, key_text(key))
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
                values[BASE] = number
                continue
            for name in key_blocks(key, index):
                values[name] = number
        return cls(
            (Reading(values, default),),
            origin="map",
            elemental=tuple(elemental),
            written=tuple(written),
        )

    # -- queries --------------------------------------------------------------------------

    @property
    def reading(self) -> Reading:
        """The first reading (the only one unless the value is an ambiguous vector)."""
        return self.readings[0]

    @property
    def base(self) -> float | None:
        """The BASE value the first reading sets, or ``None``."""
        return self.reading.get(BASE)

    def get(self, block: str) -> float | None:
        """The value of ``"BASE"`` or a block name in the first reading; ``None`` if unset."""
        if not vocabulary().is_block(block):
            raise unknown_key_error(block, None)
        return self.reading.get(block)

    @property
    def vector(self) -> tuple[float, ...] | None:
        """For a plain vector (a preset, a list), its block values in order, BASE left out;
        ``None`` for any other value."""
        reading = self.reading
        if reading.form is None:
            return None
        names = [n for n in reading.form.names if n != BASE]
        numbers = [reading.values.get(n) for n in names]
        if any(v is None for v in numbers):
            return None
        return tuple(v for v in numbers if v is not None)

    def slots(self, scheme: BlockScheme) -> tuple[float | None, ...]:
        """The value of each block of ``scheme`` (``None`` where unset), in the reading that
        :meth:`resolve` would use; BASE is not included (see :meth:`base_for`)."""
        reading = self._reading_for(scheme)
        return tuple(reading.get(name) for name in scheme.blocks)

    def base_for(self, scheme: BlockScheme) -> float | None:
        return self._reading_for(scheme).get(BASE)

    def numbers(self) -> Iterator[tuple[str, float]]:
        """Every value the weight sets, named by its slot: BASE first, then the blocks of
        every scheme in order (a ``default:`` counts for each slot it fills)."""
        names = (BASE, *vocabulary().names)
        for reading in self.readings:
            for name in names:
                value = reading.get(name)
                if value is not None:
                    yield name, value

    @functools.cached_property
    def is_scalar(self) -> float | None:
        """The value if every block and BASE hold the same number in every registered scheme
        the weight can be resolved for (at least one), with no elemental entries; else
        ``None``."""
        if self.elemental:
            return None
        reading = self.reading
        if len(self.readings) == 1 and not reading.values and reading.default is not None:
            return reading.default
        found: float | None = None
        for scheme in block_schemes():
            chosen = self._complete_reading(scheme)
            if chosen is None:
                continue
            values = {chosen.get(BASE), *(chosen.get(b) for b in scheme.blocks)}
            if len(values) != 1 or None in values:
                return None
            (value,) = values
            if found is not None and value != found:
                return None
            found = value
        return found

    def _complete_reading(self, scheme: BlockScheme) -> Reading | None:
        """The first reading that sets every block of ``scheme``, or ``None``."""
        for reading in self.readings:
            if all(reading.get(b) is not None or b in scheme.follows_base for b in scheme.blocks):
                return reading
        return None

    def _reading_for(self, scheme: BlockScheme) -> Reading:
        """The reading :meth:`resolve` uses for ``scheme``: the first complete one, else the
        one that sets the most of its blocks (whose gaps the errors describe)."""
        complete = self._complete_reading(scheme)
        if complete is not None:
            return complete
        return max(
            self.readings,
            key=lambda r: sum(1 for b in scheme.blocks if r.get(b) is not None),
        )

    def with_base(self, base: float) -> BlockWeights:
        """The same blocks with BASE set (or replaced)."""
        number = check_value(base, None, BASE)
        readings = tuple(
            Reading({**r.values, BASE: number}, r.default, r.form, r.scheme) for r in self.readings
        )
        return BlockWeights(
            readings, origin=self.origin, elemental=self.elemental, written=self.written
        )

    def resolve(self, scheme: BlockScheme, *, base: float | None = None) -> ResolvedWeights:
        """Plain floats for exactly the blocks of ``scheme`` (an architecture's scheme).

        An unset BASE takes ``base`` (the merge method's fallback); if that is ``None`` too,
        or a block is unset, :class:`WeightsError` says what is missing. A block the scheme
        lists in ``follows_base`` takes BASE's value when unset.
        """
        reading = self._reading_for(scheme)
        missing = [
            b for b in scheme.blocks if reading.get(b) is None and b not in scheme.follows_base
        ]
        if missing:
            raise self._missing_blocks_error(reading, scheme, missing)
        resolved_base = reading.get(BASE)
        if resolved_base is None:
            resolved_base = base
        if resolved_base is None:
            with_base = next((f for f in scheme.vectors if BASE in f.names), None)
            give = f"give {with_base.length} values, " if with_base is not None else "give "
            raise WeightsError(
                f"{self._subject()} sets no BASE weight (text encoders and other keys "
                "outside the U-Net blocks)",
                hint=f"{give}a BASE: entry, a default:, or base=",
            )
        resolved_base = check_value(resolved_base, None, BASE)
        values: list[tuple[str, float]] = []
        for name in scheme.blocks:
            value = reading.get(name)
            values.append((name, resolved_base if value is None else value))
        return ResolvedWeights(resolved_base, BlockValues(values), self.elemental)

    def _subject(self) -> str:
        if self.origin.endswith("-value vector"):
            return f"a {self.origin}"
        if self.origin in ("", "map"):
            return "a block weight map" if self.origin == "map" else "the block weights"
        return self.origin

    def _missing_blocks_error(
        self, reading: Reading, scheme: BlockScheme, missing: list[str]
    ) -> WeightsError:
        vocab = vocabulary()
        hint = None
        if scheme.vector_hint:
            hint = f"give {scheme.vector_hint} for {scheme.title} models"
        for other in vocab.schemes:
            if other is scheme or not other.blocks:
                continue
            shared = set(other.blocks) & set(scheme.blocks)
            covers = all(reading.get(b) is not None for b in other.blocks)
            if shared and covers and set(missing) <= set(scheme.blocks) - set(other.blocks):
                listed = vocab.describe(other.blocks, by_group=True)
                also = f"this {scheme.title} model also has {vocab.describe(missing)}"
                if self.origin.endswith("-value vector"):
                    message = f"a {self.origin} is {other.title}'s ({listed}); {also}"
                else:
                    message = (
                        f"{self._subject()} sets only {other.title}'s {len(other.blocks)} "
                        f"blocks ({listed}); {also}"
                    )
                return WeightsError(message, hint=hint)
        if reading.form is not None and reading.scheme is not None:
            listed = vocab.describe([n for n in reading.form.names if n != BASE], by_group=True)
            what = f"{reading.scheme.title}'s"
            if not self.origin.endswith("-value vector"):
                what += f" {reading.form.length} values"
            return WeightsError(
                f"{self._subject()} is {what} ({listed}); {scheme.title} models have "
                f"{vocab.describe(scheme.blocks, by_group=True)}",
                hint=hint,
            )
        return WeightsError(
            f"{self._subject()} sets no weight for {vocab.describe(missing)}",
            hint="add a default: entry, or give those blocks a value",
        )

    # -- equality -------------------------------------------------------------------------

    @functools.cached_property
    def _signature(self) -> tuple[object, ...]:
        per_scheme = tuple(
            (self.base_for(s), self.slots(s), self._complete_reading(s) is not None)
            for s in block_schemes()
        )
        return (*per_scheme, self.elemental)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BlockWeights):
            return NotImplemented
        return self._signature == other._signature

    def __hash__(self) -> int:
        return hash(self._signature)

    def __repr__(self) -> str:
        return f"BlockWeights({self.to_text()})"

    # -- arithmetic -----------------------------------------------------------------------

    def _combine(self, other: BlockWeights | float, symbol: str, reflected: bool) -> BlockWeights:
        """Elementwise ``self <symbol> other`` (``other <symbol> self`` when reflected).

        Elemental entries go through the same operation with the other operand's value, which
        must then be one number for every key: combining two values when one has elemental
        entries and the other varies by block (or has its own) is refused.
        """
        elemental = self._combine_elemental(other, symbol, reflected)
        written = self.written
        if isinstance(other, BlockWeights):
            theirs, other_text = other.readings, _operand_text(other.origin)
            written = merge_written(self.written, other.written)
        else:
            number = check_value(other, None, "operand")
            theirs, other_text = (Reading({}, number),), format_number(number)
        readings: list[Reading] = []
        for mine in self.readings:
            for their in theirs:
                left, right = (their, mine) if reflected else (mine, their)
                combined = _combine_readings(left, right, symbol)
                if combined not in readings:
                    readings.append(combined)
        # Readings that set nothing (two vectors read in different schemes) are dropped,
        # unless nothing else is left: then the value is one that sets no slot.
        kept = [r for r in readings if not r.empty] or readings[:1]
        mine_text = _operand_text(self.origin)
        left_text, right_text = (other_text, mine_text) if reflected else (mine_text, other_text)
        origin = _bounded(f"{left_text} {symbol} {right_text}")
        return BlockWeights(tuple(kept), origin=origin, elemental=elemental, written=written)

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
            keyed, number, swap = self, check_value(other, None, "operand"), reflected
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
        readings = tuple(
            Reading(
                {k: -v for k, v in r.values.items()},
                None if r.default is None else -r.default,
                r.form,
                r.scheme,
            )
            for r in self.readings
        )
        return BlockWeights(
            readings,
            origin=_bounded(f"-{_operand_text(self.origin)}"),
            elemental=tuple(ElementalEntry(e.selector, -e.value) for e in self.elemental),
            written=self.written,
        )

    # -- text -----------------------------------------------------------------------------

    def to_text(self) -> str:
        """Canonical recipe text for this value; reading it back gives an equal value.

        A number when every slot holds it (``0.5``); a plain vector when the value was read
        as one and every value of its form is set; otherwise a map: ``BASE`` first, then runs
        of consecutive blocks sharing a value as ranges, then ``default:``, then the
        elemental entries: ``{BASE: 0.3, IN00..IN05: 1, M00: 0.5, default: 0}``.
        """
        reading = self.reading
        if not self.elemental and not reading.values and reading.default is not None:
            return format_number(reading.default)
        form = _exact_form(reading) if not self.elemental else None
        if form is not None:
            return "[" + ", ".join(format_number(reading.values[n]) for n in form.names) + "]"
        return _map_text(reading, self.elemental)


def _exact_form(reading: Reading) -> VectorForm | None:
    """A vector form whose names are exactly the slots ``reading`` sets (its own scheme's
    first), so that the value reads back as that vector; ``None`` when there is none."""
    if reading.default is not None or not reading.values:
        return None
    names = set(reading.values)
    schemes = [reading.scheme] if reading.scheme is not None else []
    for scheme in [*schemes, *vocabulary().schemes]:
        for form in scheme.vectors:
            if form.length == len(names) and set(form.names) == names:
                return form
    return None


def _combine_readings(left: Reading, right: Reading, symbol: str) -> Reading:
    """``left <symbol> right`` slot by slot (a slot unset on either side stays unset)."""
    op = _OPERATORS[symbol]

    def apply(a: float | None, b: float | None, slot: str) -> float | None:
        if a is None or b is None:
            return None
        if symbol == "/" and b == 0:
            raise WeightsError(
                f"division by zero in block weights ({slot} of the divisor is 0)",
                hint="a divisor must be non-zero in every block it sets",
            )
        result = op(a, b)
        if not math.isfinite(result):
            raise WeightsError(
                f"block weight arithmetic gives {result!r} for {slot} "
                f"({format_number(a)} {symbol} {format_number(b)})"
            )
        return result

    values: dict[str, float] = {}
    default: float | None = None
    default_done = False
    for name in (BASE, *vocabulary().names):
        if name in left.values or name in right.values:
            value = apply(left.get(name), right.get(name), name)
            if value is not None:
                values[name] = value
        elif not default_done and left.default is not None and right.default is not None:
            default = apply(left.default, right.default, name)
            default_done = True
    if not default_done:
        default = apply(left.default, right.default, DEFAULT_KEY)
    form, scheme = left.form, left.scheme
    if not left.values:
        form, scheme = right.form, right.scheme
    elif right.values and right.form != left.form:
        form, scheme = None, None
    return Reading(values, default, form, scheme)


def _map_text(reading: Reading, elemental: Sequence[ElementalEntry]) -> str:
    vocab = vocabulary()
    entries: list[str] = []
    if BASE in reading.values:
        entries.append(f"{BASE}: {format_number(reading.values[BASE])}")
    names = vocab.sorted([n for n in reading.values if n != BASE])
    start = 0
    while start < len(names):
        end = start
        value = reading.values[names[start]]
        while end + 1 < len(names) and _consecutive(names[end], names[end + 1]):
            if not _same(reading.values[names[end + 1]], value):
                break
            end += 1
        key = names[start] if start == end else f"{names[start]}..{names[end]}"
        entries.append(f"{key}: {format_number(value)}")
        start = end + 1
    if reading.default is not None:
        entries.append(f"{DEFAULT_KEY}: {format_number(reading.default)}")
    entries += [entry.to_text() for entry in elemental]
    return "{" + ", ".join(entries) + "}"


def _consecutive(a: str, b: str) -> bool:
    order = vocabulary().order
    (seg_a, pos_a), (seg_b, pos_b) = order[a], order[b]
    return seg_a == seg_b and pos_b == pos_a + 1


def _same(x: float, y: float) -> bool:
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
