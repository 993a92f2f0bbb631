"""Bounded reads: a merge reads each chunked key a chunk at a time into reused buffers, so its
memory does not grow with the size of a key, and the outputs stay the formula's, bit for bit.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from run_helpers import (
    assert_same_tensors,
    declare,
    expected_output,
    load,
    shared_models,
    uniform,
    weighted_sum,
    write_recipe,
)
from safetensors.torch import save_file

import mergelang.api as api
from mergelang.errors import CheckpointError
from mergelang.io.locate import ModelLocator
from mergelang.io.readers import SafetensorsReader
from mergelang.plan.planner import PlanOptions, build_plan
from mergelang.run.executor import execute

CHUNK = 1000


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MERGELANG_CACHE", str(tmp_path / "env-cache"))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_models(tmp_path_factory, ("a", "b"))


def test_read_into_reads_the_asked_elements(tmp_path: Path) -> None:
    values = torch.arange(5000, dtype=torch.float32).reshape(50, 100)
    half = (torch.arange(777, dtype=torch.float32) / 7).to(torch.float16)
    path = tmp_path / "m.safetensors"
    save_file({"w": values, "h": half}, str(path))
    buffer = torch.full((1000,), -1.0)
    with SafetensorsReader(path) as reader:
        assert reader.read_into("w", 0, buffer[:1000]).tolist() == list(range(1000))
        got = reader.read_into("w", 4321, buffer[:679])
        assert got.data_ptr() == buffer.data_ptr()
        assert got.tolist() == [float(i) for i in range(4321, 5000)]
        part = reader.read_into("h", 700, torch.empty(77, dtype=torch.float16))
        assert torch.equal(part, half[700:])


def test_read_into_refuses_a_wrong_buffer_or_range(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_file({"w": torch.zeros(10)}, str(path))
    with SafetensorsReader(path) as reader:
        with pytest.raises(ValueError, match=r"needs a contiguous CPU buffer of torch.float32"):
            reader.read_into("w", 0, torch.empty(4, dtype=torch.float16))
        with pytest.raises(ValueError, match=r"elements 8\.\.12 are outside the key's 10"):
            reader.read_into("w", 8, torch.empty(4))
        with pytest.raises(CheckpointError) as caught:
            reader.read_into("nope", 0, torch.empty(1))
    assert caught.value.diagnostics[0].code == "missing-key"


def test_read_into_of_a_file_truncated_after_opening_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_file({"w": torch.arange(4096, dtype=torch.float32)}, str(path))
    with SafetensorsReader(path) as reader:
        os.truncate(path, reader.header.data_offset + 4000)
        assert reader.read_into("w", 0, torch.empty(1000)).tolist() == list(range(1000))
        with pytest.raises(CheckpointError) as caught:
            reader.read_into("w", 900, torch.empty(200))
    (diag,) = caught.value.diagnostics
    assert (diag.code, diag.key) == ("input-changed", "w")
    assert diag.message == (
        "the file ended 400 bytes before the tensor's end; was it truncated after it was opened?"
    )


def test_a_chunked_merge_never_reads_a_large_key_whole(
    tmp_path: Path, models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keys larger than a chunk (merged or passed through) are read chunk by chunk, and the
    outputs are still the formula's on whole float32 tensors, bit for bit."""
    text = (
        declare(models, "a", "b")
        + 'save weighted_sum(a, b, alpha=0.3) to "out/ab.safetensors" as fp16\n'
        + 'save a to "out/a.safetensors" as fp16\n'
    )
    recipe = write_recipe(tmp_path, text)
    whole: list[tuple[str, int]] = []
    original = SafetensorsReader.get

    def get(self: SafetensorsReader, key: str) -> torch.Tensor:
        tensor = original(self, key)
        whole.append((key, tensor.numel()))
        return tensor

    monkeypatch.setattr(SafetensorsReader, "get", get)
    options = PlanOptions(cache_dir=tmp_path / "cache", use_cache=False, chunk=CHUNK, workers=2)
    plan = build_plan(api.load(recipe), ModelLocator([], env={}), options)
    large = [k for k, s in plan.outputs[0].node.keys.items() if s.numel > CHUNK]
    assert len(large) > 50

    execute(plan)

    assert [entry for entry in whole if entry[1] > CHUNK] == []
    a, b = load(models / "a.safetensors"), load(models / "b.safetensors")
    expected = expected_output("sd1", [a, b], weighted_sum(uniform("sd1", 0.3)), "fp16")
    assert_same_tensors(load(tmp_path / "out" / "ab.safetensors"), expected)
    copy = {k: v.to(torch.float16) if v.is_floating_point() else v for k, v in a.items()}
    copy = {k: v for k, v in copy.items() if not k.startswith("model_ema.")}
    assert_same_tensors(load(tmp_path / "out" / "a.safetensors"), copy)
