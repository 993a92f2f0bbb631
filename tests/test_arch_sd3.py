"""SD3 Medium, SD3.5 Medium (MMDiT-X) and SD3.5 Large: layouts at full size, detection,
blocks, vectors (a 26-value vector reads as SD1's or SD3's by the model), refusals, and a
three-model add difference of small SD3.5 files against the formula."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import mergelang
from mergelang.arch import (
    BASE,
    SD1,
    SD3_MEDIUM,
    SD35_LARGE,
    SD35_MEDIUM,
    checkpoint_layout,
    detect,
    parameter_count,
)
from mergelang.arch.layout import component_layout
from mergelang.block_weights import BlockWeights
from mergelang.errors import RecipeError
from mergelang.io.readers import SafetensorsReader
from mergelang.testing import make_checkpoint

PREFIX = "model.diffusion_model."
SCALE = 1 / 160


def _denoiser(arch_name: str, scale: float = 1.0) -> dict[str, tuple[int, ...]]:
    layout = checkpoint_layout(arch_name, scale=scale)
    return {k.removeprefix(PREFIX): v for k, v in layout.items() if k.startswith(PREFIX)}


@pytest.mark.parametrize(
    ("arch_name", "keys", "billions"),
    [("sd3-medium", 491, 2.1), ("sd35-medium", 665, 2.5), ("sd35-large", 923, 8.1)],
)
def test_full_size_key_and_parameter_counts(arch_name: str, keys: int, billions: float) -> None:
    layout = _denoiser(arch_name)
    assert len(layout) == keys
    assert round(parameter_count(layout) / 1e9, 1) == billions


def test_sd3_medium_counts_and_shapes() -> None:
    layout = _denoiser("sd3-medium")
    assert parameter_count(layout) == 2_084_951_104
    # 491 MMDiT keys and the sampling schedule: 492 keys under model.
    full = checkpoint_layout("sd3-medium", schedule=True)
    assert sum(1 for k in full if k.startswith("model.")) == 492
    assert layout["pos_embed"] == (1, 36864, 1536)
    assert layout["x_embedder.proj.weight"] == (1536, 16, 2, 2)
    assert layout["context_embedder.weight"] == (1536, 4096)
    assert layout["y_embedder.mlp.0.weight"] == (1536, 2048)
    assert layout["joint_blocks.0.x_block.adaLN_modulation.1.weight"] == (9216, 1536)
    assert layout["joint_blocks.23.context_block.adaLN_modulation.1.weight"] == (3072, 1536)
    assert "joint_blocks.23.context_block.attn.proj.weight" not in layout
    assert "joint_blocks.23.context_block.mlp.fc1.weight" not in layout
    assert "joint_blocks.0.x_block.attn.ln_q.weight" not in layout
    assert layout["final_layer.linear.weight"] == (64, 1536)
    counts = {
        c.name: len(component_layout(c)) for c in SD3_MEDIUM.components if c.role != "transformer"
    }
    assert counts == {"vae": 244, "clip_l": 199, "clip_g": 519, "t5xxl": 220}


def test_sd35_shapes() -> None:
    medium = _denoiser("sd35-medium")
    assert medium["pos_embed"] == (1, 147456, 1536)
    assert medium["joint_blocks.12.x_block.attn2.qkv.weight"] == (4608, 1536)
    assert medium["joint_blocks.12.x_block.adaLN_modulation.1.weight"] == (13824, 1536)
    assert "joint_blocks.13.x_block.attn2.qkv.weight" not in medium
    assert medium["joint_blocks.13.x_block.adaLN_modulation.1.weight"] == (9216, 1536)
    assert medium["joint_blocks.0.x_block.attn.ln_k.weight"] == (64,)
    large = _denoiser("sd35-large")
    assert large["x_embedder.proj.weight"] == (2432, 16, 2, 2)
    assert large["joint_blocks.37.context_block.attn.ln_q.weight"] == (64,)
    assert large["joint_blocks.37.context_block.adaLN_modulation.1.weight"] == (4864, 2432)
    assert "joint_blocks.38.x_block.attn.qkv.weight" not in large


@pytest.mark.parametrize("scale", [1.0, SCALE])
@pytest.mark.parametrize("arch_name", ["sd3-medium", "sd35-medium", "sd35-large"])
def test_detection(arch_name: str, scale: float) -> None:
    found = detect(checkpoint_layout(arch_name, scale=scale))
    assert (found.arch.name, found.variant, found.notes) == (arch_name, "normal", ())
    bare = detect(_denoiser(arch_name, scale))
    assert bare.arch.name == arch_name
    assert any("without the model.diffusion_model. prefix" in note for note in bare.notes)


@pytest.mark.parametrize(
    ("arch", "key", "block"),
    [
        (SD3_MEDIUM, "pos_embed", "IN"),
        (SD3_MEDIUM, "x_embedder.proj.weight", "IN"),
        (SD3_MEDIUM, "t_embedder.mlp.0.weight", "IN"),
        (SD3_MEDIUM, "y_embedder.mlp.2.bias", "IN"),
        (SD3_MEDIUM, "context_embedder.weight", "IN"),
        (SD3_MEDIUM, "joint_blocks.0.x_block.attn.qkv.weight", "J00"),
        (SD3_MEDIUM, "joint_blocks.1.context_block.mlp.fc2.bias", "J01"),
        (SD3_MEDIUM, "joint_blocks.23.context_block.attn.qkv.weight", "J23"),
        (SD35_MEDIUM, "joint_blocks.12.x_block.attn2.proj.weight", "J12"),
        (SD35_LARGE, "joint_blocks.37.x_block.mlp.fc1.weight", "J37"),
        (SD35_LARGE, "final_layer.linear.weight", "OUT"),
    ],
)
def test_block_of_transformer_keys(arch: object, key: str, block: str) -> None:
    assert isinstance(arch, type(SD3_MEDIUM))
    assert arch.block_of(PREFIX + key) == block


def test_block_of_the_other_parts() -> None:
    te = "text_encoders."
    assert SD3_MEDIUM.block_of(te + "clip_l.transformer.text_model.final_layer_norm.weight") == (
        "CLIP_L"
    )
    assert SD3_MEDIUM.block_of(te + "clip_g.transformer.text_projection.weight") == "CLIP_G"
    assert SD3_MEDIUM.block_of(te + "t5xxl.transformer.shared.weight") == "T5"
    assert SD3_MEDIUM.block_of("first_stage_model.decoder.conv_in.weight") == "VAE"
    assert SD3_MEDIUM.block_of("model.model_sampling.sigmas") is None
    assert SD3_MEDIUM.block_of("something.else") == BASE


def test_schemes() -> None:
    medium = SD3_MEDIUM.scheme
    assert medium is SD35_MEDIUM.scheme and medium is not SD35_LARGE.scheme
    assert medium.vector_lengths == (26, 27) and SD35_LARGE.scheme.vector_lengths == (40, 41)
    assert medium.blocks[:2] == ("IN", "J00") and medium.blocks[-4:] == (
        "CLIP_L",
        "CLIP_G",
        "T5",
        "VAE",
    )
    assert len(medium.groups["J"]) == 24 and len(SD35_LARGE.scheme.groups["J"]) == 38


def test_a_26_value_vector_reads_by_the_model() -> None:
    values = [round(0.01 * i, 2) for i in range(26)]
    weights = BlockWeights.from_vector(values)
    for_sd1 = weights.resolve(SD1.scheme)
    assert for_sd1.base == 0.0 and for_sd1["IN00"] == 0.01 and for_sd1["OUT11"] == 0.25
    for_sd3 = weights.resolve(SD3_MEDIUM.scheme, base=0.5)
    assert for_sd3["IN"] == 0.0 and for_sd3["J00"] == 0.01 and for_sd3["J23"] == 0.24
    assert for_sd3["OUT"] == 0.25
    assert for_sd3.base == 0.5 and for_sd3["CLIP_G"] == 0.5 and for_sd3["VAE"] == 0.5
    with_base = BlockWeights.from_vector([0.9, *values]).resolve(SD35_MEDIUM.scheme)
    assert with_base.base == 0.9 and with_base["IN"] == 0.0 and with_base["T5"] == 0.9


def test_j38_is_a_located_error() -> None:
    source = (
        'model a = "a.safetensors"\nmodel b = "b.safetensors"\n'
        'save weighted_sum(a, b, alpha={J00..J23: 1, J38: 0}) to "out.safetensors"\n'
    )
    with pytest.raises(RecipeError) as info:
        mergelang.check(mergelang.parse(source))
    (diag,) = info.value.diagnostics
    assert (diag.code, diag.line, diag.column) == ("unknown-block", 3, 45)
    assert diag.hint is not None and "SD3.5 Large: " in diag.hint


def test_j24_on_sd3_medium_reads_as_in_sd35_large(tmp_path: Path) -> None:
    """J24 is a block of SD3.5 Large: a map naming it reads for SD3 Medium models the way a
    map naming IN11 reads for SDXL ones, setting the blocks the model has."""
    weights = BlockWeights.from_map([(("J00", "J24"), 1.0), ("default", 0.0)])
    resolved = weights.resolve(SD3_MEDIUM.scheme)
    assert resolved["J23"] == 1.0 and resolved["IN"] == 0.0 and "J24" not in resolved.values


def test_a_flux_vector_on_sd3_medium_says_what_it_takes(tmp_path: Path) -> None:
    for name, seed in (("a", 1), ("b", 2)):
        make_checkpoint(tmp_path / f"{name}.safetensors", "sd3-medium", scale=SCALE, seed=seed)
    recipe = tmp_path / "r.merge"
    recipe.write_text(
        'model a = "a.safetensors"\nmodel b = "b.safetensors"\n'
        f'save weighted_sum(a, b, alpha={[0.5] * 61}) to "out.safetensors"\n'
    )
    with pytest.raises(RecipeError) as info:
        mergelang.plan(recipe, cache_dir=tmp_path / "cache")
    (diag,) = info.value.diagnostics
    assert (diag.code, diag.line, diag.column) == ("weights-architecture", 3, 31)
    assert diag.hint == "give 26 values (27 with BASE first) for SD3/SD3.5 Medium models"


def test_add_difference_of_three_sd35_files_matches_the_formula(tmp_path: Path) -> None:
    for name, seed in (("a", 1), ("b", 2), ("c", 3)):
        make_checkpoint(tmp_path / f"{name}.safetensors", "sd35-large", scale=SCALE, seed=seed)
    recipe = tmp_path / "r.merge"
    recipe.write_text(
        'model a = "a.safetensors"\nmodel b = "b.safetensors"\nmodel c = "c.safetensors"\n'
        "save add_difference(a, b, c, alpha={J: 0.5, IN: 0.25, OUT: 1, T5: 0, BASE: 0.75}) "
        'to "abc.safetensors" as fp32\n'
    )
    mergelang.run(recipe, cache_dir=tmp_path / "cache")
    alphas = {"IN": 0.25, "OUT": 1.0, "T5": 0.0}
    with (
        SafetensorsReader(tmp_path / "a.safetensors") as a,
        SafetensorsReader(tmp_path / "b.safetensors") as b,
        SafetensorsReader(tmp_path / "c.safetensors") as c,
        SafetensorsReader(tmp_path / "abc.safetensors") as out,
    ):
        assert out.keys() == a.keys() and len(a.keys()) == 2105
        for key in a.keys():  # noqa: SIM118
            block = SD35_LARGE.block_of(key)
            x = a.get(key)
            if block is None:
                assert torch.equal(out.get(key), x.float() if x.is_floating_point() else x), key
                continue
            alpha = 0.5 if block.startswith("J") else alphas.get(block, 0.75)
            y, z = b.get(key).float(), c.get(key).float()
            expected = x.float() + alpha * (y - z)
            assert torch.allclose(out.get(key), expected, rtol=0, atol=1e-6), key
