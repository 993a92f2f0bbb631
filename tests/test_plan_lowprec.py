"""``mergelang plan`` for low-precision outputs: the precision of each class of output keys
of a mixed-precision merge, and the exact size of scaled fp8 and GGUF files, both checked
against the files the run then writes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from run_helpers import load, save_tensors, shared_models, write_recipe

from mergelang.cli import main

gguf = pytest.importorskip("gguf")

FLOATS = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}
CODES = {
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.float8_e4m3fn: "F8_E4M3",
    torch.int64: "I64",
}


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MERGELANG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("NO_COLOR", "1")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An fp8 checkpoint (matrices in fp8, the rest float32) and a bf16 one."""
    models = shared_models(tmp_path_factory, ("a", "b"))
    folder = tmp_path_factory.mktemp("lowprec-plan")
    fp8: dict[str, torch.Tensor] = {}
    for key, tensor in load(models / "a.safetensors").items():
        if not tensor.is_floating_point():
            fp8[key] = tensor
        elif tensor.dim() >= 2:
            fp8[key] = tensor.float().to(torch.float8_e4m3fn)
        else:
            fp8[key] = tensor.float()
    bf16 = {
        key: tensor.to(torch.bfloat16) if tensor.is_floating_point() else tensor
        for key, tensor in load(models / "b.safetensors").items()
    }
    return {
        "fp8": save_tensors(folder / "fp8.safetensors", fp8),
        "bf16": save_tensors(folder / "bf16.safetensors", bf16),
    }


def key_class(key: str, code: str, shape: tuple[int, ...]) -> str:
    """The documented classes (docs/io.md), written again."""
    if code not in FLOATS:
        return "integers and bools"
    if len(shape) < 2:
        return "1-D and scalars (norms, biases)"
    return "embeddings" if "embedding" in key.lower() else "weights of 2+ dimensions"


ORDER = [
    "weights of 2+ dimensions",
    "embeddings",
    "1-D and scalars (norms, biases)",
    "integers and bools",
]


def precision_line(stored: dict[str, tuple[str, tuple[int, ...], str]]) -> str:
    """The expected ``precision:`` line from each key's (dtype, shape, stored precision)."""
    classes: dict[str, dict[str, int]] = {}
    for key, (code, shape, precision) in stored.items():
        counts = classes.setdefault(key_class(key, code, shape), {})
        counts[precision] = counts.get(precision, 0) + 1
    parts = []
    for name in ORDER:
        if name not in classes:
            continue
        ranked = sorted(classes[name].items(), key=lambda kv: (-kv[1], kv[0]))
        if len(ranked) == 1:
            parts.append(f"{name}: {ranked[0][0]}")
        else:
            shown = ", ".join(f"{p} ({n} key{'s' if n != 1 else ''})" for p, n in ranked)
            parts.append(f"{name}: {shown}")
    return "    precision: " + "; ".join(parts)


def plan(recipe: Path, capsys: pytest.CaptureFixture[str]) -> tuple[str, dict[str, Any]]:
    assert main(["plan", str(recipe)]) == 0
    text = capsys.readouterr().out
    assert main(["plan", str(recipe), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert isinstance(data, dict)
    return text, data


def run(recipe: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(recipe)]) == 0
    capsys.readouterr()


def mix(tmp_path: Path, files: dict[str, Path], save: str) -> Path:
    return write_recipe(
        tmp_path,
        f'model f = "{files["fp8"]}"\nmodel b = "{files["bf16"]}"\n'
        f"save weighted_sum(f, b, alpha=0.5) to {save}\n",
    )


def test_an_fp8_save_of_fp8_and_bf16_inputs_states_each_key_classs_precision(
    tmp_path: Path, files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = mix(tmp_path, files, '"mix.safetensors" as fp8')
    text, data = plan(recipe, capsys)
    run(recipe, capsys)
    written = load(tmp_path / "mix.safetensors")
    stored = {key: (CODES[t.dtype], tuple(t.shape), CODES[t.dtype]) for key, t in written.items()}
    expected = precision_line(stored)
    assert expected in text.splitlines()
    assert "weights of 2+ dimensions: F8_E4M3" in expected
    assert "1-D and scalars (norms, biases): F8" not in expected
    (output,) = data["outputs"]
    matrices = [k for k, (c, s, _) in stored.items() if key_class(k, c, s) == ORDER[0]]
    assert output["precision"][ORDER[0]] == {"F8_E4M3": len(matrices)}


def test_a_plain_fp16_save_has_no_precision_line(
    tmp_path: Path, files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    text, _ = plan(mix(tmp_path, files, '"mix.safetensors" as fp16'), capsys)
    assert "precision:" not in text


def gguf_stored(path: Path) -> dict[str, tuple[str, tuple[int, ...], str]]:
    """Each tensor of a GGUF file: its dtype as mergelang laid it out (float32 for every
    float, the run's own integer type otherwise), its shape, and its GGML type."""
    reader = gguf.GGUFReader(str(path))
    found = {}
    for tensor in reader.tensors:
        shape = tuple(reversed([int(d) for d in tensor.shape]))
        kind = tensor.tensor_type.name
        code = kind if kind.startswith("I") else "F32"
        found[tensor.name] = (code, shape, kind)
    return found


@pytest.mark.parametrize("quant", ["q8_0", "q4_k"])
def test_a_gguf_save_states_precisions_and_its_exact_size(
    tmp_path: Path, files: dict[str, Path], capsys: pytest.CaptureFixture[str], quant: str
) -> None:
    recipe = mix(tmp_path, files, f'"mix.gguf" as {quant}')
    text, data = plan(recipe, capsys)
    run(recipe, capsys)
    out = tmp_path / "mix.gguf"
    size = exact_size_planned(recipe, out, data, capsys)
    assert data["bytes_written"] <= size
    stored = gguf_stored(out)
    assert precision_line(stored) in text.splitlines()
    # At the fixtures' width no row is a whole number of 256-value K-quant blocks: those
    # matrices fall back to F16 (the streamed K-quant bytes are tested at full width in
    # test_io_gguf_stream.py).
    kinds = {"q8_0": {"Q8_0", "F32", "F16"}, "q4_k": {"F16", "F32"}}[quant]
    assert {kind for _, _, kind in stored.values()} - {"I64"} == kinds


def exact_size_planned(
    recipe: Path, out: Path, first: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> int:
    """The file's size, checked against the plans: once the inputs are hashed (the run
    cached their hashes) the plan knows the metadata the file records, and its figure is the
    file's size to the byte; before that it lacks only the metadata's bytes (the provenance
    records, under 8 KB here)."""
    size = os.path.getsize(out)
    kept = out.rename(out.with_name("kept"))
    _, again = plan(recipe, capsys)
    kept.rename(out)
    assert again["hashed"] is True
    assert again["outputs"][0]["bytes"] == size
    assert first["hashed"] is False
    assert 0 < size - first["outputs"][0]["bytes"] < 8000
    return size


def test_a_scaled_fp8_saves_exact_size_is_planned(
    tmp_path: Path, files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = mix(tmp_path, files, '"mix.safetensors" as fp8_scaled')
    text, data = plan(recipe, capsys)
    run(recipe, capsys)
    out = tmp_path / "mix.safetensors"
    exact_size_planned(recipe, out, data, capsys)
    written = load(out)
    stored = {
        key: (CODES[t.dtype], tuple(t.shape), CODES[t.dtype])
        for key, t in written.items()
        if not key.endswith(("scale_weight", "scaled_fp8"))
    }
    for key, (code, shape, _) in list(stored.items()):
        if code == "F8_E4M3":
            stored[key] = ("F32", shape, "F8_E4M3 scaled")
    assert precision_line(stored) in text.splitlines()
