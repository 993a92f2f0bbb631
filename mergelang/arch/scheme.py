"""Block schemes: the merge blocks of an architecture, as data.

A :class:`BlockScheme` names the blocks a weight can differ by (``IN00..OUT11`` for SD1's
U-Net, ``D00..D18`` and ``S00..S37`` for a Flux transformer), in their order, with the groups
a weight map may name (``IN`` = every input block), the plain vector forms (which block each
value of a 25-value list sets), and the rules that put each checkpoint key in a block.

A rule (:class:`BlockRule`) matches the key's name inside one component (the U-Net's
``input_blocks.4.1.proj_in.weight``), segment by segment: ``("input_blocks", "{n}")`` matches
``input_blocks.4.*`` and never ``input_blocks.40.*`` by accident, because a segment is
compared whole. The rule's target is a block template (``"IN{n:02d}"``), ``BASE``, ``None``
(the key is never merged) or a convention slot (``"@time_embed"``): a place where the tools
users know disagree, which the recipe's ``convention`` decides (see
:mod:`mergelang.arch.conventions`). A key no rule matches goes with ``BASE``: that is what MBW
does with every key outside the numbered blocks.

Block names are the same strings in every scheme where they mean the same thing, so a weight
map written for SD1 (``{IN00..IN05: 1}``) reads naturally for SDXL, whose 19 blocks are a
subset of SD1's 25 names. Pure data and pure Python: no torch.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = ["BASE", "FIRST_BLOCK", "LAST_BLOCK", "BlockRule", "BlockScheme", "VectorForm"]

BASE = "BASE"
"""The slot of every key outside the scheme's blocks (text encoders, unnumbered keys...)."""

FIRST_BLOCK = "FIRST_BLOCK"
"""A convention target: the scheme's first block (SD1's IN00)."""

LAST_BLOCK = "LAST_BLOCK"
"""A convention target: the scheme's last block (SD1's OUT11, SDXL's OUT08)."""

SLOT_MARK = "@"
"""A rule target starting with this names a convention slot (``"@time_embed"``)."""


@dataclass(frozen=True)
class VectorForm:
    """One plain-vector reading: value ``i`` of a list of this length sets ``names[i]``
    (``BASE`` may be among them)."""

    names: tuple[str, ...]

    @property
    def length(self) -> int:
        return len(self.names)


@dataclass(frozen=True)
class BlockRule:
    """Keys of ``component`` whose local name starts with ``pattern`` go to ``target``.

    ``pattern`` is a tuple of name segments; ``"{n}"`` matches one segment of digits, bound
    as ``n``. An empty pattern matches every key of the component. Unless ``whole`` is set the
    key must have at least one more segment after the pattern (``out.0.weight`` matches
    ``("out",)``, the key ``out`` alone does not). ``target`` is a block-name template
    formatted with ``n`` (``"IN{n:02d}"``), :data:`BASE`, ``None`` (never merged), a
    convention slot ``"@NAME"``, or :data:`FIRST_BLOCK` / :data:`LAST_BLOCK`. A template that
    gives a name the scheme does not have (``input_blocks.12`` in a 12-block U-Net) sends
    the key to ``BASE``.
    """

    component: str
    pattern: tuple[str, ...]
    target: str | None
    whole: bool = False

    def match(self, local: Sequence[str]) -> dict[str, int] | None:
        """The bindings of the pattern when the local name's segments match, else None."""
        if len(local) < len(self.pattern) + (0 if self.whole else 1):
            return None
        bound: dict[str, int] = {}
        for want, got in zip(self.pattern, local, strict=False):
            if want == "{n}":
                if not got.isdigit():
                    return None
                bound["n"] = int(got)
            elif want != got:
                return None
        return bound


@dataclass(frozen=True)
class BlockScheme:
    """An architecture's merge blocks: names in order, groups, vector forms, key rules.

    ``title`` names the models that have it in messages (``"SD1/SD2"``). ``vector_doc`` says
    in words what the plain vector forms hold and ``vector_hint`` how many values to give
    (``"25 values (26 with BASE first)"``), for error hints. ``follows_base`` lists blocks
    whose weight, when a value leaves them unset, is BASE's (a text encoder named as a block
    of its own still follows BASE unless set). ``slots`` gives each convention slot's target
    when the recipe's convention says nothing about it. ``tolerated`` lists block names of
    other schemes that recipes for these models write by convention (SD1's IN09..IN11 and
    OUT09..OUT11 on SDXL): a weight there sets nothing and is a warning, where any other name
    the scheme lacks is an error.
    """

    name: str
    title: str
    blocks: tuple[str, ...]
    groups: Mapping[str, tuple[str, ...]]
    vectors: tuple[VectorForm, ...]
    rules: tuple[BlockRule, ...]
    vector_doc: str = ""
    vector_hint: str = ""
    follows_base: frozenset[str] = frozenset()
    slots: Mapping[str, str | None] = field(default_factory=lambda: MappingProxyType({}))
    tolerated: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if len(set(self.blocks)) != len(self.blocks):
            raise ValueError(f"block scheme {self.name}: a block name appears twice")
        if BASE in self.blocks:
            raise ValueError(f"block scheme {self.name}: BASE is not a block of its own")
        known = {*self.blocks, BASE}
        for group, members in self.groups.items():
            unknown = [m for m in members if m not in self.blocks]
            if unknown:
                raise ValueError(f"block scheme {self.name}: group {group} names {unknown}")
        for form in self.vectors:
            unknown = [n for n in form.names if n not in known]
            if unknown:
                raise ValueError(
                    f"block scheme {self.name}: a {form.length}-value vector names {unknown}"
                )
        object.__setattr__(self, "groups", MappingProxyType(dict(self.groups)))
        object.__setattr__(self, "slots", MappingProxyType(dict(self.slots)))

    def __hash__(self) -> int:
        return hash((self.name, self.blocks))

    @property
    def first(self) -> str:
        return self.blocks[0]

    @property
    def last(self) -> str:
        return self.blocks[-1]

    @functools.cached_property
    def index(self) -> Mapping[str, int]:
        """Block name -> position in :attr:`blocks`."""
        return MappingProxyType({name: i for i, name in enumerate(self.blocks)})

    def vector_form(self, length: int) -> VectorForm | None:
        for form in self.vectors:
            if form.length == length:
                return form
        return None

    @property
    def vector_lengths(self) -> tuple[int, ...]:
        return tuple(form.length for form in self.vectors)

    def block_of(
        self,
        component: str,
        local: str,
        slot_targets: Mapping[str, str | None],
    ) -> str | None:
        """The block of a key of ``component`` named ``local`` inside it: a block name,
        ``BASE`` or ``None``. ``slot_targets`` is the recipe convention's say on the slots
        (a slot it leaves out takes the scheme's own target)."""
        parts = local.split(".")
        for rule in self.rules:
            if rule.component != component:
                continue
            bound = rule.match(parts)
            if bound is None:
                continue
            return self.resolve_target(rule.target, bound, slot_targets)
        return BASE

    def resolve_target(
        self,
        target: str | None,
        bound: Mapping[str, int],
        slot_targets: Mapping[str, str | None],
    ) -> str | None:
        """A rule target as a block name, ``BASE`` or ``None``."""
        if target is not None and target.startswith(SLOT_MARK):
            slot = target[len(SLOT_MARK) :]
            target = slot_targets[slot] if slot in slot_targets else self.slots.get(slot, BASE)
        if target is None or target == BASE:
            return target
        if target == FIRST_BLOCK:
            return self.first
        if target == LAST_BLOCK:
            return self.last
        name = target.format(**bound) if "{" in target else target
        if name in self.index:
            return name
        if "{" in target:
            return BASE
        raise ValueError(f"block scheme {self.name}: rule target {target!r} is not a block")
