"""Flux.1 dev, schnell, Fill and Depth: layouts at full size, detection, blocks, recipes,
the refusals, and a per-block merge of two small files against the formula."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import mergelang
from mergelang.arch import (
    BASE,
    FLUX_BLOCKS,
    FLUX_DEV,
    FLUX_SCHNELL,
    align,
    checkpoint_layout,
    detect,
    parameter_count,
)
from mergelang.arch.layout import component_layout
from mergelang.block_weights import BlockWeights, WeightsError
from mergelang.errors import CheckpointError, MergelangError, RecipeError
from mergelang.io.readers import SafetensorsReader
from mergelang.testing import make_checkpoint

PREFIX = "model.diffusion_model."
SCALE = 1 / 160
DOUBLE = tuple(f"D{i:02d}" for i in range(19))
SINGLE = tuple(f"S{i:02d}" for i in range(38))


def _layouts(arch_name: str) -> dict[str, dict[str, tuple[int, ...]]]:
    arch = FLUX_DEV if arch_name == "flux-dev" else FLUX_SCHNELL
    return {
        c.name: {k.removeprefix(c.prefix): v for k, v in component_layout(c).items()}
        for c in arch.components
    }


def test_full_size_key_and_parameter_counts() -> None:
    dev, schnell = _layouts("flux-dev"), _layouts("flux-schnell")
    assert len(dev["transformer"]) == 780
    assert round(parameter_count(dev["transformer"]) / 1e9, 1) == 11.9
    assert parameter_count(dev["transformer"]) == 11_901_408_320
    assert len(schnell["transformer"]) == 776
    assert set(dev["transformer"]) - set(schnell["transformer"]) == {
        f"guidance_in.{layer}.{kind}"
        for layer in ("in_layer", "out_layer")
        for kind in ("weight", "bias")
    }
    assert len(dev["vae"]) == 244 and parameter_count(dev["vae"]) == 83_819_683
    assert len(dev["clip_l"]) == 197  # 196 and the optional position_ids
    assert len(dev["t5xxl"]) == 219 and round(parameter_count(dev["t5xxl"]) / 1e9, 2) == 4.76
    assert len(checkpoint_layout("flux-dev")) == 1440
    assert len(checkpoint_layout("flux-dev", bare=True)) == 780


def test_full_size_shapes_are_the_published_ones() -> None:
    layout = checkpoint_layout("flux-dev")
    assert layout[PREFIX + "img_in.weight"] == (3072, 64)
    assert layout[PREFIX + "txt_in.weight"] == (3072, 4096)
    assert layout[PREFIX + "vector_in.in_layer.weight"] == (3072, 768)
    assert layout[PREFIX + "double_blocks.0.img_attn.qkv.weight"] == (9216, 3072)
    assert layout[PREFIX + "double_blocks.18.txt_mod.lin.weight"] == (18432, 3072)
    assert layout[PREFIX + "double_blocks.0.img_attn.norm.key_norm.scale"] == (128,)
    assert layout[PREFIX + "single_blocks.37.linear1.weight"] == (21504, 3072)
    assert layout[PREFIX + "single_blocks.0.linear2.weight"] == (3072, 15360)
    assert layout[PREFIX + "final_layer.adaLN_modulation.1.weight"] == (6144, 3072)
    assert layout[PREFIX + "final_layer.linear.weight"] == (64, 3072)
    assert layout["vae.decoder.conv_in.weight"] == (512, 16, 3, 3)
    assert layout["vae.encoder.conv_out.weight"] == (32, 512, 3, 3)
    assert "vae.quant_conv.weight" not in layout
    t5 = "text_encoders.t5xxl.transformer."
    assert layout[t5 + "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"] == (
        32,
        64,
    )
    assert layout[t5 + "encoder.block.23.layer.1.DenseReluDense.wi_0.weight"] == (10240, 4096)
    assert layout[t5 + "shared.weight"] == (32128, 4096)
    clip = "text_encoders.clip_l.transformer.text_model."
    assert layout[clip + "encoder.layers.11.mlp.fc1.weight"] == (3072, 768)
    assert checkpoint_layout("flux-dev", variant="fill")[PREFIX + "img_in.weight"] == (3072, 384)
    assert checkpoint_layout("flux-dev", variant="depth")[PREFIX + "img_in.weight"] == (3072, 128)


@pytest.mark.parametrize("scale", [1.0, SCALE])
@pytest.mark.parametrize(
    ("arch_name", "variant"),
    [
        ("flux-dev", "normal"),
        ("flux-dev", "fill"),
        ("flux-dev", "depth"),
        ("flux-schnell", "normal"),
    ],
)
def test_detection_of_every_variant(arch_name: str, variant: str, scale: float) -> None:
    found = detect(checkpoint_layout(arch_name, scale=scale, variant=variant))
    assert (found.arch.name, found.variant, found.notes) == (arch_name, variant, ())


@pytest.mark.parametrize("arch_name", ["flux-dev", "flux-schnell"])
def test_detection_of_diffusion_only_files_with_bare_names(arch_name: str) -> None:
    found = detect(checkpoint_layout(arch_name, scale=SCALE, bare=True))
    assert found.arch.name == arch_name
    assert "Flux transformer keys saved without the model.diffusion_model. prefix" in found.notes
    assert "no VAE and no text encoder CLIP ViT-L/14 and no text encoder T5-XXL in this file" in (
        found.notes
    )


def test_unusual_input_channels_are_noted() -> None:
    layout = checkpoint_layout("flux-dev", scale=SCALE)
    layout[PREFIX + "img_in.weight"] = (layout[PREFIX + "img_in.weight"][0], 96)
    found = detect(layout)
    assert found.arch is FLUX_DEV and found.in_channels == 96
    assert "unusual transformer input channels: 96" in found.notes


def test_an_unknown_variant_is_named_by_its_closest_match() -> None:
    layout = {
        k: v for k, v in checkpoint_layout("flux-dev", scale=SCALE).items() if "single" not in k
    }
    with pytest.raises(CheckpointError) as info:
        detect(layout, path="half.safetensors")
    (diag,) = info.value.diagnostics
    assert diag.code == "unknown-architecture"
    assert diag.message.startswith(
        "unknown checkpoint layout; the closest known architecture is flux-dev (Flux.1 dev), "
        "but only 476 of its 780 Flux transformer keys match; 304 keys missing, e.g. "
        "model.diffusion_model.single_blocks.0.linear1.weight,"
    )


@pytest.mark.parametrize(
    ("key", "block"),
    [
        ("img_in.weight", "IN"),
        ("txt_in.bias", "IN"),
        ("time_in.in_layer.weight", "IN"),
        ("vector_in.out_layer.bias", "IN"),
        ("guidance_in.in_layer.weight", "IN"),
        ("double_blocks.0.img_attn.qkv.weight", "D00"),
        ("double_blocks.1.txt_mlp.0.weight", "D01"),
        ("double_blocks.18.img_mod.lin.bias", "D18"),
        ("single_blocks.1.linear1.weight", "S01"),
        ("single_blocks.10.norm.key_norm.scale", "S10"),
        ("single_blocks.37.modulation.lin.weight", "S37"),
        ("final_layer.linear.weight", "OUT"),
        ("final_layer.adaLN_modulation.1.bias", "OUT"),
    ],
)
def test_block_of_transformer_keys(key: str, block: str) -> None:
    assert FLUX_DEV.block_of(PREFIX + key) == block
    assert FLUX_DEV.block_of(key) == block  # bare names too


def test_block_of_the_other_parts() -> None:
    assert FLUX_DEV.block_of(
        "text_encoders.clip_l.transformer.text_model.final_layer_norm.weight"
    ) == ("CLIP")
    assert (
        FLUX_DEV.block_of("text_encoders.clip_l.transformer.text_model.embeddings.position_ids")
        is None
    )
    assert FLUX_DEV.block_of("text_encoders.t5xxl.transformer.shared.weight") == "T5"
    assert FLUX_DEV.block_of("vae.decoder.conv_in.weight") is None
    assert FLUX_DEV.block_of("something.else") == BASE


def test_scheme_vectors_groups_and_names() -> None:
    scheme = FLUX_DEV.scheme
    assert scheme is FLUX_SCHNELL.scheme
    assert scheme.blocks == FLUX_BLOCKS and len(FLUX_BLOCKS) == 61
    assert FLUX_BLOCKS[:3] == ("CLIP", "T5", "IN") and FLUX_BLOCKS[-1] == "OUT"
    assert scheme.vector_lengths == (61, 59)
    assert scheme.groups["D"] == DOUBLE and scheme.groups["S"] == SINGLE
    values = [round(0.01 * i, 2) for i in range(61)]
    resolved = BlockWeights.from_vector(values).resolve(scheme, base=0.5)
    assert resolved["CLIP"] == 0.0 and resolved["T5"] == 0.01 and resolved["IN"] == 0.02
    assert resolved["D00"] == 0.03 and resolved["S00"] == 0.22 and resolved["OUT"] == 0.6
    short = BlockWeights.from_vector([0.5] * 59).resolve(scheme, base=0.25)
    assert short["CLIP"] == 0.25 and short["T5"] == 0.25 and short["D05"] == 0.5


def test_wrong_vector_length_says_what_flux_accepts() -> None:
    with pytest.raises(WeightsError) as info:
        BlockWeights.from_vector([0.5] * 60)
    assert "61 or 59 (Flux.1)" in info.value.message
    assert info.value.hint is not None
    assert "For Flux.1, 61 values are CLIP, T5, IN, D00..D18, S00..S37, OUT" in info.value.hint


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("flux")
    for name, arch_name, seed in (
        ("a", "flux-dev", 1),
        ("b", "flux-dev", 2),
        ("s", "flux-schnell", 3),
        ("x", "sdxl", 4),
    ):
        make_checkpoint(folder / f"{name}.safetensors", arch_name, scale=SCALE, seed=seed)
    make_checkpoint(folder / "fill.safetensors", "flux-dev", scale=SCALE, seed=5, variant="fill")
    make_checkpoint(folder / "bare.safetensors", "flux-dev", scale=SCALE, seed=6, bare=True)
    return folder


def _recipe(folder: Path, body: str, name: str = "r.merge") -> Path:
    path = folder / name
    path.write_text(body)
    return path


def test_weighted_sum_by_ranges_and_groups_matches_the_formula(models: Path) -> None:
    recipe = _recipe(
        models,
        'model a = "a.safetensors"\nmodel b = "b.safetensors"\n'
        "save weighted_sum(a, b, alpha={D00..D09: 0.25, D10..D18: 0.5, S: 0.75, IN: 0.1, "
        'OUT: 0.9, CLIP: 0.3, BASE: 0.2}) to "ab.safetensors" as fp32\n',
    )
    mergelang.run(recipe, cache_dir=models / "cache")

    def alpha(block: str | None) -> float:
        assert block is not None
        if block.startswith("D"):
            return 0.25 if int(block[1:]) < 10 else 0.5
        if block.startswith("S"):
            return 0.75
        return {"IN": 0.1, "OUT": 0.9, "CLIP": 0.3, "T5": 0.2}[block]

    with (
        SafetensorsReader(models / "a.safetensors") as a,
        SafetensorsReader(models / "b.safetensors") as b,
        SafetensorsReader(models / "ab.safetensors") as out,
    ):
        assert out.keys() == a.keys()
        assert len(a.keys()) == 1440
        for key in a.keys():  # noqa: SIM118
            block = FLUX_DEV.block_of(key)
            x, y = a.get(key), b.get(key)
            if block is None:  # the VAE and position_ids come from a
                assert torch.equal(out.get(key), x.float() if x.is_floating_point() else x), key
                continue
            w = alpha(block)
            expected = (1 - w) * x.float() + w * y.float()
            assert torch.equal(out.get(key), expected), key


def test_fill_with_dev_merges_the_common_channels(models: Path) -> None:
    recipe = _recipe(
        models,
        'model f = "fill.safetensors"\nmodel a = "a.safetensors"\n'
        'save weighted_sum(f, a, alpha=0.5) to "fa.safetensors" as fp32\n',
    )
    mergelang.run(recipe, cache_dir=models / "cache")
    key = PREFIX + "img_in.weight"
    with (
        SafetensorsReader(models / "fill.safetensors") as f,
        SafetensorsReader(models / "a.safetensors") as a,
        SafetensorsReader(models / "fa.safetensors") as out,
    ):
        merged = out.get(key)
        assert merged.shape[1] == 384
        assert torch.equal(
            merged[:, :64], 0.5 * f.get(key)[:, :64].float() + 0.5 * a.get(key).float()
        )
        assert torch.equal(merged[:, 64:], f.get(key)[:, 64:].float())


def test_misspelled_blocks_are_located(models: Path) -> None:
    for text, column in (("{D00..D19: 1}", 31), ("{S38: 0, D: 1}", 31)):
        source = (
            'model a = "a.safetensors"\nmodel b = "b.safetensors"\n'
            f'save weighted_sum(a, b, alpha={text}) to "x.safetensors"\n'
        )
        with pytest.raises(RecipeError) as info:
            mergelang.check(mergelang.parse(source))
        (diag,) = info.value.diagnostics
        assert diag.code == "unknown-block" and diag.line == 3 and diag.column >= column
        assert diag.hint is not None and "Flux.1: " in diag.hint


def test_a_vector_of_another_scheme_says_which_lengths_flux_takes(models: Path) -> None:
    recipe = _recipe(
        models,
        'model a = "a.safetensors"\nmodel b = "b.safetensors"\n'
        'save weighted_sum(a, b, alpha=GRAD_V) to "out.safetensors"\n',
    )
    with pytest.raises(RecipeError) as info:
        mergelang.plan(recipe, cache_dir=models / "cache")
    (diag,) = info.value.diagnostics
    assert (diag.code, diag.line, diag.column) == ("weights-architecture", 3, 31)
    assert "Flux.1 models have CLIP" in diag.message
    assert diag.hint == "give 61 values (59 without CLIP and T5) for Flux.1 models"
    assert not (models / "out.safetensors").exists()


@pytest.mark.parametrize(
    ("other", "needle"),
    [
        ("x", "weighted_sum mixes flux-dev (a) and sdxl (x)"),
        ("s", "weighted_sum mixes flux-dev (a) and flux-schnell (s)"),
    ],
)
def test_flux_with_another_architecture_is_refused(models: Path, other: str, needle: str) -> None:
    recipe = _recipe(
        models,
        f'model a = "a.safetensors"\nmodel {other} = "{other}.safetensors"\n'
        f'save weighted_sum(a, {other}, alpha=0.5) to "out.safetensors"\n',
    )
    with pytest.raises(MergelangError) as info:
        mergelang.plan(recipe, cache_dir=models / "cache")
    (diag,) = info.value.diagnostics
    assert diag.code == "architecture-mismatch"
    assert needle in diag.message
    assert diag.hint is not None
    if other == "s":
        assert diag.hint.startswith("Flux.1 dev and Flux.1 schnell share their blocks")
        assert "flux-dev has 4 Flux transformer keys the other lacks (guidance_in.*)" in diag.hint
    else:
        assert diag.hint.startswith("merge models of one architecture")
    assert not (models / "out.safetensors").exists()


def test_dev_with_schnell_says_what_differs() -> None:
    dev = checkpoint_layout("flux-dev", scale=SCALE)
    schnell = checkpoint_layout("flux-schnell", scale=SCALE)
    with pytest.raises(CheckpointError) as info:
        align([("dev.safetensors", dev), ("schnell.safetensors", schnell)])
    (diag,) = info.value.diagnostics
    assert diag.path == "schnell.safetensors"
    assert diag.hint == (
        "Flux.1 dev and Flux.1 schnell share their blocks but not their keys: flux-dev has 4 "
        "Flux transformer keys the other lacks (guidance_in.*); a merge would copy those keys "
        "from one input unmerged, so mergelang refuses it"
    )


def test_two_bare_files_merge(models: Path, tmp_path: Path) -> None:
    make_checkpoint(tmp_path / "c.safetensors", "flux-dev", scale=SCALE, seed=7, bare=True)
    recipe = _recipe(
        models,
        f'model b = "bare.safetensors"\nmodel c = "{tmp_path / "c.safetensors"}"\n'
        f'save weighted_sum(b, c, alpha={{D: 1, default: 0}}) to "{tmp_path / "bc.safetensors"}"'
        " as fp32\n",
        "bare.merge",
    )
    mergelang.run(recipe, cache_dir=models / "cache")
    with (
        SafetensorsReader(models / "bare.safetensors") as b,
        SafetensorsReader(tmp_path / "c.safetensors") as c,
        SafetensorsReader(tmp_path / "bc.safetensors") as out,
    ):
        assert out.keys() == b.keys() and len(out.keys()) == 780
        for key in out.keys():  # noqa: SIM118
            source = c if key.startswith("double_blocks.") else b
            assert torch.equal(out.get(key), source.get(key).float()), key


def test_fill_with_depth_is_refused() -> None:
    fill = checkpoint_layout("flux-dev", scale=SCALE, variant="fill")
    depth = checkpoint_layout("flux-dev", scale=SCALE, variant="depth")
    with pytest.raises(CheckpointError) as info:
        align([("fill.safetensors", fill), ("depth.safetensors", depth)])
    (diag,) = info.value.diagnostics
    assert diag.code == "shape-mismatch" and diag.key == PREFIX + "img_in.weight"
    assert diag.message == (
        "cannot merge a Fill transformer (fill.safetensors, 384 input channels) with a Depth "
        "one (depth.safetensors, 128 input channels)"
    )
