"""The block names a recipe may write, over every registered block scheme.

A recipe is checked before its inputs are known, so a weight map's keys are checked against
the names of every scheme mergelang knows (:func:`mergelang.arch.block_schemes`): SD1/SD2's
25 U-Net blocks, SDXL's 19 (a subset of the same names), and whatever other architectures
register. A :class:`Vocabulary` holds them in one order (each scheme's names in its own
order, schemes in registration order), the groups (``IN`` = every input block of every
scheme that has them), ranges (``IN00..IN05``, read in the first scheme that holds both ends
in that order), the plain vector lengths, and the texts that explain them in errors.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from mergelang.arch import block_schemes
from mergelang.arch.scheme import BASE, BlockScheme, VectorForm

__all__ = [
    "BASE",
    "DEFAULT_KEY",
    "Vocabulary",
    "block_range",
    "describe_blocks",
    "is_block_name",
    "suggest_block",
    "vocabulary",
]

DEFAULT_KEY = "default"


@dataclass(frozen=True)
class Vocabulary:
    """Every block name, group, range and vector length of a set of block schemes."""

    schemes: tuple[BlockScheme, ...]

    @functools.cached_property
    def order(self) -> Mapping[str, tuple[int, int]]:
        """Name -> (segment, position): the segment is the index of the first scheme that
        has the name, so consecutive positions of one segment are a range in that scheme."""
        found: dict[str, tuple[int, int]] = {}
        for segment, scheme in enumerate(self.schemes):
            for name in scheme.blocks:
                if name not in found:
                    found[name] = (segment, len(found))
        return found

    @property
    def names(self) -> tuple[str, ...]:
        """Every block name, in order (BASE not included)."""
        return tuple(self.order)

    @functools.cached_property
    def groups(self) -> Mapping[str, tuple[str, ...]]:
        """Group name -> its blocks in every scheme that has the group, in order. A scheme
        whose block has the group's name contributes that block."""
        members: dict[str, set[str]] = {}
        for scheme in self.schemes:
            for group, blocks in scheme.groups.items():
                members.setdefault(group, set()).update(blocks)
        for group, found in members.items():
            if group in self.order:
                found.add(group)
        return {group: self.sorted(found) for group, found in members.items()}

    def is_block(self, name: str) -> bool:
        return name == BASE or name in self.order

    def sorted(self, names: Sequence[str] | set[str] | frozenset[str]) -> tuple[str, ...]:
        """``names`` without repeats, BASE first, then in block order."""
        unique = set(names)
        blocks = sorted((n for n in unique if n in self.order), key=self.order.__getitem__)
        return (BASE, *blocks) if BASE in unique else tuple(blocks)

    def range(self, start: str, end: str) -> tuple[str, ...] | None:
        """The blocks from ``start`` to ``end`` inclusive in the first scheme holding both in
        that order; ``None`` when no scheme does (the caller explains why)."""
        for scheme in self.schemes:
            index = scheme.index
            if start in index and end in index and index[start] <= index[end]:
                return scheme.blocks[index[start] : index[end] + 1]
        return None

    def runs_backwards(self, start: str, end: str) -> bool:
        return any(
            start in s.index and end in s.index and s.index[end] < s.index[start]
            for s in self.schemes
        )

    def describe(
        self, names: Sequence[str] | set[str] | frozenset[str], *, by_group: bool = False
    ) -> str:
        """Block names in order with consecutive runs written as ranges, BASE first:
        ``["IN09", "IN10", "IN11", "OUT09"]`` -> ``"IN09..IN11, OUT09"``. ``by_group`` ends a
        run where a group ends (``IN00..IN11, M00, OUT00..OUT11`` rather than
        ``IN00..OUT11``), for texts that show a scheme's shape."""
        parts: list[str] = [BASE] if BASE in names else []
        group_of: dict[str, int] = {}
        if by_group:
            for index, members in enumerate(self.groups.values()):
                for member in members:
                    group_of.setdefault(member, index)
        known = sorted(
            {
                (self.order[n][1], (self.order[n][0], group_of.get(n, -1)))
                for n in names
                if n in self.order
            }
        )
        by_position = {pos: name for name, (_, pos) in self.order.items()}
        for first, last in _runs(known):
            start, end = by_position[first], by_position[last]
            parts.append(start if start == end else f"{start}..{end}")
        return ", ".join(parts)

    # -- vector forms

    def forms(self, length: int) -> tuple[tuple[BlockScheme, VectorForm], ...]:
        """Every scheme's vector form of ``length`` values."""
        found: list[tuple[BlockScheme, VectorForm]] = []
        for scheme in self.schemes:
            form = scheme.vector_form(length)
            if form is not None:
                found.append((scheme, form))
        return tuple(found)

    def lengths_text(self, *, unit: str = " values") -> str:
        """``"25 or 26 values (SD1/SD2) or 19 or 20 (SDXL)"``: the vector lengths of every
        scheme, ``unit`` after the first."""
        parts = []
        for i, scheme in enumerate(self.schemes):
            lengths = " or ".join(str(n) for n in scheme.vector_lengths)
            parts.append(f"{lengths}{unit if i == 0 else ''} ({scheme.title})")
        return _or_list(parts)

    def lengths_hint(self) -> str:
        """What each scheme's vectors hold, in words."""
        docs = [s.vector_doc for s in self.schemes if s.vector_doc]
        if not docs:
            return ""
        later = [f"For {s.title}, {s.vector_doc}" for s in self.schemes[1:] if s.vector_doc]
        return ". ".join([self.schemes[0].vector_doc, *later])

    def blocks_text(self) -> str:
        """``"blocks are IN00..IN11, M00, OUT00..OUT11 (SDXL: IN00..IN08, M00, OUT00..OUT08)"``."""
        first, *others = self.schemes
        described = self.describe(first.blocks, by_group=True)
        more = [f"{s.title}: {self.describe(s.blocks, by_group=True)}" for s in others]
        return "blocks are " + described + (f" ({'; '.join(more)})" if more else "")

    def valid_keys_text(self) -> str:
        """What a weight map's keys may be, for hints."""
        groups = _and_list(list(self.groups))
        return f"{self.blocks_text()}; also the groups {groups}, and BASE and default"

    def order_text(self, start: str, end: str) -> str:
        """The block order a range from ``start`` to ``end`` is read in, for hints."""
        holder = next((s for s in self.schemes if start in s.index and end in s.index), None)
        schemes = [holder] if holder is not None else list(self.schemes)
        return "; ".join(self.describe(s.blocks, by_group=True) for s in schemes)

    # -- suggestions

    def suggest(self, name: str) -> str | None:
        """The valid weight-map key closest to a mistyped one, or ``None``.

        Understands the usual slips: a block number past the end (``IN12`` -> ``IN11``), a
        missing zero (``IN5`` -> ``IN05``), case (``out03`` -> ``OUT03``), other tools'
        spellings (``MID``, ``IN_05``, ``OUT-11``); anything else goes to difflib.
        """
        upper = name.strip().upper()
        if upper == BASE:
            return BASE
        if upper == DEFAULT_KEY.upper():
            return DEFAULT_KEY
        match = _BLOCKISH.fullmatch(upper)
        if match is not None and "IN" in self.groups and "OUT" in self.groups:
            kind, digits = match.group(1), match.group(2)
            if kind in ("M", "MID", "MIDDLE"):
                return "M" if kind == "M" and digits is None else "M00"
            group = "IN" if kind.startswith("IN") else "OUT"
            if digits is None:
                return group
            numbered = [b for b in self.groups[group] if b[len(group) :].isdigit()]
            return f"{group}{min(int(digits), len(numbered) - 1):02d}"
        upper_names = {n.upper(): n for n in (*self.names, *self.groups)}
        if upper in upper_names:
            return upper_names[upper]
        candidates = [*self.names, *self.groups, BASE, DEFAULT_KEY]
        close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
        return close[0] if close else None


_BLOCKISH = re.compile(r"(IN|INPUT|OUT|OUTPUT|M|MID|MIDDLE)[_\-\s]*(\d+)?")


def _runs(positions: Sequence[tuple[int, tuple[int, int]]]) -> Iterator[tuple[int, int]]:
    """Maximal runs of consecutive positions of one segment, as (first, last) positions;
    ``positions`` are sorted ``(position, segment)`` pairs."""
    start: int | None = None
    prev, prev_segment = -2, (-1, -1)
    for position, segment in positions:
        if start is None:
            start = position
        elif segment != prev_segment or position != prev + 1:
            yield start, prev
            start = position
        prev, prev_segment = position, segment
    if start is not None:
        yield start, prev


def _or_list(parts: Sequence[str]) -> str:
    if len(parts) <= 2:
        return " or ".join(parts)
    return ", ".join(parts[:-1]) + " or " + parts[-1]


def _and_list(parts: Sequence[str]) -> str:
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts)


@functools.lru_cache(maxsize=8)
def _vocabulary(schemes: tuple[BlockScheme, ...]) -> Vocabulary:
    return Vocabulary(schemes)


def vocabulary() -> Vocabulary:
    """The vocabulary of every registered block scheme (rebuilt when one is registered)."""
    return _vocabulary(block_schemes())


def is_block_name(name: str) -> bool:
    """Whether ``name`` is ``BASE`` or a block of some registered scheme."""
    return vocabulary().is_block(name)


def block_range(start: str, end: str) -> tuple[str, ...]:
    """Blocks from ``start`` to ``end`` inclusive, in the first scheme that holds both.

    Raises ``ValueError`` for unknown names or a range that runs backwards.
    """
    vocab = vocabulary()
    for name in (start, end):
        if name not in vocab.order:
            raise ValueError(f"unknown block {name!r}")
    found = vocab.range(start, end)
    if found is None:
        raise ValueError(f"block range {start}..{end} runs backwards")
    return found


def describe_blocks(names: Sequence[str] | set[str] | frozenset[str]) -> str:
    """See :meth:`Vocabulary.describe`."""
    return vocabulary().describe(names)


def suggest_block(name: str) -> str | None:
    """See :meth:`Vocabulary.suggest`."""
    return vocabulary().suggest(name)
