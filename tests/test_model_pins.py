"""``model a = "name.safetensors" sha256 "HEX"``: a declared model pinned to its content,
verified by ``check --inputs``, ``plan`` and ``run`` against the file found."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

import mergelang
from mergelang.check import check
from mergelang.convert import convert
from mergelang.errors import Diagnostic, RecipeError
from mergelang.io.hashing import load_cache
from mergelang.io.locate import ModelLocator
from mergelang.lang.formatter import format_text
from mergelang.lang.parser import parse
from mergelang.plan.input_checks import check_inputs
from mergelang.plan.inputs import resolve_inputs
from mergelang.testing import make_checkpoint


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pinned")
    make_checkpoint(root / "a.safetensors", "sd1", scale=1 / 80)
    make_checkpoint(root / "b.safetensors", "sd1", scale=1 / 80, seed=1)
    return root


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def recipe_text(pin_a: str, pin_b: str | None = None) -> str:
    text = f'model a = "a.safetensors" sha256 "{pin_a}"\n'
    text += 'model b = "b.safetensors"' + (f' sha256 "{pin_b}"' if pin_b else "") + "\n"
    return text + 'save weighted_sum(a, b, alpha=0.5) to "out/m.safetensors"\n'


def inputs_problems(text: str, models: Path, cache: Path) -> list[Diagnostic]:
    checked = check(parse(text, path="r.merge"))
    with resolve_inputs(checked, ModelLocator([models], env={})) as resolved:
        try:
            check_inputs(checked, resolved, cache_dir=cache)
        except RecipeError as exc:
            return list(exc.diagnostics)
    return []


def test_the_pin_is_part_of_the_declaration_and_formats_canonically() -> None:
    text = 'model a = "a.safetensors"   sha256 "ABCDEF0123"\n'
    assert format_text(text) == 'model a = "a.safetensors" sha256 "ABCDEF0123"\n'
    checked = check(parse(text + 'save a to "o.safetensors"\n'))
    assert checked.models["a"].sha256 == "abcdef0123"
    # a model may still be called sha256
    check(parse('model sha256 = "x.safetensors"\nsave sha256 to "o.safetensors"\n'))


def test_a_pin_that_is_no_hash_is_a_located_error() -> None:
    with pytest.raises(RecipeError) as info:
        check(parse('model a = "a.safetensors" sha256 "12ab"\nsave a to "o.safetensors"\n'))
    (diag,) = [d for d in info.value.diagnostics if d.code == "bad-pin"]
    assert (diag.line, diag.column) == (1, 34)
    assert diag.message == "a sha256 pin is 10 to 64 hexadecimal digits, not '12ab'"


def test_matching_pins_pass_whole_or_as_autov2(models: Path, tmp_path: Path) -> None:
    whole = sha256_of(models / "a.safetensors")
    short = sha256_of(models / "b.safetensors")[:10].upper()
    assert inputs_problems(recipe_text(whole, short), models, tmp_path / "cache") == []
    # the hashes went to the cache, so a later check does not read the files again
    cached = {entry["sha256"] for entry in load_cache(tmp_path / "cache").values()}
    assert whole in cached


def test_a_file_with_another_hash_is_an_error_at_the_pin(models: Path, tmp_path: Path) -> None:
    found = sha256_of(models / "a.safetensors")
    wrong = "0" * 64
    (diag,) = inputs_problems(recipe_text(wrong), models, tmp_path / "cache")
    assert diag.code == "pin-mismatch"
    assert (diag.line, diag.column) == (1, 34)
    assert diag.message == (
        f"model 'a': {models / 'a.safetensors'} has sha256 {found}, not the pinned {wrong}"
    )


def test_plan_and_run_refuse_a_mismatched_pin(models: Path, tmp_path: Path) -> None:
    folder = tmp_path / "work"
    folder.mkdir()
    recipe = folder / "r.merge"
    recipe.write_text(recipe_text("f" * 10), encoding="utf-8")
    for call in (mergelang.plan, mergelang.run):
        with pytest.raises(RecipeError) as info:
            call(recipe, models_dir=[models], cache_dir=tmp_path / "cache")
        assert [d.code for d in info.value.diagnostics] == ["pin-mismatch"]
    assert not (folder / "out").exists()
    good = sha256_of(models / "a.safetensors")
    recipe.write_text(recipe_text(good), encoding="utf-8")
    mergelang.run(recipe, models_dir=[models], cache_dir=tmp_path / "cache")
    assert (folder / "out" / "m.safetensors").is_file()


def a1111_metadata(models: Path) -> dict[str, str]:
    """What A1111's ``run_modelmerger`` writes for a weighted sum of a and b: the recipe
    names the models by sha256, ``sd_merge_models`` maps each sha256 to its file name."""
    a, b = sha256_of(models / "a.safetensors"), sha256_of(models / "b.safetensors")
    recipe = {
        "type": "webui",
        "primary_model_hash": a,
        "secondary_model_hash": b,
        "tertiary_model_hash": None,
        "interp_method": "Weighted sum",
        "multiplier": 0.25,
        "save_as_half": False,
    }
    merge_models = {
        a: {"name": "a.safetensors", "legacy_hash": "0" * 8, "sd_merge_recipe": None},
        b: {"name": "b.safetensors", "legacy_hash": "1" * 8, "sd_merge_recipe": None},
    }
    return {"sd_merge_recipe": json.dumps(recipe), "sd_merge_models": json.dumps(merge_models)}


def test_converted_a1111_metadata_declares_names_with_pins_that_check(
    models: Path, tmp_path: Path
) -> None:
    text = convert(json.dumps({"__metadata__": a1111_metadata(models)}))
    a, b = sha256_of(models / "a.safetensors"), sha256_of(models / "b.safetensors")
    assert text.splitlines()[:2] == [
        f'model primary = "a.safetensors" sha256 "{a}"',
        f'model secondary = "b.safetensors" sha256 "{b}"',
    ]
    assert format_text(text) == text
    assert inputs_problems(text, models, tmp_path / "cache") == []
    # the same recipe against a folder where b.safetensors is another file
    other = tmp_path / "other"
    other.mkdir()
    (other / "a.safetensors").write_bytes((models / "a.safetensors").read_bytes())
    (other / "b.safetensors").write_bytes((models / "a.safetensors").read_bytes())
    (diag,) = inputs_problems(text, other, tmp_path / "cache")
    assert diag.code == "pin-mismatch"
    assert diag.line == 2


def test_a_supermerger_title_gives_its_short_hash_as_the_pin() -> None:
    recipe = {
        "type": "sd-webui-supermerger",
        "model_a": "a.safetensors [0123456789]",
        "model_b": "b.safetensors",
        "mode": "Weight sum",
        "calcmode": "normal",
        "mbw": False,
        "base_alpha": 0.5,
    }
    text = convert(json.dumps({"sd_merge_recipe": json.dumps(recipe)}))
    assert 'model model_a = "a.safetensors" sha256 "0123456789"\n' in text
    assert 'model model_b = "b.safetensors"\n' in text
