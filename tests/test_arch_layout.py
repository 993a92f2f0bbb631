from __future__ import annotations

import re

import pytest

from mergelang.arch import SD1, SD2, SDXL, get_architecture
from mergelang.arch.layout import (
    checkpoint_layout,
    component_layout,
    ema_key,
    key_dtype,
    optional_keys,
    parameter_count,
    scaled_width,
)
from mergelang.arch.parts.ldm import SCHEDULE_KEYS

ARCHS = ("sd1", "sd2", "sdxl")


def _by_role(arch_name: str, **options: object) -> dict[str, dict[str, tuple[int, ...]]]:
    arch = get_architecture(arch_name)
    layout = checkpoint_layout(arch_name, **options)  # type: ignore[arg-type]
    roles: dict[str, dict[str, tuple[int, ...]]] = {}
    for key, shape in layout.items():
        roles.setdefault(arch.role(key), {})[key] = shape
    return roles


def _millions(n: int) -> float:
    return round(n / 1e6, 1)


@pytest.mark.parametrize(
    ("arch_name", "keys", "params"),
    [("sd1", 686, 859.5), ("sd2", 686, 865.9), ("sdxl", 1680, 2567.5)],
)
def test_unet_key_and_parameter_counts(arch_name: str, keys: int, params: float) -> None:
    arch = get_architecture(arch_name)
    unet = component_layout(arch.denoiser)
    assert len(unet) == keys
    assert _millions(parameter_count(unet)) == params


def test_vae_is_the_same_248_keys_everywhere() -> None:
    layouts = [component_layout(a.component("vae")) for a in (SD1, SD2, SDXL)]
    assert all(len(v) == 248 for v in layouts)
    assert layouts[0] == layouts[1] == layouts[2]
    assert _millions(parameter_count(layouts[0])) == 83.7


def _hf_clip_params(vocab: int, w: int, layers: int) -> int:
    per_layer = 4 * (w * w + w) + 2 * (2 * w) + (4 * w * w + 4 * w) + (w * 4 * w + w)
    return vocab * w + 77 * w + 77 + layers * per_layer + 2 * w


def _open_clip_params(vocab: int, w: int, layers: int) -> int:
    per_layer = (
        (3 * w * w + 3 * w) + (w * w + w) + 2 * (2 * w) + (4 * w * w + 4 * w) + (4 * w * w + w)
    )
    return vocab * w + 77 * w + w * w + 1 + layers * per_layer + 2 * w


def test_clip_l_matches_the_formula_and_the_reference() -> None:
    (clip,) = SD1.components_with("text_encoder")
    layout = component_layout(clip)
    assert len(layout) == 197
    assert parameter_count(layout) == _hf_clip_params(49408, 768, 12)
    assert _millions(parameter_count(layout)) == 123.1
    assert layout["cond_stage_model.transformer.text_model.embeddings.position_ids"] == (1, 77)


def test_open_clip_h_and_big_g_match_the_formula_and_the_reference() -> None:
    (h,) = SD2.components_with("text_encoder")
    big_g = SDXL.component("clip_g")
    h_layout = component_layout(h)
    g_layout = component_layout(big_g)
    assert len(h_layout) == 24 * 12 + 6 == 294
    assert len(g_layout) == 32 * 12 + 6 == 390
    assert parameter_count(h_layout) == _open_clip_params(49408, 1024, 24)
    assert parameter_count(g_layout) == _open_clip_params(49408, 1280, 32)
    assert _millions(parameter_count(h_layout)) == 354.0
    assert _millions(parameter_count(g_layout)) == 694.7
    assert h_layout["cond_stage_model.model.logit_scale"] == ()
    assert g_layout["conditioner.embedders.1.model.text_projection"] == (1280, 1280)
    assert h_layout["cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"] == (
        3072,
        1024,
    )


@pytest.mark.parametrize(("arch_name", "keys"), [("sd1", 1131), ("sd2", 1228), ("sdxl", 2515)])
def test_file_key_counts(arch_name: str, keys: int) -> None:
    assert len(checkpoint_layout(arch_name)) == keys


def test_sd1_full_file_is_2_13_gb_in_fp16() -> None:
    layout = checkpoint_layout("sd1")
    size = sum(
        parameter_count({k: v}) * (8 if key_dtype(k) == "I64" else 2) for k, v in layout.items()
    )
    assert round(size / 1e9, 2) == 2.13


def test_sdxl_roles_and_text_encoders() -> None:
    roles = _by_role("sdxl")
    assert {r: len(v) for r, v in roles.items()} == {"unet": 1680, "vae": 248, "text_encoder": 587}
    clip_l = [k for k in roles["text_encoder"] if k.startswith("conditioner.embedders.0.")]
    assert len(clip_l) == 197


@pytest.mark.parametrize("arch_name", ARCHS)
@pytest.mark.parametrize("scale", [1 / 40, 1 / 80, 0.1, 0.37])
def test_scaling_keeps_every_name_and_rank(arch_name: str, scale: float) -> None:
    full = checkpoint_layout(arch_name)
    small = checkpoint_layout(arch_name, scale=scale)
    assert list(small) == list(full)
    for key, shape in small.items():
        assert len(shape) == len(full[key]), key
        assert all(d >= 1 for d in shape), key
    assert parameter_count(small) < parameter_count(full)


def test_scaled_widths_are_multiples_of_8() -> None:
    assert scaled_width(320, 1.0) == 320
    assert scaled_width(2816, 1.0) == 2816
    assert scaled_width(320, 1 / 40) == 8
    assert scaled_width(320, 1 / 1000) == 8
    assert scaled_width(768, 0.1) == 80  # 76.8 -> 80
    assert scaled_width(1280, 0.3) == 384
    with pytest.raises(ValueError, match="positive"):
        scaled_width(320, 0)


def test_scaled_unet_shapes_follow_the_construction() -> None:
    layout = checkpoint_layout("sd1", scale=1 / 40)
    p = "model.diffusion_model."
    mc = 8
    assert layout[p + "input_blocks.0.0.weight"] == (mc, 4, 3, 3)
    assert layout[p + "time_embed.0.weight"] == (4 * mc, mc)
    assert layout[p + "input_blocks.4.0.skip_connection.weight"] == (2 * mc, mc, 1, 1)
    assert layout[p + "input_blocks.1.1.proj_in.weight"] == (mc, mc, 1, 1)
    ctx = scaled_width(768, 1 / 40)
    assert layout[p + "input_blocks.7.1.transformer_blocks.0.attn2.to_k.weight"] == (4 * mc, ctx)
    # output_blocks.0 concatenates the 4mc skip from input_blocks.11 onto 4mc channels
    assert layout[p + "output_blocks.0.0.in_layers.2.weight"] == (4 * mc, 8 * mc, 3, 3)
    # the last output block gets mc (from output_blocks.10) + mc (input_blocks.0 skip)
    assert layout[p + "output_blocks.11.0.in_layers.0.weight"] == (2 * mc,)
    assert layout[p + "out.2.weight"] == (4, mc, 3, 3)


def test_full_size_shapes_are_the_published_ones() -> None:
    sd1 = checkpoint_layout("sd1")
    sd2 = checkpoint_layout("sd2")
    sdxl = checkpoint_layout("sdxl")
    p = "model.diffusion_model."
    assert sd1[p + "input_blocks.1.1.proj_in.weight"] == (320, 320, 1, 1)
    assert sd2[p + "input_blocks.1.1.proj_in.weight"] == (320, 320)
    assert sd1[p + "input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight"] == (320, 768)
    assert sd2[p + "input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight"] == (320, 1024)
    assert sdxl[p + "label_emb.0.0.weight"] == (1280, 2816)
    assert sdxl[p + "input_blocks.7.1.transformer_blocks.9.ff.net.0.proj.weight"] == (10240, 1280)
    assert sdxl[p + "output_blocks.2.2.conv.weight"] == (1280, 1280, 3, 3)
    assert sdxl[p + "output_blocks.5.2.conv.weight"] == (640, 640, 3, 3)
    assert sd1[p + "output_blocks.2.1.conv.weight"] == (1280, 1280, 3, 3)
    assert sd1["first_stage_model.decoder.up.1.block.0.nin_shortcut.weight"] == (256, 512, 1, 1)
    assert sd1["first_stage_model.encoder.conv_out.weight"] == (8, 512, 3, 3)
    assert sd1["first_stage_model.quant_conv.weight"] == (8, 8, 1, 1)


@pytest.mark.parametrize(
    ("variant", "channels"), [("normal", 4), ("inpainting", 9), ("pix2pix", 8)]
)
@pytest.mark.parametrize("arch_name", ARCHS)
def test_variants_change_only_the_input_conv(arch_name: str, variant: str, channels: int) -> None:
    normal = checkpoint_layout(arch_name, scale=1 / 40)
    layout = checkpoint_layout(arch_name, scale=1 / 40, variant=variant)
    key = "model.diffusion_model.input_blocks.0.0.weight"
    assert layout[key] == (8, channels, 3, 3)
    assert {k: v for k, v in layout.items() if k != key} == {
        k: v for k, v in normal.items() if k != key
    }


def test_unknown_variant_is_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown variant 'outpaint' \(valid: normal, inpainting"):
        checkpoint_layout("sd1", variant="outpaint")


def test_ema_copy_has_dotless_names_and_two_counters() -> None:
    plain = checkpoint_layout("sd1", scale=1 / 40)
    layout = checkpoint_layout("sd1", scale=1 / 40, ema=True)
    ema = {k: v for k, v in layout.items() if k.startswith("model_ema.")}
    assert len(ema) == 686 + 2
    assert ema["model_ema.decay"] == ()
    assert ema["model_ema.num_updates"] == ()
    assert ema["model_ema.diffusion_modelinput_blocks00weight"] == (8, 4, 3, 3)
    assert ema_key("model.diffusion_model.output_blocks.11.1.proj_out.bias") == (
        "model_ema.diffusion_modeloutput_blocks111proj_outbias"
    )
    for key, shape in plain.items():
        if key.startswith("model.diffusion_model."):
            assert ema[ema_key(key)] == shape
    assert len(layout) == 1131 + 688


def test_schedule_adds_the_12_ddpm_buffers_first() -> None:
    layout = checkpoint_layout("sd2", scale=1 / 40, schedule=True)
    assert list(layout)[:12] == list(SCHEDULE_KEYS)
    assert all(layout[k] == (1000,) for k in SCHEDULE_KEYS)
    assert len(layout) == 1228 + 12


@pytest.mark.parametrize(("arch_name", "dropped"), [("sd1", 1), ("sd2", 16), ("sdxl", 35)])
def test_omit_optional(arch_name: str, dropped: int) -> None:
    full = checkpoint_layout(arch_name, scale=1 / 40)
    lean = checkpoint_layout(arch_name, scale=1 / 40, omit_optional=True)
    assert len(full) - len(lean) == dropped
    assert set(full) - set(lean) == optional_keys(arch_name)


def test_sdxl_optional_keys_are_the_documented_ones() -> None:
    optional = optional_keys("sdxl")
    clip_l = "conditioner.embedders.0.transformer.text_model."
    big_g = "conditioner.embedders.1.model."
    assert clip_l + "final_layer_norm.weight" in optional
    assert clip_l + "embeddings.position_ids" in optional
    assert sum(1 for k in optional if k.startswith(clip_l + "encoder.layers.11.")) == 16
    assert not any(k.startswith(clip_l + "encoder.layers.10.") for k in optional)
    assert sum(1 for k in optional if k.startswith(big_g + "transformer.resblocks.31.")) == 12
    for name in ("ln_final.weight", "ln_final.bias", "text_projection", "logit_scale"):
        assert big_g + name in optional


def test_key_dtype() -> None:
    assert key_dtype("cond_stage_model.transformer.text_model.embeddings.position_ids") == "I64"
    assert key_dtype("model_ema.num_updates") == "I32"
    assert key_dtype("model_ema.decay", "F32") == "F32"
    assert key_dtype("model.diffusion_model.out.2.weight", "BF16") == "BF16"


def test_layout_order_is_deterministic_and_unet_first() -> None:
    a = list(checkpoint_layout("sdxl", scale=0.05))
    b = list(checkpoint_layout("sdxl", scale=0.05))
    assert a == b
    assert a[0] == "model.diffusion_model.time_embed.0.weight"
    assert re.match(r"first_stage_model\.", a[1680])
