"""Merge block names, shared by the language (which needs no torch) and the architectures.

SD1 and SD2 have the classic 25 merge blocks IN00..IN11, M00, OUT00..OUT11; SDXL has 19:
IN00..IN08, M00, OUT00..OUT08. ``BASE`` is the slot for everything outside the U-Net blocks
(text encoders, and whatever the architecture's convention puts there). Block names are the
same strings in every architecture, so a weight map written for SD1 reads naturally for SDXL.
"""

from __future__ import annotations

BASE = "BASE"

SD_BLOCKS: tuple[str, ...] = (
    *(f"IN{i:02d}" for i in range(12)),
    "M00",
    *(f"OUT{i:02d}" for i in range(12)),
)
"""The 25 U-Net blocks of SD1 and SD2, in the order of MBW's 25-value vectors."""

SDXL_BLOCKS: tuple[str, ...] = (
    *(f"IN{i:02d}" for i in range(9)),
    "M00",
    *(f"OUT{i:02d}" for i in range(9)),
)
"""The 19 U-Net blocks of SDXL, in the order of SuperMerger's 19/20-value vectors."""

ALL_BLOCKS: tuple[str, ...] = SD_BLOCKS
"""Every block name any architecture uses (SDXL's are a subset of SD1/SD2's)."""

GROUPS: dict[str, tuple[str, ...]] = {
    "IN": tuple(b for b in SD_BLOCKS if b.startswith("IN")),
    "M": ("M00",),
    "OUT": tuple(b for b in SD_BLOCKS if b.startswith("OUT")),
}
"""Group names usable in weight maps; each covers the blocks an architecture has of it."""


def is_block_name(name: str) -> bool:
    return name == BASE or name in SD_BLOCKS


def block_range(start: str, end: str) -> tuple[str, ...]:
    """Blocks from ``start`` to ``end`` inclusive in IN..M..OUT order.

    Raises ``ValueError`` for unknown names or a range that runs backwards.
    """
    if start not in SD_BLOCKS:
        raise ValueError(f"unknown block {start!r}")
    if end not in SD_BLOCKS:
        raise ValueError(f"unknown block {end!r}")
    i, j = SD_BLOCKS.index(start), SD_BLOCKS.index(end)
    if j < i:
        raise ValueError(f"block range {start}..{end} runs backwards")
    return SD_BLOCKS[i : j + 1]
