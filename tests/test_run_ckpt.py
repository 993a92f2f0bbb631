"""``.ckpt`` outputs: they carry the run's metadata beside the state dict, so a re-run finds
them up to date, and an edited recipe is refused without ``--force`` as for safetensors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import mergelang
from mergelang.errors import RecipeError
from mergelang.io.ckpt import METADATA_KEY, load_state_dict, read_ckpt_metadata
from mergelang.io.readers import SafetensorsReader
from mergelang.plan.cache import OUTPUT_KEY
from mergelang.testing import make_checkpoint


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    make_checkpoint(tmp_path / "a.safetensors", "sd1", scale=0.0625, seed=1)
    make_checkpoint(tmp_path / "b.safetensors", "sd1", scale=0.0625, seed=2)
    return tmp_path


def _recipe(folder: Path, alpha: float, name: str = "r.merge") -> Path:
    recipe = folder / name
    recipe.write_text(
        'model a = "a.safetensors"\nmodel b = "b.safetensors"\n'
        f'save weighted_sum(a, b, alpha={alpha}) to "out.ckpt" as fp32\n',
        encoding="utf-8",
    )
    return recipe


def test_a_ckpt_output_keeps_metadata_and_is_up_to_date_on_a_rerun(folder: Path) -> None:
    recipe = _recipe(folder, 0.25)
    first = mergelang.run(recipe, cache_dir=folder / "cache")
    assert [o.status for o in first.outputs] == ["written"]
    out = folder / "out.ckpt"
    meta = read_ckpt_metadata(out)
    assert meta[OUTPUT_KEY] == mergelang.plan(recipe, cache_dir=folder / "cache").outputs[0].key
    assert "weighted_sum(a, b, alpha=0.25)" in meta["mergelang.recipe"]
    assert [r["file"] for r in json.loads(meta["mergelang.inputs"])] == [
        "a.safetensors",
        "b.safetensors",
    ]
    loaded = torch.load(out, weights_only=True)
    assert set(loaded) == {"state_dict", METADATA_KEY}
    tensors, dropped = load_state_dict(out)
    assert dropped == [METADATA_KEY]
    key = "model.diffusion_model.input_blocks.1.0.in_layers.2.weight"
    with (
        SafetensorsReader(folder / "a.safetensors") as a,
        SafetensorsReader(folder / "b.safetensors") as b,
    ):
        expected = 0.75 * a.get(key).float() + 0.25 * b.get(key).float()
    assert torch.equal(tensors[key], expected)
    before = out.stat().st_mtime_ns
    again = mergelang.run(recipe, cache_dir=folder / "cache")
    assert [o.status for o in again.outputs] == ["up-to-date"]
    assert out.stat().st_mtime_ns == before


def test_another_recipe_is_refused_then_forced(folder: Path) -> None:
    mergelang.run(_recipe(folder, 0.25), cache_dir=folder / "cache")
    recipe = _recipe(folder, 0.5, "other.merge")
    with pytest.raises(RecipeError) as caught:
        mergelang.run(recipe, cache_dir=folder / "cache")
    (diag,) = caught.value.diagnostics
    assert diag.code == "exists"
    assert (diag.line, diag.column) == (3, 1)
    forced = mergelang.run(recipe, cache_dir=folder / "cache", force=True)
    assert [o.status for o in forced.outputs] == ["written"]
    assert "alpha=0.5" in read_ckpt_metadata(folder / "out.ckpt")["mergelang.recipe"]


def test_an_edited_recipe_remakes_its_own_ckpt_output(folder: Path) -> None:
    mergelang.run(_recipe(folder, 0.25), cache_dir=folder / "cache")
    edited = mergelang.run(_recipe(folder, 0.5), cache_dir=folder / "cache")
    assert [(o.status, o.changes) for o in edited.outputs] == [
        ("written", ("the saved expression changed",))
    ]
    assert "alpha=0.5" in read_ckpt_metadata(folder / "out.ckpt")["mergelang.recipe"]


def test_metadata_of_a_foreign_ckpt_is_empty(tmp_path: Path) -> None:
    torch.save({"state_dict": {"x": torch.zeros(2)}}, tmp_path / "plain.ckpt")
    assert read_ckpt_metadata(tmp_path / "plain.ckpt") == {}
