"""Elemental patterns with several elements (SuperMerger's ``OUT05:NOT attn proj:0.2``),
against SuperMerger's own selection rule restated here."""

from __future__ import annotations

import pytest

from mergelang.arch import SD1
from mergelang.arch.layout import checkpoint_layout
from mergelang.block_weights import WeightsError
from mergelang.block_weights.elemental import KeySelector
from mergelang.convert.supermerger_weights import parse_elemental


def supermerger_selects(entry: str, key: str, block: str) -> bool:
    """SuperMerger's ``elementals()``: BLOCKS and ELEMENTS split on spaces, a leading NOT
    inverting each; the block test, then the element test, on ``key + block``."""
    blocks_text, elements_text, _ = entry.split(":")
    blocks, elements = blocks_text.split(" "), elements_text.split(" ")
    blocks_not, blocks = (True, blocks[1:]) if blocks[0] == "NOT" else (False, blocks)
    elements_not, elements = (True, elements[1:]) if elements[0] == "NOT" else (False, elements)
    skey = key + block
    flag = blocks_not
    for name in blocks:
        if name in skey:
            flag = not blocks_not
    if not flag:
        return False
    flag = elements_not
    for element in elements:
        if element in skey:
            flag = not elements_not
    return flag


@pytest.mark.parametrize(
    "entry", ["OUT05:NOT attn proj:0.2", "OUT05:attn proj:0.2", "IN04:NOT norm emb skip:0.3"]
)
def test_several_elements_select_what_supermerger_selects(entry: str) -> None:
    entries = parse_elemental(entry)
    keys = [k for k in checkpoint_layout("sd1", scale=1 / 40) if k.startswith("model.")]
    selected_somewhere = 0
    for key in keys:
        block = SD1.block_of(key)
        if block is None:
            continue
        ours = any(
            KeySelector(e.pattern, e.negate_pattern, e.blocks or None).matches(block, key)
            for e in entries
        )
        assert ours == supermerger_selects(entry, key, block), key
        selected_somewhere += ours
    assert selected_somewhere > 0


def test_not_with_several_elements_is_one_negated_pattern() -> None:
    selector = KeySelector("attn proj", negated=True, blocks=("OUT05",))
    assert selector.elements == ("attn", "proj")
    prefix = "model.diffusion_model.output_blocks.5.1."
    assert selector.matches("OUT05", prefix + "norm.weight")
    assert not selector.matches("OUT05", prefix + "proj_in.weight")
    assert not selector.matches("OUT05", prefix + "transformer_blocks.0.attn1.to_q.weight")
    assert not selector.matches("OUT04", "model.diffusion_model.output_blocks.4.1.norm.weight")
    # a glob element among plain ones
    either = KeySelector("*.to_q.* norm")
    assert either.matches_key(prefix + "transformer_blocks.0.attn1.to_q.weight")
    assert either.matches_key(prefix + "norm.bias")
    assert not either.matches_key(prefix + "proj_out.bias")
    with pytest.raises(WeightsError, match="empty"):
        KeySelector("   ")
