"""Saving as fp8: torch's rounding on in-range values, saturation counted in a warning,
and biases and norms kept in their own type."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from run_helpers import (
    declare,
    load,
    merged_float32,
    save_tensors,
    shared_models,
    uniform,
    weighted_sum,
    write_recipe,
)

import mergelang.api as api
from mergelang.io.dtypes import output_code, save_dtype_code
from mergelang.io.fp8 import FP8_MAX, clamped_warning, saturating_cast

FP8 = {"F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MERGELANG_CACHE", str(tmp_path / "env-cache"))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_models(tmp_path_factory, ("a", "b"))


@pytest.mark.parametrize("code", sorted(FP8))
def test_in_range_values_round_as_torch_casts_them(code: str) -> None:
    gen = torch.Generator().manual_seed(7)
    limit = FP8_MAX[code]
    values = (torch.rand(100_000, generator=gen) * 2 - 1) * limit
    values[:1000] = torch.randn(1000, generator=gen) * 1e-3  # the subnormal range
    values[1000:1002] = torch.tensor([limit, -limit])

    cast, clamped = saturating_cast(values, code)

    assert clamped == 0
    assert cast.dtype == FP8[code]
    assert torch.equal(cast.float(), values.to(FP8[code]).float())


@pytest.mark.parametrize("code", sorted(FP8))
def test_values_beyond_the_range_are_clamped_and_counted(code: str) -> None:
    limit = FP8_MAX[code]
    values = torch.tensor(
        [1.0, limit * 1.5, -limit * 4, float("inf"), float("-inf"), float("nan"), -2.0]
    )
    out = torch.empty(values.numel(), dtype=FP8[code])

    cast, clamped = saturating_cast(values, code, out)

    assert clamped == 4
    assert cast.data_ptr() == out.data_ptr()
    found = cast.float()
    assert found[[0, 6]].tolist() == [1.0, -2.0]
    assert found[1:5].tolist() == [limit, -limit, limit, -limit]
    assert torch.isnan(found[5])


def test_an_empty_tensor_casts() -> None:
    cast, clamped = saturating_cast(torch.empty(0), "F8_E4M3")
    assert (cast.dtype, cast.numel(), clamped) == (torch.float8_e4m3fn, 0, 0)


def test_fp8_saves_keep_tensors_of_fewer_than_two_dimensions() -> None:
    assert save_dtype_code("fp8") == "F8_E4M3"
    assert save_dtype_code("fp8_e5m2") == "F8_E5M2"
    assert output_code("F32", "F8_E4M3", (320, 320)) == "F8_E4M3"
    assert output_code("F16", "F8_E4M3", (320, 4, 3, 3)) == "F8_E4M3"
    assert output_code("F32", "F8_E4M3", (320,)) == "F32"
    assert output_code("BF16", "F8_E5M2", ()) == "BF16"
    assert output_code("I64", "F8_E4M3", (1, 77)) == "I64"
    assert output_code("F32", "F16", (320,)) == "F16"


def test_the_warning_counts_values_and_keys() -> None:
    found = clamped_warning("out/mix.safetensors", "F8_E4M3", {"a.weight": 3, "b.weight": 40})
    assert found.severity == "warning" and found.code == "fp8-clamped"
    assert found.key == "b.weight"
    assert found.message == (
        "43 values beyond the range of F8_E4M3 (±448) clamped in 2 keys of "
        "out/mix.safetensors; most in 'b.weight' (40)"
    )


@pytest.mark.parametrize(("save_as", "code"), [("fp8", "F8_E4M3"), ("fp8_e5m2", "F8_E5M2")])
def test_a_merge_saved_as_fp8_is_torchs_cast_of_the_float32_result(
    tmp_path: Path, models: Path, save_as: str, code: str
) -> None:
    recipe = write_recipe(
        tmp_path,
        declare(models, "a", "b")
        + f'save weighted_sum(a, b, alpha=0.3) to "mix.safetensors" as {save_as}\n',
    )

    result = api.run(recipe, cache_dir=tmp_path / "cache")

    assert not [w for w in result.warnings if w.code == "fp8-clamped"]
    written = load(tmp_path / "mix.safetensors")
    a, b = load(models / "a.safetensors"), load(models / "b.safetensors")
    merged = merged_float32("sd1", [a, b], weighted_sum(uniform("sd1", 0.3)))
    matrices = [k for k, t in merged.items() if t.dim() >= 2 and t.is_floating_point()]
    assert matrices and len(matrices) < len(merged)
    for key, tensor in merged.items():
        if key in matrices:
            assert written[key].dtype == FP8[code], key
            assert torch.equal(written[key].float(), tensor.to(FP8[code]).float()), key
        else:
            assert written[key].dtype == a[key].dtype, key


def test_an_fp8_save_beyond_the_range_warns_with_the_count(tmp_path: Path, models: Path) -> None:
    a = load(models / "a.safetensors")
    key = next(k for k, t in a.items() if t.dim() == 2 and t.is_floating_point())
    loud = dict(a)
    loud[key] = a[key].float().clone()
    loud[key].view(-1)[:5] = torch.tensor([1e4, -1e4, 500.0, 449.0, 448.0])
    save_tensors(tmp_path / "in" / "a.safetensors", loud)
    recipe = write_recipe(
        tmp_path, declare(tmp_path / "in", "a") + 'save a to "loud.safetensors" as fp8\n'
    )

    result = api.run(recipe, cache_dir=tmp_path / "cache")

    warnings = [w for w in result.warnings if w.code == "fp8-clamped"]
    assert [w.message for w in warnings] == [
        f"4 values beyond the range of F8_E4M3 (±448) clamped in 1 key of "
        f"{tmp_path / 'loud.safetensors'}; most in {key!r} (4)"
    ]
    written = load(tmp_path / "loud.safetensors")[key].float().view(-1)
    assert written[:5].tolist() == [448.0, -448.0, 448.0, 448.0, 448.0]
    assert not torch.isnan(written).any()
