"""NaN and infinite values in the inputs of a merge: refused by default, naming the model and
key, with nothing written; merged as they are with ``nan="keep"``."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import mergelang
from mergelang.errors import CheckpointError
from mergelang.io.readers import SafetensorsReader
from mergelang.io.writer import OutputEntry, SafetensorsWriter
from mergelang.testing import make_checkpoint

KEY = "model.diffusion_model.input_blocks.4.0.in_layers.2.weight"
RECIPE = (
    'model a = "a.safetensors"\nmodel b = "b.safetensors"\n'
    'save weighted_sum(a, b, alpha=0.25) to "out.safetensors" as fp32\n'
)


def _with_values(source: Path, target: Path, key: str, index: int, value: float) -> None:
    """Copy ``source`` to ``target`` with element ``index`` of ``key`` set to ``value``."""
    with SafetensorsReader(source) as reader:
        entries = [
            OutputEntry(k, reader.info(k).dtype, tuple(reader.info(k).shape))
            for k in reader.keys()  # noqa: SIM118
        ]
        with SafetensorsWriter(target, entries) as writer:
            for name in reader.keys():  # noqa: SIM118
                tensor = reader.get(name).clone()
                if name == key:
                    tensor.view(-1)[index] = value
                writer.write(name, tensor)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    make_checkpoint(tmp_path / "a.safetensors", "sd1", scale=0.125, seed=1, dtype="F32")
    make_checkpoint(tmp_path / "clean-b.safetensors", "sd1", scale=0.125, seed=2, dtype="F32")
    (tmp_path / "r.merge").write_text(RECIPE, encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_input_is_refused_naming_model_and_key(folder: Path, bad: float) -> None:
    _with_values(folder / "clean-b.safetensors", folder / "b.safetensors", KEY, 7, bad)
    before = (folder / "b.safetensors").read_bytes()
    with pytest.raises(CheckpointError) as caught:
        mergelang.run(folder / "r.merge", cache_dir=folder / "cache")
    (diag,) = caught.value.diagnostics
    assert diag.code == "non-finite"
    assert diag.key == KEY
    assert diag.path is not None and diag.path.endswith("b.safetensors")
    assert "NaN or infinite" in diag.message
    assert sorted(p.name for p in folder.iterdir()) == [
        "a.safetensors",
        "b.safetensors",
        "cache",
        "clean-b.safetensors",
        "r.merge",
    ]
    assert (folder / "b.safetensors").read_bytes() == before


def test_nan_keep_merges_the_values_as_they_are(folder: Path) -> None:
    _with_values(folder / "clean-b.safetensors", folder / "b.safetensors", KEY, 7, math.nan)
    mergelang.run(folder / "r.merge", cache_dir=folder / "cache", nan="keep")
    with (
        SafetensorsReader(folder / "a.safetensors") as a,
        SafetensorsReader(folder / "b.safetensors") as b,
        SafetensorsReader(folder / "out.safetensors") as out,
    ):
        merged = out.get(KEY).view(-1)
        expected = (1 - 0.25) * a.get(KEY) + 0.25 * b.get(KEY)
        assert torch.isnan(merged[7])
        assert torch.equal(merged[:7], expected.view(-1)[:7])
        assert torch.equal(merged[8:], expected.view(-1)[8:])


def test_a_nan_in_a_key_that_is_not_merged_is_copied(folder: Path) -> None:
    key = "cond_stage_model.transformer.text_model.embeddings.position_ids"
    make_checkpoint(folder / "e.safetensors", "sd1", scale=0.125, seed=3, dtype="F32", ema=True)
    with SafetensorsReader(folder / "e.safetensors") as reader:
        ema_key = next(
            k
            for k in reader.keys()  # noqa: SIM118
            if k.startswith("model_ema.") and reader.info(k).dtype == "F32"
        )
    _with_values(folder / "e.safetensors", folder / "b.safetensors", ema_key, 0, math.nan)
    (folder / "r.merge").write_text(
        'model a = "b.safetensors"\nmodel b = "a.safetensors"\n'
        'save weighted_sum(a, b, alpha=0.25) to "out.safetensors" as fp32 with ema=keep\n',
        encoding="utf-8",
    )
    mergelang.run(folder / "r.merge", cache_dir=folder / "cache")
    with SafetensorsReader(folder / "out.safetensors") as out:
        assert torch.isnan(out.get(ema_key).view(-1)[0])
        assert key in out


OVERFLOW = (
    'model a = "a.safetensors"\nmodel b = "b.safetensors"\n'
    'save weighted_sum(a, b, alpha=0.25) * 1e30 * 1e30 to "out.safetensors" as fp16\n'
)


def test_an_output_that_overflows_its_dtype_is_refused_and_nothing_is_written(
    folder: Path,
) -> None:
    (folder / "b.safetensors").write_bytes((folder / "clean-b.safetensors").read_bytes())
    (folder / "r.merge").write_text(OVERFLOW, encoding="utf-8")
    with pytest.raises(CheckpointError) as caught:
        mergelang.run(folder / "r.merge", cache_dir=folder / "cache", workers=1)
    (diag,) = caught.value.diagnostics
    assert diag.code == "non-finite-output"
    assert diag.path == str(folder / "out.safetensors")
    assert diag.key is not None and diag.key.startswith(("model.", "cond_stage_model."))
    assert "NaN or infinite values" in diag.message
    assert "torch.float16" in diag.message
    assert diag.hint is not None and "--nan keep" in diag.hint
    assert not (folder / "out.safetensors").exists()
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []


def test_nan_keep_writes_an_overflowing_output_as_it_is(folder: Path) -> None:
    (folder / "b.safetensors").write_bytes((folder / "clean-b.safetensors").read_bytes())
    (folder / "r.merge").write_text(OVERFLOW, encoding="utf-8")
    mergelang.run(folder / "r.merge", cache_dir=folder / "cache", nan="keep")
    with SafetensorsReader(folder / "out.safetensors") as reader:
        tensor = reader.get(KEY)
    assert tensor.dtype == torch.float16
    assert not bool(torch.isfinite(tensor).any())


def _add_difference(folder: Path, alpha: str, bad: dict[str, float]) -> Path:
    """``add_difference(a, b, c)`` with element 7 of KEY set to ``bad[name]`` in those models."""
    for seed, name in enumerate(("b", "c"), start=2):
        clean = folder / f"clean-{name}.safetensors"
        if not clean.exists():
            make_checkpoint(clean, "sd1", scale=0.125, seed=seed, dtype="F32")
        if name in bad:
            _with_values(clean, folder / f"{name}.safetensors", KEY, 7, bad[name])
        else:
            (folder / f"{name}.safetensors").write_bytes(clean.read_bytes())
    (folder / "r.merge").write_text(
        'model a = "a.safetensors"\nmodel b = "b.safetensors"\nmodel c = "c.safetensors"\n'
        f'save add_difference(a, b, c, alpha={alpha}) to "out.safetensors" as fp32\n',
        encoding="utf-8",
    )
    return folder / "r.merge"


@pytest.mark.parametrize(
    ("alpha", "bad", "named"),
    [
        ("0.5", {"c": math.nan}, "c"),
        ("{IN04: 0, default: 1}", {"c": math.inf}, "c"),  # 0 * inf is NaN: still seen
        ("0.5", {"b": math.inf, "c": math.inf}, "b"),  # inf - inf: the first input named
        ("-2", {"b": -math.inf}, "b"),
    ],
)
def test_an_input_seen_through_the_result_is_refused_by_name(
    folder: Path, alpha: str, bad: dict[str, float], named: str
) -> None:
    recipe = _add_difference(folder, alpha, bad)
    with pytest.raises(CheckpointError) as caught:
        mergelang.run(recipe, cache_dir=folder / "cache", workers=1)
    (diag,) = caught.value.diagnostics
    assert (diag.code, diag.key) == ("non-finite", KEY)
    assert diag.path is not None and diag.path.endswith(f"{named}.safetensors")
    assert "(1 in the part being merged)" in diag.message
    assert not (folder / "out.safetensors").exists()


def test_a_result_that_overflows_from_finite_inputs_is_the_output_s_error(folder: Path) -> None:
    recipe = _add_difference(folder, "1e300", {})  # inf once in float32
    with pytest.raises(CheckpointError) as caught:
        mergelang.run(recipe, cache_dir=folder / "cache", workers=1)
    (diag,) = caught.value.diagnostics
    assert diag.code == "non-finite-output"
    assert diag.path == str(folder / "out.safetensors")
