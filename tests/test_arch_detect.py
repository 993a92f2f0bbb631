from __future__ import annotations

from pathlib import Path

import pytest

from mergelang.arch import SD1, SD2, SDXL, detect
from mergelang.arch.layout import checkpoint_layout
from mergelang.errors import CheckpointError
from mergelang.io.safetensors_header import read_safetensors_header
from mergelang.testing import make_checkpoint

ARCHS = ("sd1", "sd2", "sdxl")
VARIANTS = ("normal", "inpainting", "pix2pix")
UNET = "model.diffusion_model."


@pytest.mark.parametrize("arch_name", ARCHS)
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("scale", [1 / 80, 1 / 40, 0.1, 1.0])
def test_every_variant_at_every_scale(arch_name: str, variant: str, scale: float) -> None:
    found = detect(checkpoint_layout(arch_name, scale=scale, variant=variant))
    assert found.arch.name == arch_name
    assert found.variant == variant
    assert found.in_channels == {"normal": 4, "inpainting": 9, "pix2pix": 8}[variant]
    assert found.notes == ()


@pytest.mark.parametrize("arch_name", ARCHS)
def test_ema_schedule_and_omitted_optional_keys(arch_name: str) -> None:
    layout = checkpoint_layout(arch_name, scale=1 / 40, ema=True, schedule=True, omit_optional=True)
    found = detect(layout)
    assert found.arch.name == arch_name
    assert (
        "EMA copy of the U-Net (model_ema.*): "
        + str(1680 + 2 if arch_name == "sdxl" else 688)
        + " keys"
        in found.notes
    )
    assert "DDPM schedule buffers: 12 keys" in found.notes
    dropped = {"sd1": 1, "sd2": 16, "sdxl": 35}[arch_name]
    assert f"{dropped} optional text-encoder keys left out" in found.notes


@pytest.mark.parametrize("arch_name", ARCHS)
@pytest.mark.parametrize("bare", [False, True])
def test_unet_only_files(arch_name: str, bare: bool) -> None:
    layout = checkpoint_layout(arch_name, scale=1 / 40)
    unet = {(k[len(UNET) :] if bare else k): v for k, v in layout.items() if k.startswith(UNET)}
    found = detect(unet)
    assert found.arch.name == arch_name
    assert any(n.startswith("no VAE and no text encoder") for n in found.notes), found.notes
    assert ("U-Net keys saved without the model.diffusion_model. prefix" in found.notes) == bare


def test_sd1_and_sd2_unets_differ_only_in_projection_rank() -> None:
    sd1 = {k: v for k, v in checkpoint_layout("sd1", scale=1 / 40).items() if k.startswith(UNET)}
    sd2 = {k: v for k, v in checkpoint_layout("sd2", scale=1 / 40).items() if k.startswith(UNET)}
    assert set(sd1) == set(sd2)
    differing = [k for k in sd1 if len(sd1[k]) != len(sd2[k])]
    assert differing and all(".proj_in." in k or ".proj_out." in k for k in differing)
    assert detect(sd1).arch is SD1
    assert detect(sd2).arch is SD2


def test_a_file_without_vae_is_still_detected() -> None:
    layout = {
        k: v
        for k, v in checkpoint_layout("sdxl", scale=1 / 40).items()
        if not k.startswith("first_stage_model.")
    }
    found = detect(layout)
    assert found.arch is SDXL
    assert "no VAE in this file" in found.notes


def test_old_sd1_text_encoder_names() -> None:
    old = {
        k.replace("cond_stage_model.transformer.text_model.", "cond_stage_model.transformer."): v
        for k, v in checkpoint_layout("sd1", scale=1 / 40).items()
    }
    found = detect(old)
    assert found.arch is SD1
    assert "197 keys in an older naming (read as the current names)" in found.notes


def test_markers_are_noted_and_not_counted() -> None:
    layout = dict(checkpoint_layout("sdxl", scale=1 / 40))
    layout["v_pred"] = ()
    layout["ztsnr"] = ()
    found = detect(layout)
    assert found.arch is SDXL
    assert "prediction markers: v_pred, ztsnr" in found.notes


def test_a_few_missing_and_extra_keys_are_tolerated_and_noted() -> None:
    layout = dict(checkpoint_layout("sd1", scale=1 / 40))
    del layout[UNET + "input_blocks.1.1.norm.bias"]
    layout["lora_extra.weight"] = (4, 4)
    found = detect(layout)
    assert found.arch is SD1
    assert f"1 keys missing, e.g. {UNET}input_blocks.1.1.norm.bias" in found.notes
    assert "1 keys unknown to sd1, e.g. lora_extra.weight" in found.notes


def test_unknown_layout_names_the_closest_architecture_and_differing_keys() -> None:
    layout = {f"model.diffusion_model.blocks.{i}.attn.qkv.weight": (8, 8) for i in range(7)}
    layout.update(
        {k: v for k, v in checkpoint_layout("sdxl", scale=1 / 40).items() if "first_stage" in k}
    )
    with pytest.raises(CheckpointError) as info:
        detect(layout, path="dit.safetensors")
    exc = info.value
    assert exc.path == "dit.safetensors"
    diag = exc.diagnostics[0]
    assert diag.code == "unknown-architecture"
    assert diag.message.startswith(
        "unknown checkpoint layout; the closest known architecture is sd3-medium (Stable "
        "Diffusion 3 Medium), but only 0 of its 491 MMDiT keys match; 491 keys missing, e.g. "
        "model.diffusion_model.pos_embed, model.diffusion_model.x_embedder.proj.weight,"
    )
    assert (
        "11 keys unexpected, e.g. model.diffusion_model.blocks.0.attn.qkv.weight, "
        "model.diffusion_model.blocks.1.attn.qkv.weight, "
        "model.diffusion_model.blocks.2.attn.qkv.weight, "
        "model.diffusion_model.blocks.3.attn.qkv.weight, "
        "model.diffusion_model.blocks.4.attn.qkv.weight, ..." in diag.message
    )
    assert diag.hint == (
        "mergelang knows sd1 (Stable Diffusion 1.x), sd2 (Stable Diffusion 2.x), "
        "sdxl (Stable Diffusion XL), flux-dev (Flux.1 dev), flux-schnell (Flux.1 schnell), "
        "sd3-medium (Stable Diffusion 3 Medium), sd35-medium (Stable Diffusion 3.5 Medium), "
        "sd35-large (Stable Diffusion 3.5 Large)"
    )


def test_too_many_foreign_keys_is_unknown() -> None:
    layout = dict(checkpoint_layout("sd1", scale=1 / 40))
    for i in range(300):
        layout[f"adapter.layers.{i}.weight"] = (8, 8)
    with pytest.raises(CheckpointError, match="300 of the file's 1431 keys are foreign to it"):
        detect(layout)


def test_the_closest_architecture_is_named_when_foreign_keys_dominate() -> None:
    # an SDXL file carrying a ControlNet copy of its encoder: too much to ignore
    layout = dict(checkpoint_layout("sdxl", scale=1 / 40))
    control = {
        "control_model." + k[len(UNET) :]: v
        for k, v in layout.items()
        if k.startswith((UNET + "input_blocks.", UNET + "middle_block."))
    }
    layout.update(control)
    with pytest.raises(CheckpointError) as info:
        detect(layout)
    message = info.value.diagnostics[0].message
    assert message.startswith(
        "unknown checkpoint layout; the closest known architecture is sdxl (Stable Diffusion XL), "
        f"but {len(control)} of the file's {len(layout)} keys are foreign to it; "
        f"{len(control)} keys unexpected, e.g. control_model.input_blocks.0.0.weight, "
    )


def test_empty_and_model_less_files() -> None:
    with pytest.raises(CheckpointError, match="the file holds no tensors") as info:
        detect({}, path="empty.safetensors")
    assert info.value.diagnostics[0].code == "unknown-architecture"
    with pytest.raises(CheckpointError, match="no model weights"):
        detect({"betas": (1000,), "model_ema.decay": ()})


def test_detection_from_real_fixture_headers(tmp_path: Path) -> None:
    for arch_name, variant in (("sd1", "inpainting"), ("sd2", "normal"), ("sdxl", "pix2pix")):
        path = make_checkpoint(tmp_path / f"{arch_name}.safetensors", arch_name, variant=variant)
        found = detect(read_safetensors_header(path).shapes(), path=str(path))
        assert (found.arch.name, found.variant) == (arch_name, variant)


def test_unusual_input_channels_are_noted() -> None:
    layout = dict(checkpoint_layout("sd1", scale=1 / 40))
    layout[UNET + "input_blocks.0.0.weight"] = (8, 5, 3, 3)
    found = detect(layout)
    assert found.variant == "normal"
    assert found.in_channels == 5
    assert "unusual U-Net input channels: 5" in found.notes


def test_shapes_may_be_any_int_sequences() -> None:
    layout = {k: list(v) for k, v in checkpoint_layout("sd2", scale=1 / 40).items()}
    assert detect(layout).arch is SD2
