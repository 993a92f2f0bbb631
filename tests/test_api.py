"""The public API of ``import mergelang``, and the README's Python example run as written."""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import mergelang
from mergelang.testing import make_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def test_every_public_name_resolves() -> None:
    for name in mergelang.__all__:
        assert getattr(mergelang, name) is not None, name


def test_check_is_the_function_even_after_its_module_is_imported() -> None:
    check_module = importlib.import_module("mergelang.check")

    assert callable(mergelang.check)
    assert mergelang.check is check_module.check


def test_import_mergelang_does_not_import_torch() -> None:
    code = "import sys, mergelang; mergelang.parse('a = 1\\n'); print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"


def test_readme_python_example_runs(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    (block,) = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    make_checkpoint(tmp_path / "demo" / "models" / "sd15-base.safetensors", "sd1", seed=1)
    result = subprocess.run(
        [sys.executable, "-c", block],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "MERGELANG_CACHE": str(tmp_path / "cache")},
    )
    assert result.returncode == 0, result.stderr
    assert "sd1 1131" in result.stdout
    assert "weighted_sum(sd15, anime, alpha=GRAD_V, base=0.3)" in result.stdout


def test_docs_api_example_runs(tmp_path: Path) -> None:
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    (block,) = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    result = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", block],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "MERGELANG_CACHE": str(tmp_path / "cache"), "TMPDIR": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "['write'] ['merge']",
        "[('mix.safetensors', 'written')]",
        "['up-to-date']",
        "evaluate matches the formula",
    ]
