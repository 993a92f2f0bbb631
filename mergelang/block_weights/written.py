"""The block names a recipe wrote in a weight, with where it wrote them.

A recipe is checked before its inputs are known, so a weight map may name any block of any
registered scheme: ``{IN10: 0.3, default: 1}`` is valid text. Once the planner knows the
model's architecture, a name its scheme lacks sets nothing: :func:`blocks_not_in` finds those
names, so that the input checks can report them at the entry that wrote them.

Only names written as such are kept: a block name or group alone, each end of a range, a
block of an elemental entry's block set. ``BASE`` and ``default`` mean something in every
scheme, and plain vectors are read by position in the model's scheme.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mergelang.arch.scheme import BlockScheme
from mergelang.errors import Span

__all__ = ["WrittenBlock", "blocks_not_in", "merge_written", "name_runs"]


@dataclass(frozen=True)
class WrittenBlock:
    """A block name as a recipe wrote it, and where (``None``: built in code)."""

    name: str
    span: Span | None = None


def merge_written(*parts: Sequence[WrittenBlock]) -> tuple[WrittenBlock, ...]:
    """The written names of the operands of weights arithmetic, each once, in order."""
    return tuple(dict.fromkeys(w for part in parts for w in part))


def blocks_not_in(written: Iterable[WrittenBlock], scheme: BlockScheme) -> tuple[WrittenBlock, ...]:
    """The written names that are neither blocks nor groups of ``scheme``, in order."""
    index, groups = scheme.index, scheme.groups
    return tuple(w for w in written if w.name not in index and w.name not in groups)


_NUMBERED = re.compile(r"([A-Za-z_]+?)(\d+)")


def name_runs(names: Sequence[str]) -> str:
    """Names in the order given, runs of one prefix with consecutive numbers as ranges:
    ``IN, J00..J23, OUT, CLIP_L`` (unlike a range in the recipe, only the numbers count)."""
    parts: list[str] = []
    run: list[str] = []

    def follows(previous: str, name: str) -> bool:
        a, b = _NUMBERED.fullmatch(previous), _NUMBERED.fullmatch(name)
        if a is None or b is None or a.group(1) != b.group(1):
            return False
        return len(a.group(2)) == len(b.group(2)) and int(b.group(2)) == int(a.group(2)) + 1

    for name in names:
        if run and not follows(run[-1], name):
            parts.append(run[0] if len(run) == 1 else f"{run[0]}..{run[-1]}")
            run = []
        run.append(name)
    if run:
        parts.append(run[0] if len(run) == 1 else f"{run[0]}..{run[-1]}")
    return ", ".join(parts)
