"""``mergelang show`` and ``mergelang plan`` tell each input's format and dtypes: fp8,
scaled fp8 and GGUF inputs included."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from run_helpers import load, save_tensors, shared_models, write_recipe

from mergelang.cli import main

gguf = pytest.importorskip("gguf")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MERGELANG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("NO_COLOR", "1")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    models = shared_models(tmp_path_factory, ("a",))
    folder = tmp_path_factory.mktemp("lowprec")
    a = load(models / "a.safetensors")
    scaled: dict[str, torch.Tensor] = {}
    for key, tensor in a.items():
        if tensor.is_floating_point() and tensor.dim() >= 2 and key.endswith(".weight"):
            scaled[key] = tensor.float().to(torch.float8_e4m3fn)
            scaled[key[: -len("weight")] + "scale_weight"] = torch.tensor(1.0)
        else:
            scaled[key] = tensor
    scaled["scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
    writer = gguf.GGUFWriter(str(folder / "a.gguf"), arch="sd1")
    for key, tensor in a.items():
        writer.add_tensor(key, tensor.numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {
        "plain": models / "a.safetensors",
        "scaled": save_tensors(folder / "scaled.safetensors", scaled),
        "gguf": folder / "a.gguf",
    }


def show(path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    assert main(["show", str(path), "--json", "--no-hashes"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert isinstance(data, dict)
    return data


def test_show_hides_the_scales_of_a_scaled_fp8_file(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    plain, scaled = show(files["plain"], capsys), show(files["scaled"], capsys)
    assert scaled["architecture"] == plain["architecture"]
    assert scaled["keys"] == plain["keys"]
    dtypes = scaled["dtypes"]
    assert isinstance(dtypes, dict) and "F8_E4M3" in dtypes


def test_show_tells_a_gguf_file_and_its_types(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    plain, found = show(files["plain"], capsys), show(files["gguf"], capsys)
    assert found["format"] == "gguf"
    assert found["architecture"] == plain["architecture"]
    assert found["dtypes"] == plain["dtypes"]


def test_plan_lists_each_inputs_format_and_dtypes(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = write_recipe(
        tmp_path,
        f'model a = "{files["gguf"]}"\nmodel s = "{files["scaled"]}"\n'
        'save weighted_sum(a, s, alpha=0.5) to "mix.safetensors" as fp8\n',
    )
    assert main(["plan", str(recipe), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    inputs = {entry["name"]: entry for entry in data["inputs"]}
    assert inputs["a"]["format"] == "gguf"
    assert inputs["s"]["format"] == "safetensors"
    assert "F32" in inputs["s"]["dtypes"]  # the scaled weights, read dequantised
    assert sum(inputs["a"]["dtypes"].values()) == inputs["a"]["bytes"]

    assert main(["plan", str(recipe)]) == 0
    text = capsys.readouterr().out
    line = next(row for row in text.splitlines() if row.startswith("  a  "))
    assert line.rstrip().endswith("gguf " + "+".join(inputs["a"]["dtypes"]))
