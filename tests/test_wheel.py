"""The wheel ships the grammar: build it, unpack it away from the checkout, parse a recipe."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("hatchling")
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            "-w",
            str(out),
            str(ROOT),
        ],
        check=True,
    )
    (found,) = out.glob("mergelang-*.whl")
    return found


def test_wheel_contains_grammar_and_presets(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert "mergelang/grammar/mergelang.lark" in names
    assert "mergelang/presets/mbw.tsv" in names


def test_unpacked_wheel_parses_a_recipe(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    script = (
        "import mergelang, pathlib, sys\n"
        "assert pathlib.Path(mergelang.__file__).is_relative_to(sys.argv[1]), mergelang.__file__\n"
        'r = mergelang.parse(\'model a = "a.safetensors"\\nsave a to "b.safetensors"\\n\')\n'
        "print(len(r.statements))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    result = subprocess.run(
        [sys.executable, "-c", script, str(site)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "2"
