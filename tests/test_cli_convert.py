"""``mergelang convert``: reading INPUT, writing OUT, refusing to overwrite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mergelang.cli import main
from mergelang.testing import make_checkpoint

MB = "a = __A__ + __B__, 0.5, fp16\n"
MB_OUT = (
    "# run with: --set A=PATH --set B=PATH\nmodel a_2 = $A\nmodel b = $B\n\n"
    'a = weighted_sum(a_2, b, alpha=0.5)\nsave a to "a.ckpt" as fp16\n'
)


def test_stdout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "r.txt"
    source.write_text(MB)
    assert main(["convert", str(source)]) == 0
    assert capsys.readouterr().out == MB_OUT


def test_output_file_and_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "r.txt"
    source.write_text(MB)
    target = tmp_path / "sub" / "r.merge"
    assert main(["convert", "--from", "merge-board", str(source), "-o", str(target)]) == 0
    assert target.read_text() == MB_OUT
    target.write_text("old\n")
    assert main(["convert", str(source), "-o", str(target)]) == 1
    assert "--force" in capsys.readouterr().err
    assert target.read_text() == "old\n"
    assert main(["convert", str(source), "-o", str(target), "--force"]) == 0
    assert target.read_text() == MB_OUT
    assert main(["fmt", "--check", str(target)]) == 0


def test_error_exit_and_location(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "lines.txt"
    source.write_text("O=x, IN_A_99=1\n")
    target = tmp_path / "out.merge"
    assert main(["convert", "--from", "mbw-each", str(source), "-o", str(target)]) == 1
    assert f"{source}:1:6: error: unknown block key 'IN_A_99'" in capsys.readouterr().err
    assert not target.exists()


def test_safetensors_metadata(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = {
        "type": "sd-webui-supermerger",
        "model_a": "a",
        "model_b": "b",
        "mode": "Weight sum",
        "mbw": False,
        "base_alpha": 0.25,
        "calcmode": "normal",
    }
    merged = make_checkpoint(
        tmp_path / "m.safetensors",
        "sd1",
        scale=0.0625,
        metadata={"sd_merge_recipe": json.dumps(recipe)},
    )
    assert main(["convert", str(merged)]) == 0
    assert "merged = weighted_sum(model_a, model_b, alpha=0.25)\n" in capsys.readouterr().out


def test_unknown_format_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["convert", "--from", "nope", "x"]) == 2
