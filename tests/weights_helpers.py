"""Block weights in SD1's terms, for tests that state values as 25 U-Net slots."""

from __future__ import annotations

from collections.abc import Sequence

from mergelang.arch import SD1, SDXL
from mergelang.block_weights import BlockWeights

SD_SCHEME = SD1.scheme
SDXL_SCHEME = SDXL.scheme


def sd_weights(
    base: float | None, blocks: Sequence[float | None], *, origin: str = ""
) -> BlockWeights:
    """The value that sets BASE to ``base`` and SD1's 25 blocks, in order, to ``blocks``."""
    if len(blocks) != len(SD_SCHEME.blocks):
        raise ValueError(f"{len(blocks)} values for {len(SD_SCHEME.blocks)} blocks")
    return BlockWeights.from_blocks(
        dict(zip(SD_SCHEME.blocks, blocks, strict=True)), base=base, origin=origin
    )


def sd_slots(weights: BlockWeights) -> tuple[float | None, ...]:
    """The value of each of SD1's 25 blocks (``None`` where unset)."""
    return weights.slots(SD_SCHEME)


def in_sd_terms(weights: BlockWeights) -> tuple[float | None, tuple[float | None, ...]]:
    """BASE and SD1's 25 blocks: how a value reads for SD1 models, whatever it says for the
    architectures with other blocks (a 26-value vector is also SD3's IN, J00..J23, OUT; a
    map's ``OUT`` is also the Flux and SD3 block of that name)."""
    return weights.base_for(SD_SCHEME), sd_slots(weights)
