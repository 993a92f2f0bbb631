"""``convention supermerger`` / ``supermerger_2023`` against SuperMerger's own key -> block rule.

The two functions below restate ``blockfromkey`` of SuperMerger's ``scripts/mergers/mergers.py``
(hako-mikan/sd-webui-supermerger) at its current commit (0b1c491, the rule of 2cbd062 from
2025-11) and as it was from 0182d3b (2023-07, SDXL support) until then, with the weight list
lookup its merge loop does (``BLOCKID`` / ``BLOCKIDXLL``; a block name in neither is "not
merged"). The mapping is written from SuperMerger's code, not from mergelang's schemes.
"""

from __future__ import annotations

import re

import pytest

from mergelang.arch import SD1, SD2, SDXL, Architecture
from mergelang.arch.layout import checkpoint_layout

BLOCKID = ["BASE", *(f"IN{i:02d}" for i in range(12)), "M00", *(f"OUT{i:02d}" for i in range(12))]
BLOCKIDXLL = ["BASE", *(f"IN{i:02d}" for i in range(9)), "M00", *(f"OUT{i:02d}" for i in range(9))]
BLOCKIDXLL.append("VAE")


def _sd_index(key: str, time_embed_index: int) -> int:
    if "time_embed" in key:
        return time_embed_index
    if ".out." in key:
        return 24
    if m := re.search(r"\.input_blocks\.(\d+)\.", key):
        return int(m[1])
    if re.search(r"\.middle_block\.(\d+)\.", key):
        return 12
    if m := re.search(r"\.output_blocks\.(\d+)\.", key):
        return 13 + int(m[1])
    return -1


def _xl_block(key: str, *, current: bool) -> str:
    if not ("weight" in key or "bias" in key):
        return "Not Merge"
    if "label_emb" in key or "time_embed" in key:
        return "IN00" if current else "Not Merge"
    if "conditioner.embedders" in key:
        return "BASE"
    if "first_stage_model" in key:
        return "VAE"
    if "model.diffusion_model.out." in key:
        return "OUT08"
    block = re.findall(r"input|mid|output", key)
    name = block[0].upper().replace("PUT", "") if block else ""
    nums = re.sub(r"\D", "", key)[: 1 if name == "MID" else 2]
    if name == "MID":
        return "M00"
    return f"{name}0{nums[0]}" if nums else "Not Merge"


def supermerger_block(key: str, *, sdxl: bool, current: bool) -> str | None:
    """The weight a key takes in SuperMerger: a block name, BASE, or None (kept from A)."""
    if sdxl:
        block = _xl_block(key, current=current)
        if block == "VAE":
            return "BASE"  # the VAE weight is base_alpha unless the VAE is excluded
        return block if block in BLOCKIDXLL else None
    # time_embed: index 0 (IN00) now and before 2023-07, -2 (BLOCKID[-1] = OUT11) in between
    return BLOCKID[_sd_index(key, 0 if current else -2) + 1]


def _merged_keys(arch: Architecture) -> list[str]:
    # SuperMerger's loop merges weight/bias keys; position_ids, EMA and schedule are not
    # compared (both tools keep A's), nor the VAE of SD1, which both give BASE
    layout = checkpoint_layout(arch.name, scale=1 / 40)
    return [k for k in layout if k.endswith((".weight", ".bias")) and arch.block_of(k) is not None]


@pytest.mark.parametrize(
    ("convention", "current"), [("supermerger", True), ("supermerger_2023", False)]
)
@pytest.mark.parametrize("arch", [SD1, SD2, SDXL], ids=lambda a: a.name)
def test_every_key_takes_the_weight_supermerger_gives_it(
    arch: Architecture, convention: str, current: bool
) -> None:
    keys = _merged_keys(arch)
    sdxl = arch is SDXL
    for key in keys:
        if not sdxl and key.startswith("first_stage_model."):
            continue
        expected = supermerger_block(key, sdxl=sdxl, current=current)
        assert arch.block_of(key, convention) == expected, key


@pytest.mark.parametrize(
    ("convention", "sd1", "sdxl"),
    [("supermerger", "IN00", "IN00"), ("supermerger_2023", "OUT11", None)],
)
def test_time_embed_goes_where_supermerger_of_the_period_puts_it(
    convention: str, sd1: str, sdxl: str | None
) -> None:
    unet = "model.diffusion_model."
    assert SD1.block_of(unet + "time_embed.0.weight", convention) == sd1
    assert SD2.block_of(unet + "time_embed.2.bias", convention) == sd1
    assert SDXL.block_of(unet + "time_embed.0.weight", convention) == sdxl
    assert SDXL.block_of(unet + "label_emb.0.0.weight", convention) == sdxl
