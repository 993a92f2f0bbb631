"""ComfyUI's scaled fp8 files: read dequantised with their scales hidden, written as a save
``as fp8_scaled``; compared with a quantiser and dequantiser written here."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from run_helpers import (
    declare,
    files_under,
    load,
    merged_float32,
    save_tensors,
    shared_models,
    uniform,
    weighted_sum,
    write_recipe,
)

import mergelang.api as api
from mergelang.errors import MergelangError, UsageError
from mergelang.io.readers import open_checkpoint
from mergelang.io.save_choices import SaveOptions


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MERGELANG_CACHE", str(tmp_path / "env-cache"))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_models(tmp_path_factory, ("a", "b"))


def quant(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-tensor absmax scaling into float8_e4m3fn, as ComfyUI's guide describes it."""
    amax = x.float().abs().max()
    scale = (amax / 448.0).to(torch.float32)
    return (x.float() / scale).to(torch.float8_e4m3fn), scale


def dequant(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return q.to(torch.float32) * scale


def is_matrix(key: str, tensor: torch.Tensor) -> bool:
    return tensor.is_floating_point() and tensor.dim() >= 2 and key.endswith(".weight")


def scaled_file(path: Path, state: dict[str, torch.Tensor], drop: str | None = None) -> Path:
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if is_matrix(key, tensor):
            q, scale = quant(tensor)
            out[key] = q
            if key != drop:
                out[key[: -len("weight")] + "scale_weight"] = scale
            out[key[: -len("weight")] + "scale_input"] = torch.tensor(1.0)
        else:
            out[key] = tensor
    out["scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
    return save_tensors(path, out)


def test_a_scaled_file_reads_as_its_dequantised_model_keys(tmp_path: Path, models: Path) -> None:
    a = load(models / "a.safetensors")
    path = scaled_file(tmp_path / "a-scaled.safetensors", a)

    with open_checkpoint(path) as reader:
        assert reader.keys() == list(a)
        for key, tensor in a.items():
            found = reader.get(key)
            if is_matrix(key, tensor):
                assert reader.info(key).dtype == "F32"
                assert torch.equal(found, dequant(*quant(tensor))), key
            else:
                assert torch.equal(found, tensor), key


def test_a_run_merges_the_dequantised_weights(tmp_path: Path, models: Path) -> None:
    a, b = load(models / "a.safetensors"), load(models / "b.safetensors")
    scaled_file(tmp_path / "in" / "a.safetensors", a)
    recipe = write_recipe(
        tmp_path,
        declare(tmp_path / "in", "a")
        + declare(models, "b")
        + 'save weighted_sum(a, b, alpha=0.25) to "mix.safetensors" as fp32\n',
    )

    api.run(recipe, cache_dir=tmp_path / "cache")

    wide = {k: dequant(*quant(t)) if is_matrix(k, t) else t for k, t in a.items()}
    expected = merged_float32("sd1", [wide, b], weighted_sum(uniform("sd1", 0.25)))
    written = load(tmp_path / "mix.safetensors")
    assert set(written) == set(expected)
    for key, tensor in expected.items():
        if tensor.is_floating_point():
            assert torch.equal(written[key], tensor.float()), key


def test_a_missing_scale_is_an_error_before_anything_is_written(
    tmp_path: Path, models: Path
) -> None:
    a = load(models / "a.safetensors")
    dropped = next(k for k, t in a.items() if is_matrix(k, t))
    scaled_file(tmp_path / "in" / "a.safetensors", a, drop=dropped)
    recipe = write_recipe(
        tmp_path, declare(tmp_path / "in", "a") + 'save a to "out/a.safetensors" as fp16\n'
    )

    with pytest.raises(MergelangError) as caught:
        api.run(recipe, cache_dir=tmp_path / "cache")

    found = [d for d in caught.value.diagnostics if d.code == "missing-scale"]
    assert len(found) == 1
    scale = dropped[: -len("weight")] + "scale_weight"
    assert found[0].message == (
        f"model 'a': {tmp_path / 'in' / 'a.safetensors'}: a scaled fp8 file, but the fp8 "
        f"weight has no {scale!r}"
    )
    assert found[0].key == dropped
    assert not (tmp_path / "out").exists()


def test_a_save_as_fp8_scaled_stores_quant_of_the_float32_result(
    tmp_path: Path, models: Path
) -> None:
    a, b = load(models / "a.safetensors"), load(models / "b.safetensors")
    recipe = write_recipe(
        tmp_path,
        declare(models, "a", "b")
        + 'save weighted_sum(a, b, alpha=0.6) to "mix.safetensors" as fp8_scaled\n',
    )

    api.run(recipe, cache_dir=tmp_path / "cache")

    merged = merged_float32("sd1", [a, b], weighted_sum(uniform("sd1", 0.6)))
    written = load(tmp_path / "mix.safetensors")
    assert written["scaled_fp8"].dtype == torch.float8_e4m3fn
    assert written["scaled_fp8"].numel() == 0
    matrices = [k for k, t in merged.items() if t.is_floating_point() and t.dim() >= 2]
    assert matrices
    for key, tensor in merged.items():
        if key in matrices:
            q, scale = quant(tensor)
            assert torch.equal(written[key[: -len("weight")] + "scale_weight"], scale), key
            assert torch.equal(written[key].float(), q.float()), key
        else:
            assert written[key].dtype == a[key].dtype, key
    assert len(written) == len(merged) + len(matrices) + 1
    with open_checkpoint(tmp_path / "mix.safetensors") as reader:
        assert sorted(reader.keys()) == sorted(merged)
        for key in matrices:
            assert torch.equal(reader.get(key), dequant(*quant(merged[key]))), key
    assert [f for f in files_under(tmp_path) if not f.startswith("cache/")] == [
        "mix.safetensors",
        "recipe.merge",
    ]


def test_scaled_fp8_is_written_only_as_safetensors() -> None:
    with pytest.raises(UsageError) as caught:
        SaveOptions(dtype="fp8_scaled", format="ckpt")
    assert caught.value.diagnostics[0].message == "a ckpt file cannot hold scaled fp8"


def test_a_bitsandbytes_nf4_file_is_refused_naming_the_format(tmp_path: Path, models: Path) -> None:
    a = load(models / "a.safetensors")
    key = next(k for k, t in a.items() if is_matrix(k, t))
    nf4 = dict(a)
    nf4[key] = torch.zeros(a[key].numel() // 2, 1, dtype=torch.uint8)
    nf4[key + ".absmax"] = torch.ones(4)
    nf4[key + ".quant_map"] = torch.zeros(16)
    nf4[key + ".quant_state.bitsandbytes__nf4"] = torch.zeros(8, dtype=torch.uint8)
    save_tensors(tmp_path / "in" / "a.safetensors", nf4)
    recipe = write_recipe(
        tmp_path, declare(tmp_path / "in", "a") + 'save a to "out/a.safetensors"\n'
    )

    with pytest.raises(MergelangError) as caught:
        api.run(recipe, cache_dir=tmp_path / "cache")

    found = [d for d in caught.value.diagnostics if d.code == "unsupported-quantisation"]
    assert len(found) == 1 and found[0].key == key
    assert "bitsandbytes NF4 (4-bit) checkpoint" in found[0].message
    assert not (tmp_path / "out").exists()
