"""ComfyUI ModelMergeFlux1 / ModelMergeSD3_2B / ModelMergeSD35_Large workflows converted to
recipes, and the converted Flux merge run against ComfyUI's own formula."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import mergelang
from mergelang.arch import FLUX_DEV
from mergelang.convert import convert, detect_format
from mergelang.convert.comfyui import NODES
from mergelang.errors import RecipeError
from mergelang.io.readers import SafetensorsReader
from mergelang.testing import make_checkpoint

FLUX_SLIDERS = NODES["ModelMergeFlux1"].sliders


def _flux_ratio(slider: str) -> float:
    if slider == "txt_in.":
        return 0.5
    if slider.startswith("double_blocks."):
        return 0.7
    if slider.startswith("single_blocks."):
        return 0.9 if slider == "single_blocks.37." else 0.25
    return 1.0


def _flux_workflow() -> str:
    inputs: dict[str, object] = {"model1": ["4", 0], "model2": ["5", 0]}
    inputs.update({slider: _flux_ratio(slider) for slider in FLUX_SLIDERS})
    workflow = {
        "4": {"class_type": "UNETLoader", "inputs": {"unet_name": "a.safetensors"}},
        "5": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "b.safetensors"}},
        "12": {"class_type": "ModelMergeFlux1", "inputs": inputs},
    }
    return json.dumps(workflow, indent=1)


def test_sliders_of_each_node() -> None:
    assert len(NODES["ModelMergeFlux1"].sliders) == 63
    assert len(NODES["ModelMergeSD3_2B"].sliders) == 30
    assert len(NODES["ModelMergeSD35_Large"].sliders) == 44


def test_flux_api_workflow() -> None:
    text = _flux_workflow()
    assert detect_format(text) == "comfyui"
    assert convert(text) == (
        "# ComfyUI merge nodes: a slider is model1's share, so alpha (model2's) is 1 - ratio;\n"
        "# the text encoders are not merged (model1's).\n"
        'model a = "a.safetensors"\n'
        'model b = "b.safetensors"\n'
        "\n"
        "save weighted_sum(a, b, alpha={IN: 0, D00..D18: 0.3, S00..S36: 0.75, S37: 0.1, OUT: 0, "
        'CLIP: 0, T5: 0, BASE: 0, "*.txt_in.*" in IN: 0.5}) to "merged.safetensors"\n'
    )


def test_sd3_editor_workflow() -> None:
    values = [1.0, 1.0, 0.8, 1.0, 1.0, *([0.5] * 12), *([0.0] * 12), 1.0]
    workflow = {"nodes": [{"id": 7, "type": "ModelMergeSD3_2B", "widgets_values": values}]}
    recipe = convert(json.dumps(workflow))
    assert recipe.splitlines()[2:] == [
        'model model1 = "model1.safetensors"',
        'model model2 = "model2.safetensors"',
        "",
        "save weighted_sum(model1, model2, alpha={IN: 0, J00..J11: 0.5, J12..J23: 1, OUT: 0, "
        'CLIP_L: 0, CLIP_G: 0, T5: 0, VAE: 0, BASE: 0, "*.context_embedder.*" in IN: 0.2}) to '
        '"merged.safetensors"',
    ]
    mergelang.check(mergelang.parse(recipe))


def test_sd35_large_and_several_nodes() -> None:
    large = {"nodes": [{"id": 1, "type": "ModelMergeSD35_Large", "widgets_values": [0.5] * 44}]}
    recipe = convert(json.dumps(large), "comfyui")
    assert "alpha={IN: 0.5, J00..OUT: 0.5, CLIP_L: 0, CLIP_G: 0, T5: 0, VAE: 0, BASE: 0}" in recipe
    two = {
        "nodes": [
            {"id": 1, "type": "ModelMergeSD35_Large", "widgets_values": [0.5] * 44},
            {"id": 2, "type": "ModelMergeFlux1", "widgets_values": [1.0] * 63},
        ]
    }
    lines = convert(json.dumps(two)).splitlines()
    assert lines[-1].endswith('to "merged_2.safetensors"')


def test_wrong_slider_count_is_located() -> None:
    text = json.dumps(
        {"nodes": [{"id": 3, "type": "ModelMergeFlux1", "widgets_values": [1.0] * 5}]}
    )
    with pytest.raises(RecipeError) as info:
        convert(text, "comfyui", path="wf.json")
    (diag,) = info.value.diagnostics
    assert diag.code == "comfyui" and diag.line == 1
    assert diag.message == "ModelMergeFlux1 node 3 has 5 slider values, not 63"


def test_missing_sliders_and_no_node() -> None:
    text = '{\n "9": {"class_type": "ModelMergeFlux1", "inputs": {"img_in.": 1}}\n}'
    with pytest.raises(RecipeError) as info:
        convert(text)
    (diag,) = info.value.diagnostics
    assert (diag.line, diag.column) == (2, 22)
    assert diag.message == (
        "ModelMergeFlux1 node 9 has no value for 62 sliders "
        "(time_in., guidance_in, vector_in., ...)"
    )
    with pytest.raises(RecipeError, match="no ComfyUI merge node of a known class"):
        convert('{"1": {"class_type": "KSampler", "inputs": {}}}', "comfyui")


def test_converted_flux_merge_matches_comfyui(tmp_path: Path) -> None:
    for name, seed in (("a", 1), ("b", 2)):
        make_checkpoint(tmp_path / f"{name}.safetensors", "flux-dev", scale=1 / 160, seed=seed)
    recipe = tmp_path / "wf.merge"
    recipe.write_text(
        convert(_flux_workflow()).replace('"merged.safetensors"', '"m.safetensors" as fp32')
    )
    mergelang.run(recipe, cache_dir=tmp_path / "cache")
    prefix = FLUX_DEV.denoiser.prefix
    with (
        SafetensorsReader(tmp_path / "a.safetensors") as a,
        SafetensorsReader(tmp_path / "b.safetensors") as b,
        SafetensorsReader(tmp_path / "m.safetensors") as out,
    ):
        for key in a.keys():  # noqa: SIM118
            x = a.get(key)
            if not key.startswith(prefix):  # text encoders and VAE: model1's
                assert torch.equal(out.get(key), x.float() if x.is_floating_point() else x), key
                continue
            local = key[len(prefix) :]
            slider = max((s for s in FLUX_SLIDERS if local.startswith(s)), key=len)
            ratio = _flux_ratio(slider)
            expected = ratio * x.float() + (1 - ratio) * b.get(key).float()
            assert torch.allclose(out.get(key), expected, rtol=0, atol=1e-7), key
