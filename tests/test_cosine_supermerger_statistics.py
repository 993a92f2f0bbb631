"""``cosine_a``/``cosine_b`` under ``convention supermerger`` measure what SuperMerger's
statistics pass (``precosine``) measures: every key whose name holds ``model`` except the
VAE's, the CLIP ``position_ids`` included. Checked end to end against SuperMerger's rule
restated over the two state dicts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from run_helpers import load
from test_methods_geometry import sm_bounds, sm_combined_b, sm_cosine, sm_similarity_a

import mergelang
from mergelang.testing import make_checkpoint

UNET_KEY = "model.diffusion_model.input_blocks.1.1.proj_in.weight"
CLIP_KEY = "cond_stage_model.transformer.text_model.encoder.layers.0.mlp.fc1.weight"


def precosine(
    a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], combined: bool
) -> tuple[float, float]:
    """SuperMerger's stage 0: keys of A holding "model" that B has, the VAE skipped."""
    measure = sm_combined_b if combined else sm_similarity_a
    values = [
        measure(a[k].to(torch.float32), b[k].to(torch.float32))
        for k in a
        if "first_stage_model" not in k and "model" in k and k in b
    ]
    return sm_bounds(values)


@pytest.mark.parametrize("combined", [False, True])
def test_supermerger_convention_measures_position_ids_and_not_the_vae(
    tmp_path: Path, combined: bool
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    make_checkpoint(models / "a.safetensors", "sd1", scale=1 / 80)
    make_checkpoint(models / "b.safetensors", "sd1", scale=1 / 80, seed=3)
    a, b = load(models / "a.safetensors"), load(models / "b.safetensors")
    assert any(k.endswith("position_ids") for k in a)
    method = "cosine_b" if combined else "cosine_a"
    recipe = tmp_path / "r.merge"
    recipe.write_text(
        "convention supermerger\n"
        f'model a = "{models / "a.safetensors"}"\nmodel b = "{models / "b.safetensors"}"\n'
        f'save {method}(a, b, alpha=0.3, base=0.3) to "out/m.safetensors"\n',
        encoding="utf-8",
    )
    mergelang.run(recipe, cache_dir=tmp_path / "cache", use_cache=False)
    merged = load(tmp_path / "out" / "m.safetensors")
    bounds = precosine(a, b, combined)
    for key in (UNET_KEY, CLIP_KEY):
        expected = sm_cosine(
            a[key].to(torch.float32), b[key].to(torch.float32), 0.3, bounds, combined
        )
        torch.testing.assert_close(
            merged[key].to(torch.float32), expected.to(merged[key].dtype).to(torch.float32)
        )
