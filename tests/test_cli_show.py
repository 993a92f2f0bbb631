from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from mergelang.cli import main
from mergelang.io.writer import OutputEntry, SafetensorsWriter
from mergelang.testing import make_checkpoint, make_ckpt


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MERGELANG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("NO_COLOR", "1")


def _hashes(path: Path) -> tuple[str, str]:
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    legacy = hashlib.sha256(data[0x100000 : 0x100000 + 0x10000]).hexdigest()[:8]
    return sha, legacy


def _show_json(path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> dict[str, object]:
    assert main(["show", str(path), "--json", *extra]) == 0
    out = capsys.readouterr().out
    data = json.loads(out)
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def sd1_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("show")
    return make_checkpoint(
        folder / "sd1.safetensors", "sd1", seed=1, metadata={"modelspec.title": "base"}
    )


def test_json_fields_are_exact(sd1_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _show_json(sd1_file, capsys)
    sha, legacy = _hashes(sd1_file)
    assert list(data) == [
        "path",
        "format",
        "size",
        "architecture",
        "detection_error",
        "keys",
        "parameters",
        "roles",
        "dtypes",
        "hashes",
        "recipe",
        "metadata",
    ]
    assert data["path"] == str(sd1_file)
    assert data["format"] == "safetensors"
    assert data["size"] == sd1_file.stat().st_size
    assert data["architecture"] == {
        "name": "sd1",
        "title": "Stable Diffusion 1.x",
        "variant": "normal",
        "notes": [],
    }
    assert data["detection_error"] is None
    assert data["keys"] == 1131
    assert data["dtypes"] == {"F16": 1130, "I64": 1}
    header_len = int.from_bytes(sd1_file.read_bytes()[:8], "little")
    data_bytes = sd1_file.stat().st_size - 8 - header_len
    # every float is 2 bytes, the 77 position ids 8 bytes each
    assert data["parameters"] == (data_bytes - 77 * 8) // 2 + 77
    roles = data["roles"]
    assert isinstance(roles, dict)
    assert {r: v["keys"] for r, v in roles.items()} == {
        "unet": 686,
        "text_encoder": 197,
        "vae": 248,
    }
    assert sum(v["parameters"] for v in roles.values()) == data["parameters"]
    assert data["hashes"] == {"autov2": sha[:10], "sha256": sha, "legacy": legacy}
    assert data["recipe"] is None
    assert data["metadata"] == {"modelspec.title": "base"}


def test_text_output(sd1_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", str(sd1_file)]) == 0
    out = capsys.readouterr().out
    sha, legacy = _hashes(sd1_file)
    assert "sd1 (Stable Diffusion 1.x), normal" in out
    assert sha in out and sha[:10] in out and legacy in out
    assert "1,131" in out
    assert "text_encoder" in out and "197" in out
    assert "modelspec.title" in out and "base" in out


def test_no_hashes(sd1_file: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    data = _show_json(sd1_file, capsys, "--no-hashes")
    assert data["hashes"] is None
    assert not (tmp_path / "cache" / "hashes.json").exists()
    assert main(["show", str(sd1_file), "--no-hashes"]) == 0
    assert "sha256" not in capsys.readouterr().out


def test_hashes_are_cached(
    sd1_file: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    _show_json(sd1_file, capsys)
    cache = json.loads((tmp_path / "cache" / "hashes.json").read_text())
    assert _hashes(sd1_file)[0] in json.dumps(cache)


def test_mergelang_recipe_and_other_metadata(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = 'model a = "a.safetensors"\nsave a to "out.safetensors"\n'
    merge_recipe = {"type": "mergelang", "recipe": recipe, "primary_model_hash": "ab" * 32}
    models = {"ab" * 32: {"name": "a", "legacy_hash": "12345678", "sd_merge_recipe": None}}
    inputs = [
        {
            "name": "a",
            "file": "a.safetensors",
            "size": 10,
            "sha256": "ab" * 32,
            "autov2": "abababab" + "ab",
            "legacy": "12345678",
        }
    ]
    metadata = {
        "mergelang.recipe": recipe,
        "mergelang.version": "0.1.0",
        "mergelang.format_version": "1",
        "mergelang.inputs": json.dumps(inputs),
        "sd_merge_recipe": json.dumps(merge_recipe),
        "sd_merge_models": json.dumps(models),
        "modelspec.title": "merged",
    }
    path = make_checkpoint(tmp_path / "merged.safetensors", "sdxl", metadata=metadata)
    data = _show_json(path, capsys, "--no-hashes")
    assert data["recipe"] == {
        "tool": "mergelang",
        "text": recipe,
        "version": "0.1.0",
        "format_version": "1",
        "inputs": inputs,
        "sd_merge_recipe": merge_recipe,
        "sd_merge_models": models,
        "problems": [],
        "loop_values": {},
    }
    assert data["metadata"] == {"modelspec.title": "merged"}
    assert main(["show", str(path), "--no-hashes"]) == 0
    out = capsys.readouterr().out
    assert "made by mergelang 0.1.0" in out
    assert 'model a = "a.safetensors"' in out
    assert "input a: a.safetensors [ababababab]" in out


def test_a1111_merge_recipe(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    merge_recipe = {
        "type": "webui",
        "primary_model_hash": "cd" * 32,
        "secondary_model_hash": "ef" * 32,
        "interp_method": "Weighted sum",
        "multiplier": 0.3,
    }
    metadata = {"sd_merge_recipe": json.dumps(merge_recipe), "sd_merge_models": "{}"}
    path = make_checkpoint(tmp_path / "a1111.safetensors", "sd2", metadata=metadata)
    data = _show_json(path, capsys, "--no-hashes")
    recipe = data["recipe"]
    assert isinstance(recipe, dict)
    assert recipe["tool"] == "webui"
    assert recipe["text"] is None
    assert recipe["sd_merge_recipe"] == merge_recipe
    assert data["metadata"] == {}
    assert main(["show", str(path), "--no-hashes"]) == 0
    out = capsys.readouterr().out
    assert "made by webui" in out
    assert "interp_method: Weighted sum" in out
    assert "multiplier: 0.3" in out


def test_ckpt_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = make_ckpt(tmp_path / "model.ckpt", "sd2", ema=True, schedule=True)
    data = _show_json(path, capsys)
    assert data["format"] == "ckpt"
    architecture = data["architecture"]
    assert isinstance(architecture, dict)
    assert (architecture["name"], architecture["variant"]) == ("sd2", "normal")
    assert "DDPM schedule buffers: 12 keys" in architecture["notes"]
    roles = data["roles"]
    assert isinstance(roles, dict)
    assert {r: v["keys"] for r, v in roles.items()} == {
        "unet": 686,
        "text_encoder": 294,
        "vae": 248,
        "ema": 688,
        "schedule": 12,
    }
    assert data["dtypes"] == {"F16": 1927, "I32": 1}
    sha, _ = _hashes(path)
    hashes = data["hashes"]
    assert isinstance(hashes, dict) and hashes["sha256"] == sha


def test_unknown_architecture_is_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    path = tmp_path / "odd.safetensors"
    with SafetensorsWriter(path, [OutputEntry("encoder.weight", "F32", (2, 3))]) as writer:
        writer.write("encoder.weight", torch.zeros(2, 3))
    data = _show_json(path, capsys, "--no-hashes")
    assert data["architecture"] is None
    error = data["detection_error"]
    assert isinstance(error, str) and error.startswith("unknown checkpoint layout")
    assert data["roles"] == {"other": {"keys": 1, "parameters": 6}}
    assert main(["show", str(path), "--no-hashes"]) == 0
    captured = capsys.readouterr()
    assert "unknown" in captured.out
    assert f"{path}: warning: unknown checkpoint layout" in captured.err


def test_missing_file_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "nope.safetensors"
    assert main(["show", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}: error: no such file" in err


def test_truncated_file_is_an_error(
    sd1_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "cut.safetensors"
    path.write_bytes(sd1_file.read_bytes()[:5000])
    assert main(["show", str(path), "--json"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"{path}: error:" in captured.err


def test_show_does_not_import_torch_for_safetensors(sd1_file: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from mergelang.cli import main\n"
        f"assert main(['show', {str(sd1_file)!r}, '--json']) == 0\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["keys"] == 1131
