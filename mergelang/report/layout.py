"""Where each block of a scheme sits when block weights are drawn as the U-Net's shape.

A U-Net's blocks read as a U: the input blocks go down the left side (``IN00`` at the top),
the middle block sits at the bottom, the output blocks come back up the right side
(``OUT00`` at the bottom, the last output block at the top). That is how people think about
block weights, so the charts and the comparison page both place blocks with
:func:`u_layout`. A scheme is drawn as a U when its groups ``IN``, ``M`` and ``OUT`` hold all
its blocks (SD1/SD2's 25, SDXL's 19, any U-Net registered later); any other scheme (a
transformer's double and single blocks) has no U and is drawn in scheme order.
"""

from __future__ import annotations

from dataclasses import dataclass

from mergelang.arch.scheme import BlockScheme

__all__ = ["Slot", "ULayout", "u_layout"]


@dataclass(frozen=True)
class Slot:
    """A block's place in the U: ``column`` 0 (left arm), 1 (bottom middle) or 2 (right
    arm); ``row`` 0 at the top."""

    block: str
    column: int
    row: int


@dataclass(frozen=True)
class ULayout:
    """The U of one scheme: a slot per block, in scheme order, ``rows`` rows in all (the
    arms' rows, then one row for the middle)."""

    scheme: BlockScheme
    slots: tuple[Slot, ...]
    rows: int

    def slot(self, block: str) -> Slot:
        for slot in self.slots:
            if slot.block == block:
                return slot
        raise KeyError(block)


def u_layout(scheme: BlockScheme) -> ULayout | None:
    """The U placement of ``scheme``'s blocks, or ``None`` when it is not a U-Net scheme."""
    groups = scheme.groups
    if not all(name in groups for name in ("IN", "M", "OUT")):
        return None
    ins, middle, outs = groups["IN"], groups["M"], groups["OUT"]
    if sorted((*ins, *middle, *outs)) != sorted(scheme.blocks) or not middle:
        return None
    arm = max(len(ins), len(outs))
    slots: list[Slot] = []
    for row, block in enumerate(ins):
        slots.append(Slot(block, 0, row))
    for offset, block in enumerate(middle):
        slots.append(Slot(block, 1, arm + offset))
    for index, block in enumerate(outs):
        slots.append(Slot(block, 2, arm - 1 - index))
    order = scheme.index
    slots.sort(key=lambda s: order[s.block])
    return ULayout(scheme, tuple(slots), arm + len(middle))
