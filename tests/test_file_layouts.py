"""File layouts of Flux.1 and SD3: bare diffusion-only files merged with all-in-one
checkpoints, the output layout (``layout=``), and VAE files baked in (``vae=``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import mergelang
from mergelang.arch import get_architecture
from mergelang.arch.layout import canonical_names, checkpoint_layout, file_layout, output_name
from mergelang.errors import RecipeError
from mergelang.io.readers import SafetensorsReader
from mergelang.io.writer import OutputEntry, SafetensorsWriter
from mergelang.plan.text import plan_json, render_plan
from mergelang.testing import make_checkpoint

SCALE = 1 / 64
FLUX = "model.diffusion_model."


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("layouts")
    make_checkpoint(folder / "bfl.safetensors", "flux-dev", scale=SCALE, seed=1, bare=True)
    make_checkpoint(folder / "aio.safetensors", "flux-dev", scale=SCALE, seed=2)
    make_checkpoint(folder / "bfl2.safetensors", "flux-dev", scale=SCALE, seed=3, bare=True)
    make_checkpoint(folder / "other.safetensors", "flux-dev", scale=SCALE, seed=4)
    # Black Forest Labs' ae.safetensors: the VAE alone, its keys without a prefix.
    _split(folder / "other.safetensors", "vae.", folder / "ae.safetensors")
    # ComfyUI's separate text-encoder files: the Hugging Face names, no checkpoint prefix.
    _split(
        folder / "other.safetensors",
        "text_encoders.clip_l.transformer.",
        folder / "clip_l.safetensors",
    )
    _split(
        folder / "other.safetensors",
        "text_encoders.t5xxl.transformer.",
        folder / "t5xxl_fp16.safetensors",
    )
    return folder


def _split(source_path: Path, prefix: str, target: Path) -> None:
    """Write the keys under ``prefix`` of a checkpoint to a file of their own, unprefixed."""
    with SafetensorsReader(source_path) as source:
        keys = [k for k in source.keys() if k.startswith(prefix)]  # noqa: SIM118
        entries = [
            OutputEntry(k.removeprefix(prefix), source.info(k).dtype, tuple(source.info(k).shape))
            for k in keys
        ]
        with SafetensorsWriter(target, entries) as writer:
            for key in keys:
                writer.write(key.removeprefix(prefix), source.get(key))


def _recipe(folder: Path, body: str, name: str) -> Path:
    path = folder / name
    path.write_text(body)
    return path


def _plan_text(recipe: Path, cache: Path) -> str:
    made = mergelang.plan(recipe, cache_dir=cache)
    try:
        return render_plan(made)
    finally:
        made.close()


def _read(path: Path) -> dict[str, torch.Tensor]:
    with SafetensorsReader(path) as reader:
        return {k: reader.get(k).clone() for k in reader.keys()}  # noqa: SIM118


def test_layout_helpers_name_keys_both_ways() -> None:
    arch = get_architecture("flux-dev")
    bare = checkpoint_layout(arch, scale=SCALE, bare=True)
    full = checkpoint_layout(arch, scale=SCALE)
    assert file_layout(arch, bare) == "bare" and file_layout(arch, full) == "all_in_one"
    names = canonical_names(arch, bare)
    assert (
        names["double_blocks.0.img_attn.qkv.weight"] == FLUX + "double_blocks.0.img_attn.qkv.weight"
    )
    assert set(names.values()) == {k for k in full if k.startswith(FLUX)}
    assert canonical_names(arch, full) == {}
    assert output_name(arch, FLUX + "img_in.weight", "bare") == "img_in.weight"
    assert output_name(arch, "vae.decoder.conv_in.weight", "bare") is None
    assert (
        output_name(arch, "vae.decoder.conv_in.weight", "all_in_one")
        == "vae.decoder.conv_in.weight"
    )


def test_bare_first_merges_with_all_in_one_into_a_bare_file(models: Path) -> None:
    recipe = _recipe(
        models,
        'model a = "bfl.safetensors"\nmodel b = "aio.safetensors"\n'
        "save weighted_sum(a, b, alpha={D: 0.25, S: 0.75, default: 0.5})"
        ' to "ab.safetensors" as fp32\n',
        "ab.merge",
    )
    text = _plan_text(recipe, models / "cache")
    assert (
        "note: layout bare: the Flux transformer alone, without its prefix; 660 keys left out"
        in text
    )
    mergelang.run(recipe, cache_dir=models / "cache")
    a, b, out = (
        _read(models / n) for n in ("bfl.safetensors", "aio.safetensors", "ab.safetensors")
    )
    assert list(out) == list(a) and len(out) == 780
    for key, x in a.items():
        w = (
            0.25
            if key.startswith("double_blocks.")
            else 0.75
            if key.startswith("single_blocks.")
            else 0.5
        )
        expected = (1 - w) * x.float() + w * b[FLUX + key].float()
        assert torch.equal(out[key], expected), key


def test_all_in_one_first_takes_the_missing_components_from_it(models: Path) -> None:
    recipe = _recipe(
        models,
        'model a = "bfl.safetensors"\nmodel b = "aio.safetensors"\n'
        'save weighted_sum(b, a, alpha=0.25) to "ba.safetensors" as fp32\n',
        "ba.merge",
    )
    text = _plan_text(recipe, models / "cache")
    made = mergelang.plan(recipe, cache_dir=models / "cache")
    try:
        (output,) = plan_json(made)["outputs"]  # type: ignore[misc]
    finally:
        made.close()
    assert output["notes"] == [
        "'a' holds the Flux transformer alone: the VAE, text encoder CLIP ViT-L/14 and text "
        "encoder T5-XXL are taken unmerged from the first input that has them ('b')"
    ]
    assert (
        "note: 'a' holds the Flux transformer alone: the VAE, text encoder CLIP ViT-L/14 and "
        "text encoder T5-XXL are taken unmerged from the first input that has them ('b')"
    ) in text
    mergelang.run(recipe, cache_dir=models / "cache")
    a, b, out = (
        _read(models / n) for n in ("bfl.safetensors", "aio.safetensors", "ba.safetensors")
    )
    assert list(out) == list(b) and len(out) == 1440
    for key, y in b.items():
        if key.startswith(FLUX):
            expected = 0.75 * y.float() + 0.25 * a[key.removeprefix(FLUX)].float()
        else:  # as if a's weight were 0 for the VAE and the text encoders
            expected = y.float() if y.is_floating_point() else y
        assert torch.equal(out[key], expected), key


def test_layout_option_chooses_the_output_layout(models: Path) -> None:
    recipe = _recipe(
        models,
        'model a = "bfl.safetensors"\nmodel b = "aio.safetensors"\n'
        'save weighted_sum(a, b, alpha=0.5) to "full.safetensors" as fp32 with layout=all_in_one\n'
        'save b to "b-bare.safetensors" with layout=bare\n',
        "choose.merge",
    )
    mergelang.run(recipe, cache_dir=models / "cache")
    a, b = _read(models / "bfl.safetensors"), _read(models / "aio.safetensors")
    full = _read(models / "full.safetensors")
    assert set(full) == set(b)
    for key, value in full.items():
        if key.startswith(FLUX):
            expected = 0.5 * a[key.removeprefix(FLUX)].float() + 0.5 * b[key].float()
            assert torch.equal(value, expected), key
        else:
            y = b[key]
            assert torch.equal(value, y.float() if y.is_floating_point() else y), key
    bare = _read(models / "b-bare.safetensors")
    assert list(bare) == [k.removeprefix(FLUX) for k in b if k.startswith(FLUX)]
    for key, value in bare.items():
        assert torch.equal(value, b[FLUX + key]), key


def test_all_in_one_from_bare_inputs_names_the_missing_components(models: Path) -> None:
    recipe = _recipe(
        models,
        'model a = "bfl.safetensors"\nmodel c = "bfl2.safetensors"\n'
        'save weighted_sum(a, c, alpha=0.5) to "ac.safetensors" with layout=all_in_one\n',
        "missing.merge",
    )
    with pytest.raises(RecipeError) as info:
        mergelang.run(recipe, cache_dir=models / "cache")
    (diag,) = info.value.diagnostics
    assert (diag.code, diag.line, diag.column) == ("missing-component", 3, 1)
    assert diag.message == (
        "layout=all_in_one for 'ac.safetensors' needs the VAE, text encoder CLIP ViT-L/14 and "
        "text encoder T5-XXL, and no input has them"
    )
    assert not (models / "ac.safetensors").exists()


def test_bad_layout_value_is_located() -> None:
    with pytest.raises(RecipeError) as info:
        mergelang.check(
            mergelang.parse(
                'model a = "a.safetensors"\nsave a to "x.safetensors" with layout=full\n'
            )
        )
    (diag,) = info.value.diagnostics
    assert (diag.code, diag.line, diag.column) == ("bad-save-option", 2, 39)
    assert diag.message == "save option layout is all_in_one or bare, not full"


def test_layout_option_is_formatted_back() -> None:
    text = 'model a = "a.safetensors"\n\nsave a to "x.safetensors" with layout=bare\n'
    assert mergelang.format_text(text) == text


def test_vae_file_with_bare_keys_is_baked_into_a_flux_checkpoint(models: Path) -> None:
    recipe = _recipe(
        models,
        'model b = "aio.safetensors"\nmodel d = "other.safetensors"\n'
        'save weighted_sum(b, d, alpha=0.5) to "baked.safetensors" with vae="ae.safetensors"\n',
        "bake.merge",
    )
    mergelang.run(recipe, cache_dir=models / "cache")
    vae, out = _read(models / "ae.safetensors"), _read(models / "baked.safetensors")
    b = _read(models / "aio.safetensors")
    assert list(out) == list(b)
    vae_keys = [k for k in out if k.startswith("vae.")]
    assert len(vae_keys) == len(vae) == 244
    for key in vae_keys:
        assert torch.equal(out[key], vae[key.removeprefix("vae.")]), key


def test_bare_output_refuses_a_baked_vae(models: Path) -> None:
    recipe = _recipe(
        models,
        'model a = "bfl.safetensors"\nsave a to "a2.safetensors" with vae="ae.safetensors"\n',
        "bare-vae.merge",
    )
    with pytest.raises(RecipeError) as info:
        mergelang.run(recipe, cache_dir=models / "cache")
    (diag,) = info.value.diagnostics
    assert (diag.code, diag.line) == ("bad-save-option", 2)
    assert "a bare output holds the Flux transformer alone" in diag.message
    assert not (models / "a2.safetensors").exists()


def test_sd3_bare_with_all_in_one(tmp_path: Path) -> None:
    make_checkpoint(tmp_path / "bare.safetensors", "sd3-medium", scale=SCALE, seed=1, bare=True)
    make_checkpoint(tmp_path / "aio.safetensors", "sd3-medium", scale=SCALE, seed=2)
    recipe = _recipe(
        tmp_path,
        'model a = "aio.safetensors"\nmodel b = "bare.safetensors"\n'
        'save weighted_sum(a, b, alpha={J: 0.75, default: 0.25}) to "out.safetensors" as fp32\n',
        "sd3.merge",
    )
    mergelang.run(recipe, cache_dir=tmp_path / "cache")
    a, b, out = (
        _read(tmp_path / n) for n in ("aio.safetensors", "bare.safetensors", "out.safetensors")
    )
    assert list(out) == list(a)
    merged = 0
    for key, x in a.items():
        local = key.removeprefix(FLUX)
        if key.startswith(FLUX):
            w = 0.75 if local.startswith("joint_blocks.") else 0.25
            expected = (1 - w) * x.float() + w * b[local].float()
            merged += 1
        else:
            expected = x.float() if x.is_floating_point() else x
        assert torch.equal(out[key], expected), key
    assert merged == len(b)


def test_separate_files_make_an_all_in_one_checkpoint_of_a_bare_file(models: Path) -> None:
    recipe = _recipe(
        models,
        'model a = "bfl.safetensors"\n'
        'save a to "whole.safetensors" with layout=all_in_one, vae="ae.safetensors", '
        'clip_l="clip_l.safetensors", t5="t5xxl_fp16.safetensors"\n',
        "whole.merge",
    )
    mergelang.run(recipe, cache_dir=models / "cache")
    a, other = _read(models / "bfl.safetensors"), _read(models / "other.safetensors")
    out = _read(models / "whole.safetensors")
    assert set(out) == set(other) and len(out) == 1440
    for key, value in out.items():
        if key.startswith(FLUX):
            assert torch.equal(value, a[key.removeprefix(FLUX)]), key
        else:  # the VAE and both text encoders come from their own files, which hold other's
            assert torch.equal(value, other[key]), key


def test_a_text_encoder_file_replaces_the_merged_one(models: Path) -> None:
    recipe = _recipe(
        models,
        'model b = "aio.safetensors"\nmodel c = "bfl2.safetensors"\n'
        'save weighted_sum(b, c, alpha=0.5) to "t5.safetensors" as fp32 '
        'with t5="t5xxl_fp16.safetensors"\n',
        "t5.merge",
    )
    mergelang.run(recipe, cache_dir=models / "cache")
    b, c, other = (
        _read(models / n) for n in ("aio.safetensors", "bfl2.safetensors", "other.safetensors")
    )
    out = _read(models / "t5.safetensors")
    assert list(out) == list(b)
    t5 = "text_encoders.t5xxl."
    for key, value in out.items():
        if key.startswith(t5):
            assert torch.equal(value, other[key].float()), key
        elif key.startswith(FLUX):
            expected = 0.5 * b[key].float() + 0.5 * c[key.removeprefix(FLUX)].float()
            assert torch.equal(value, expected), key
        else:
            y = b[key]
            assert torch.equal(value, y.float() if y.is_floating_point() else y), key


def test_a_text_encoder_the_architecture_lacks_is_located(models: Path) -> None:
    recipe = _recipe(
        models,
        'model b = "aio.safetensors"\nsave b to "g.safetensors" with clip_g="clip_l.safetensors"\n',
        "clip-g.merge",
    )
    with pytest.raises(RecipeError) as info:
        mergelang.run(recipe, cache_dir=models / "cache")
    (diag,) = info.value.diagnostics
    assert (diag.code, diag.line) == ("bad-save-option", 2)
    assert (
        diag.message
        == "g.safetensors: clip_g= bakes in a text encoder Flux.1 dev models do not have"
    )
    assert diag.hint == "Flux.1 dev takes clip_l=, t5="
    assert not (models / "g.safetensors").exists()


def test_a_text_encoder_file_of_the_wrong_width_names_the_key(models: Path, tmp_path: Path) -> None:
    make_checkpoint(tmp_path / "wide.safetensors", "flux-dev", scale=2 * SCALE, seed=5)
    _split(
        tmp_path / "wide.safetensors",
        "text_encoders.t5xxl.transformer.",
        tmp_path / "t5.safetensors",
    )
    recipe = _recipe(
        models,
        'model b = "aio.safetensors"\n'
        f'save b to "w.safetensors" with t5="{tmp_path / "t5.safetensors"}"\n',
        "wide.merge",
    )
    with pytest.raises(RecipeError) as info:
        mergelang.run(recipe, cache_dir=models / "cache")
    diag = info.value.diagnostics[0]
    assert (diag.code, diag.line) == ("component-shape-mismatch", 2)
    assert "in the text encoder T5-XXL file, but" in diag.message
    assert not (models / "w.safetensors").exists()


def test_a_recipe_of_text_encoder_files_alone_is_a_clear_error(models: Path) -> None:
    recipe = _recipe(
        models,
        'model t = "t5xxl_fp16.safetensors"\nmodel u = "clip_l.safetensors"\n'
        'save weighted_sum(t, u, alpha=0.5) to "tt.safetensors"\n',
        "t5-only.merge",
    )
    with pytest.raises(RecipeError) as info:
        mergelang.run(recipe, cache_dir=models / "cache")
    diags = info.value.diagnostics
    assert [(d.code, d.line) for d in diags] == [
        ("unknown-architecture", 1),
        ("unknown-architecture", 2),
    ]
    assert "holds a text encoder T5-XXL on its own" in diags[0].message
    assert diags[0].hint == (
        "a text-encoder file is baked into an output with the save's clip_l=, clip_g= or t5= "
        "option; mergelang merges whole checkpoints (at least the denoiser)"
    )


def test_sd3_text_encoder_files_bake_into_a_bare_mmdit(tmp_path: Path) -> None:
    make_checkpoint(tmp_path / "mmdit.safetensors", "sd3-medium", scale=SCALE, seed=1, bare=True)
    make_checkpoint(tmp_path / "full.safetensors", "sd3-medium", scale=SCALE, seed=3)
    for name, prefix in (
        ("clip_l", "text_encoders.clip_l.transformer."),
        ("clip_g", "text_encoders.clip_g.transformer."),
        ("t5xxl_fp16", "text_encoders.t5xxl.transformer."),
        ("vae", "first_stage_model."),
    ):
        _split(tmp_path / "full.safetensors", prefix, tmp_path / f"{name}.safetensors")
    recipe = _recipe(
        tmp_path,
        'model m = "mmdit.safetensors"\n'
        'save m to "out.safetensors" with layout=all_in_one, vae="vae.safetensors", '
        'clip_l="clip_l.safetensors", clip_g="clip_g.safetensors", t5="t5xxl_fp16.safetensors"\n',
        "sd3-bake.merge",
    )
    mergelang.run(recipe, cache_dir=tmp_path / "cache")
    m, full = _read(tmp_path / "mmdit.safetensors"), _read(tmp_path / "out.safetensors")
    reference = _read(tmp_path / "full.safetensors")
    # everything but the sampling buffer and the encoders' logit_scale, which the separate
    # files do not hold (the ComfyUI prefix is above them)
    left = {k for k in reference if k not in full}
    assert all(k.endswith("logit_scale") or k == "model.model_sampling.sigmas" for k in left)
    for key, value in full.items():
        if key.startswith(FLUX):
            assert torch.equal(value, m[key.removeprefix(FLUX)]), key
        else:
            assert torch.equal(value, reference[key]), key
