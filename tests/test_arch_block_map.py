"""Every key of every architecture maps to the documented block, under every convention.

The expectations are written here from the reference's block contents (which modules each
block holds, and how many keys each module has), not from the layout generator.
"""

from __future__ import annotations

import re
from collections import Counter

import pytest

from mergelang.arch import BASE, SD1, SD2, SDXL, Architecture, get_architecture, sd1, sd2, sdxl
from mergelang.arch.conventions import CONVENTION_NAMES, get_convention
from mergelang.arch.layout import checkpoint_layout
from mergelang.arch.sd1 import SD_BLOCKS
from mergelang.arch.sdxl import SDXL_BLOCKS

# keys per module, from the parameter names in the reference
CONV = 2  # weight + bias
RES = 10  # in_layers.0 (2), in_layers.2 (2), emb_layers.1 (2), out_layers.0 (2), out_layers.3 (2)
RES_SKIP = RES + 2  # + skip_connection


def st(depth: int) -> int:
    # norm, proj_in, proj_out (2 each) + per transformer block: to_q/k/v x2 (6, no bias),
    # 2 x to_out.0 (4), ff.net.0.proj + ff.net.2 (4), norm1-3 (6)
    return 6 + 20 * depth


SD_CONTENTS = {
    "IN00": CONV,
    "IN01": RES + st(1),
    "IN02": RES + st(1),
    "IN03": CONV,  # Downsample op
    "IN04": RES_SKIP + st(1),  # C1 -> C2
    "IN05": RES + st(1),
    "IN06": CONV,
    "IN07": RES_SKIP + st(1),
    "IN08": RES + st(1),
    "IN09": CONV,
    "IN10": RES,
    "IN11": RES,
    "M00": RES + st(1) + RES,
    "OUT00": RES_SKIP,
    "OUT01": RES_SKIP,
    "OUT02": RES_SKIP + CONV,  # + Upsample conv
    "OUT03": RES_SKIP + st(1),
    "OUT04": RES_SKIP + st(1),
    "OUT05": RES_SKIP + st(1) + CONV,
    "OUT06": RES_SKIP + st(1),
    "OUT07": RES_SKIP + st(1),
    "OUT08": RES_SKIP + st(1) + CONV,
    "OUT09": RES_SKIP + st(1),
    "OUT10": RES_SKIP + st(1),
    "OUT11": RES_SKIP + st(1),
}

SDXL_CONTENTS = {
    "IN00": CONV,
    "IN01": RES,
    "IN02": RES,
    "IN03": CONV,
    "IN04": RES_SKIP + st(2),
    "IN05": RES + st(2),
    "IN06": CONV,
    "IN07": RES_SKIP + st(10),
    "IN08": RES + st(10),
    "M00": RES + st(10) + RES,
    "OUT00": RES_SKIP + st(10),
    "OUT01": RES_SKIP + st(10),
    "OUT02": RES_SKIP + st(10) + CONV,
    "OUT03": RES_SKIP + st(2),
    "OUT04": RES_SKIP + st(2),
    "OUT05": RES_SKIP + st(2) + CONV,
    "OUT06": RES_SKIP,
    "OUT07": RES_SKIP,
    "OUT08": RES_SKIP,
}

TIME_EMBED_KEYS = 4  # time_embed.0 and .2, weight + bias
LABEL_EMB_KEYS = 4
OUT_KEYS = 4  # out.0 (GroupNorm) and out.2 (conv)

# where each convention puts time_embed / label_emb / the VAE ("LAST" = the last OUT block)
CONVENTION_TABLE: dict[str, tuple[str | None, str | None, str | None]] = {
    "mbw": ("IN00", "IN00", BASE),
    "kohya": ("IN00", "IN00", BASE),
    "supermerger": ("IN00", "IN00", BASE),
    "supermerger_2023": ("LAST", None, BASE),
    "sd_mecha": (BASE, BASE, BASE),
}
SDXL_TABLE: dict[str, tuple[str | None, str | None, str | None]] = {
    "supermerger_2023": (None, None, BASE),
    "sd_mecha": (BASE, BASE, None),
}


def expected_block(arch: Architecture, key: str, convention: str) -> str | None:
    """An independent statement of the mapping, with regular expressions over the full key."""
    time_embed, label_emb, vae = CONVENTION_TABLE[convention]
    if arch.blocks == SDXL_BLOCKS:
        time_embed, label_emb, vae = SDXL_TABLE.get(convention, (time_embed, label_emb, vae))
    last_out = "OUT11" if arch.blocks == SD_BLOCKS else "OUT08"
    if time_embed == "LAST":
        time_embed = last_out
    if key.endswith(".position_ids"):
        return None
    m = re.fullmatch(r"model\.diffusion_model\.(input|output)_blocks\.(\d+)\..+", key)
    if m:
        return ("IN" if m[1] == "input" else "OUT") + f"{int(m[2]):02d}"
    if re.fullmatch(r"model\.diffusion_model\.middle_block\..+", key):
        return "M00"
    if re.fullmatch(r"model\.diffusion_model\.out\.\d\.(weight|bias)", key):
        return last_out
    if re.fullmatch(r"model\.diffusion_model\.time_embed\..+", key):
        return time_embed
    if re.fullmatch(r"model\.diffusion_model\.label_emb\..+", key):
        return label_emb
    if key.startswith("first_stage_model."):
        return vae
    if key.startswith(("cond_stage_model.", "conditioner.")):
        return BASE
    if key.startswith("model_ema.") or "." not in key:  # EMA copy, DDPM schedule buffers
        return None
    raise AssertionError(f"no expectation for {key}")


@pytest.mark.parametrize("convention", CONVENTION_NAMES)
@pytest.mark.parametrize("arch", [SD1, SD2, SDXL], ids=lambda a: a.name)
def test_every_key_maps_to_its_documented_block(arch: Architecture, convention: str) -> None:
    layout = checkpoint_layout(arch.name, scale=1 / 40, ema=True, schedule=True)
    for key in layout:
        assert arch.block_of(key, convention) == expected_block(arch, key, convention), key


@pytest.mark.parametrize(
    ("arch", "contents"),
    [(SD1, SD_CONTENTS), (SD2, SD_CONTENTS), (SDXL, SDXL_CONTENTS)],
    ids=["sd1", "sd2", "sdxl"],
)
def test_keys_per_block_match_the_block_contents(
    arch: Architecture, contents: dict[str, int]
) -> None:
    layout = checkpoint_layout(arch.name)
    unet = [k for k in layout if k.startswith("model.diffusion_model.")]
    counts = Counter(arch.block_of(k, "mbw") for k in unet)
    expected = Counter(contents)
    expected["IN00"] += TIME_EMBED_KEYS
    if arch is SDXL:
        expected["IN00"] += LABEL_EMB_KEYS
    expected[arch.blocks[-1]] += OUT_KEYS
    assert counts == expected
    assert sum(counts.values()) == (1680 if arch is SDXL else 686)
    assert tuple(contents) == arch.blocks


def test_supermerger_2023_leaves_sdxl_time_embed_out_of_in00() -> None:
    layout = checkpoint_layout("sdxl")
    unet = [k for k in layout if k.startswith("model.diffusion_model.")]
    counts = Counter(SDXL.block_of(k, "supermerger_2023") for k in unet)
    assert counts["IN00"] == CONV
    assert counts[None] == TIME_EMBED_KEYS + LABEL_EMB_KEYS


def test_input_blocks_1_never_catches_10_or_11() -> None:
    p = "model.diffusion_model."
    assert SD1.block_of(p + "input_blocks.1.0.in_layers.0.weight") == "IN01"
    assert SD1.block_of(p + "input_blocks.10.0.in_layers.0.weight") == "IN10"
    assert SD1.block_of(p + "input_blocks.11.0.out_layers.3.bias") == "IN11"
    assert SD1.block_of(p + "output_blocks.1.0.skip_connection.weight") == "OUT01"
    assert SD1.block_of(p + "output_blocks.10.1.proj_out.weight") == "OUT10"
    in01 = [k for k in checkpoint_layout("sd1") if SD1.block_of(k) == "IN01"]
    assert len(in01) == RES + st(1)
    assert all(k.startswith(p + "input_blocks.1.") for k in in01)


def test_out_goes_to_the_last_out_block() -> None:
    assert SD1.block_of("model.diffusion_model.out.2.weight") == "OUT11"
    assert SD2.block_of("model.diffusion_model.out.0.bias") == "OUT11"
    assert SDXL.block_of("model.diffusion_model.out.2.weight") == "OUT08"
    # an output_blocks name is not "out."
    assert SDXL.block_of("model.diffusion_model.output_blocks.0.0.emb_layers.1.weight") == "OUT00"


@pytest.mark.parametrize("convention", CONVENTION_NAMES)
def test_never_merged_keys(convention: str) -> None:
    for key in (
        "cond_stage_model.transformer.text_model.embeddings.position_ids",
        "model_ema.decay",
        "model_ema.diffusion_modelinput_blocks00weight",
        "betas",
        "posterior_mean_coef2",
        "v_pred",
        "ztsnr",
        "edm_vpred.sigma_min",
        "denoiser.sigmas",
    ):
        assert SD1.block_of(key, convention) is None, key
        assert SDXL.block_of(key, convention) is None, key


def test_text_encoders_and_unknown_keys_go_to_base() -> None:
    assert SD1.block_of("cond_stage_model.transformer.text_model.final_layer_norm.weight") == BASE
    assert SD1.block_of("cond_stage_model.transformer.encoder.layers.0.mlp.fc1.weight") == BASE
    assert SDXL.block_of("conditioner.embedders.1.model.logit_scale") == BASE
    assert SD1.block_of("some_extra.weight") == BASE
    # a U-Net key outside the numbered blocks of this architecture
    assert SDXL.block_of("model.diffusion_model.input_blocks.11.0.op.weight") == BASE


def test_bare_unet_keys_map_like_prefixed_ones() -> None:
    assert SD1.block_of("input_blocks.4.1.proj_in.weight") == "IN04"
    assert SD1.block_of("out.0.weight") == "OUT11"
    assert SDXL.block_of("label_emb.0.2.bias", "sd_mecha") == BASE
    assert SD1.role("middle_block.1.norm.weight") == "unet"


def test_convention_objects_and_names_are_both_accepted() -> None:
    key = "model.diffusion_model.time_embed.0.weight"
    assert SD1.block_of(key, get_convention("sd_mecha")) == BASE
    assert SD1.block_of(key) == "IN00"  # the default is mbw


def test_unknown_convention_lists_the_valid_names() -> None:
    with pytest.raises(ValueError, match=r"unknown block convention 'comfy' \(valid: mbw, kohya"):
        SD1.block_of("model.diffusion_model.out.0.weight", "comfy")


def test_roles() -> None:
    assert SD1.role("model.diffusion_model.input_blocks.0.0.weight") == "unet"
    assert SD1.role("cond_stage_model.transformer.text_model.embeddings.position_ids") == (
        "text_encoder"
    )
    assert SD2.role("cond_stage_model.model.ln_final.weight") == "text_encoder"
    assert SDXL.role("conditioner.embedders.0.transformer.text_model.final_layer_norm.bias") == (
        "text_encoder"
    )
    assert SD1.role("first_stage_model.decoder.conv_in.weight") == "vae"
    assert SD1.role("model_ema.num_updates") == "ema"
    assert SD1.role("alphas_cumprod_prev") == "schedule"
    assert SDXL.role("v_pred") == "marker"
    assert SDXL.role("edm_vpred.sigma_max") == "marker"
    assert SD1.role("lora_unet_down.weight") == "other"
    # SD1's text-encoder prefix is not SDXL's
    assert SDXL.role("cond_stage_model.transformer.text_model.final_layer_norm.bias") == "other"


def test_architecture_lookup() -> None:
    assert get_architecture("sdxl") is SDXL
    assert SDXL.blocks == SDXL_BLOCKS and SD2.blocks == SD_BLOCKS
    assert SD1.scheme.vector_lengths == (25, 26) and SDXL.scheme.vector_lengths == (19, 20)
    with_base = SD1.scheme.vector_form(26)
    assert with_base is not None and with_base.names == (BASE, *SD_BLOCKS)
    assert SD1.scheme is SD2.scheme and SDXL.scheme is not SD1.scheme
    with pytest.raises(
        ValueError, match=r"unknown architecture 'sd4' \(known: sd1, sd2, sdxl, flux-dev, "
    ):
        get_architecture("sd4")


def test_components_and_their_prefixes() -> None:
    assert [(c.name, c.role, c.prefix) for c in SD1.components] == [
        ("unet", "unet", "model.diffusion_model."),
        ("vae", "vae", "first_stage_model."),
        ("clip_l", "text_encoder", "cond_stage_model.transformer.text_model."),
    ]
    assert SD1.claims == (("cond_stage_model.", "text_encoder"),)
    assert SD1.ema_prefix == "model_ema."
    assert [c.prefix for c in SDXL.components_with("text_encoder")] == [
        "conditioner.embedders.0.transformer.text_model.",
        "conditioner.embedders.1.model.",
    ]
    assert SDXL.claims == (("conditioner.", "text_encoder"),)
    assert SDXL.denoiser.spec == sdxl.UNET and sdxl.UNET.adm_in_channels == 2816
    assert sd2.UNET.linear_proj and not sd1.UNET.linear_proj


def _sd_mecha_sd1_block(key: str) -> str:
    """sd-mecha 1.1.8's ``convert_sd1_blocks_to_ldm.map_keys``, restated: every key outside
    ``model.diffusion_model.`` (text encoder and VAE) reads BASE; inside it, time_embed reads
    BASE, ``.out.`` and anything unmatched OUT11, the numbered blocks their own block."""
    if not key.startswith("model.diffusion_model."):
        return "BASE"
    if ".time_embed" in key:
        return "BASE"
    if ".out." in key:
        return "OUT11"
    if m := re.search(r"\.input_blocks\.(\d+)\.", key):
        return f"IN{int(m[1]):02}"
    if re.search(r"\.middle_block\.(\d+)\.", key):
        return "M00"
    if m := re.search(r"\.output_blocks\.(\d+)\.", key):
        return f"OUT{int(m[1]):02}"
    return "OUT11"


def test_sd_mecha_convention_follows_sd_mechas_sd1_block_conversion() -> None:
    shapes = checkpoint_layout("sd1", scale=1 / 40)
    keys = [k for k in shapes if not k.endswith("position_ids")]
    convention = get_convention("sd_mecha")
    mismatched = [k for k in keys if SD1.block_of(k, convention) != _sd_mecha_sd1_block(k)]
    assert mismatched == []
    vae = [k for k in keys if k.startswith("first_stage_model.")]
    assert len(vae) == 248
    assert {SD1.block_of(k, convention) for k in vae} == {BASE}
