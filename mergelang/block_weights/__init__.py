"""Block weights: a number per merge block, by block name, resolved per architecture.

- :mod:`~mergelang.block_weights.names`: the block names, groups and ranges of every
  registered block scheme (what a recipe may write before its inputs are known).
- :mod:`~mergelang.block_weights.keys`: the keys of a weight map.
- :mod:`~mergelang.block_weights.elemental`: per-key entries (``"attn2" in OUT03: 0.2``).
- :mod:`~mergelang.block_weights.weights`: :class:`BlockWeights` (a weight as written) and
  :class:`ResolvedWeights` (plain floats for one architecture's blocks).
- :mod:`~mergelang.block_weights.written`: the block names a recipe wrote, with their places,
  to report those a model's scheme lacks.
- :mod:`~mergelang.block_weights.values`: numbers, their canonical text, :class:`WeightsError`.

Nothing here imports torch: the recipe checker evaluates weights with it.
"""

from __future__ import annotations

from mergelang.block_weights.elemental import ElementalEntry, KeySelector, selector_blocks
from mergelang.block_weights.keys import MapKey
from mergelang.block_weights.names import (
    BASE,
    DEFAULT_KEY,
    Vocabulary,
    block_range,
    describe_blocks,
    is_block_name,
    suggest_block,
    vocabulary,
)
from mergelang.block_weights.values import WeightsError, format_number
from mergelang.block_weights.weights import BlockValues, BlockWeights, Reading, ResolvedWeights
from mergelang.block_weights.written import WrittenBlock, blocks_not_in, name_runs

__all__ = [
    "BASE",
    "DEFAULT_KEY",
    "BlockValues",
    "BlockWeights",
    "ElementalEntry",
    "KeySelector",
    "MapKey",
    "Reading",
    "ResolvedWeights",
    "Vocabulary",
    "WeightsError",
    "WrittenBlock",
    "block_range",
    "blocks_not_in",
    "describe_blocks",
    "format_number",
    "is_block_name",
    "name_runs",
    "selector_blocks",
    "suggest_block",
    "vocabulary",
]
