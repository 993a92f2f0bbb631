"""The prediction rule for SDXL-family files: ``v_pred``/``ztsnr`` markers and
``modelspec.predict_key`` follow the recipe, never whichever input happens to come first.

The expected tensors are computed here from the input files (read whole with ``safetensors``)
by the weighted-sum formula; the expected markers are what ComfyUI's loader reads: an empty
``v_pred`` for a v model, ``ztsnr`` beside it for zero terminal SNR.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from mergelang.arch.prediction import marker_keys, prediction_of
from mergelang.testing import make_checkpoint
from tests.run_helpers import (
    SCALE,
    assert_same_tensors,
    expected_output,
    load,
    run_cli,
    uniform,
    weighted_sum,
    write_recipe,
)


def _with_markers(source: Path, target: Path, markers: tuple[str, ...]) -> Path:
    tensors = load(source)
    for key in markers:
        tensors[key] = torch.tensor([])
    save_file(tensors, str(target))
    return target


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("prediction")
    eps_a = make_checkpoint(folder / "eps_a.safetensors", "sdxl", scale=SCALE, seed=31)
    eps_b = make_checkpoint(folder / "eps_b.safetensors", "sdxl", scale=SCALE, seed=32)
    _with_markers(eps_b, folder / "vpred.safetensors", ("v_pred",))
    _with_markers(eps_b, folder / "noob.safetensors", ("v_pred", "ztsnr"))
    _with_markers(eps_a, folder / "noob_a.safetensors", ("v_pred", "ztsnr"))
    make_checkpoint(folder / "sd1.safetensors", "sd1", scale=SCALE, seed=33)
    make_checkpoint(folder / "sd1b.safetensors", "sd1", scale=SCALE, seed=34)
    assert eps_a.exists()
    return folder


def _recipe(folder: Path, models: Path, a: str, b: str, option: str = "") -> Path:
    text = (
        f'model a = "{models / (a + ".safetensors")}"\n'
        f'model b = "{models / (b + ".safetensors")}"\n'
        "mix = weighted_sum(a, b, alpha=0.25)\n"
        f'save mix to "out.safetensors"{option}\n'
    )
    return write_recipe(folder, text)


def _metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), "pt") as f:
        return dict(f.metadata() or {})


def _expected(models: Path, a: str, b: str) -> dict[str, torch.Tensor]:
    inputs = [load(models / f"{n}.safetensors") for n in (a, b)]
    for tensors in inputs:
        for key in ("v_pred", "ztsnr"):
            tensors.pop(key, None)
    return expected_output("sdxl", inputs, weighted_sum(uniform("sdxl", 0.25)), None)


def test_prediction_of_reads_markers_then_metadata() -> None:
    assert prediction_of({"a", "v_pred"}, {}) == "v"
    assert prediction_of({"v_pred", "ztsnr"}, {}) == "v_ztsnr"
    assert prediction_of({"ztsnr"}, {}) == "eps"
    assert prediction_of({"a"}, {"modelspec.predict_key": "v"}) == "v"
    assert prediction_of({"a"}, {"modelspec.predict_key": "epsilon"}) == "eps"
    assert marker_keys("eps") == ()
    assert marker_keys("v_ztsnr") == ("v_pred", "ztsnr")


@pytest.mark.parametrize("verb", ["check", "run"])
def test_eps_with_v_is_a_located_error_naming_both(models: Path, tmp_path: Path, verb: str) -> None:
    recipe = _recipe(tmp_path, models, "eps_a", "vpred")
    code, _, err = run_cli(tmp_path, verb, str(recipe))
    assert code == 1, err
    assert f"{recipe}:4:1: error: save 'out.safetensors' merges models of different" in err
    assert "'a' (eps_a.safetensors) is an epsilon-prediction model" in err
    assert "'b' (vpred.safetensors) is a v-prediction model (its v_pred key)" in err
    assert "with prediction=v" in err
    assert not (tmp_path / "out.safetensors").exists()


def test_v_with_v_ztsnr_differ_too(models: Path, tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, models, "vpred", "noob")
    code, _, err = run_cli(tmp_path, "check", str(recipe))
    assert code == 1
    assert "zero terminal SNR (its v_pred and ztsnr keys)" in err


@pytest.mark.parametrize(
    ("option", "markers", "predict_key"),
    [
        (" with prediction=v", ("v_pred",), "v"),
        (" with prediction=eps", (), "epsilon"),
        (" with prediction=v_ztsnr", ("v_pred", "ztsnr"), "v"),
    ],
)
def test_declared_prediction_decides_markers_and_metadata(
    models: Path, tmp_path: Path, option: str, markers: tuple[str, ...], predict_key: str
) -> None:
    recipe = _recipe(tmp_path, models, "eps_a", "vpred", option)
    code, _, err = run_cli(tmp_path, "run", str(recipe))
    assert code == 0, err
    out = tmp_path / "out.safetensors"
    actual = load(out)
    for key in markers:
        marker = actual.pop(key)
        assert marker.numel() == 0
    assert "v_pred" not in actual and "ztsnr" not in actual
    assert_same_tensors(actual, _expected(models, "eps_a", "vpred"))
    assert _metadata(out)["modelspec.predict_key"] == predict_key


def test_agreeing_inputs_keep_their_prediction(models: Path, tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, models, "noob_a", "noob")
    code, _, err = run_cli(tmp_path, "run", str(recipe))
    assert code == 0, err
    out = tmp_path / "out.safetensors"
    actual = load(out)
    assert actual.pop("v_pred").numel() == 0
    assert actual.pop("ztsnr").numel() == 0
    assert_same_tensors(actual, _expected(models, "noob_a", "noob"))
    assert _metadata(out)["modelspec.predict_key"] == "v"


def test_eps_inputs_get_epsilon_and_no_marker(models: Path, tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, models, "eps_a", "eps_b")
    code, _, err = run_cli(tmp_path, "run", str(recipe))
    assert code == 0, err
    out = tmp_path / "out.safetensors"
    assert "v_pred" not in load(out)
    assert _metadata(out)["modelspec.predict_key"] == "epsilon"


def test_a_changed_prediction_remakes_the_output(models: Path, tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, models, "eps_a", "eps_b", " with prediction=v")
    code, _, err = run_cli(tmp_path, "run", str(recipe))
    assert code == 0, err
    first = json.loads(_metadata(tmp_path / "out.safetensors")["mergelang.steps"])
    recipe = _recipe(tmp_path, models, "eps_a", "eps_b", " with prediction=eps")
    code, _, err = run_cli(tmp_path, "run", str(recipe))
    assert code == 0, err
    out = tmp_path / "out.safetensors"
    assert "v_pred" not in load(out)
    assert _metadata(out)["modelspec.predict_key"] == "epsilon"
    assert json.loads(_metadata(out)["mergelang.steps"]) == first


def test_prediction_on_sd1_is_an_error(models: Path, tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, models, "sd1", "sd1b", " with prediction=v")
    code, _, err = run_cli(tmp_path, "check", str(recipe))
    assert code == 1
    assert f"{recipe}:4:1: error: prediction=v:" in err
    assert "carry no prediction marker" in err


def test_unknown_prediction_value(models: Path, tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, models, "eps_a", "vpred", " with prediction=vpred")
    code, _, err = run_cli(tmp_path, "check", str(recipe))
    assert code == 1
    assert "save option prediction is auto or eps or v or v_ztsnr, not vpred" in err
