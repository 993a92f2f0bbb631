"""``mergelang show`` draws the block weights of a file made by a mergelang recipe."""

from __future__ import annotations

from pathlib import Path

import pytest
from run_helpers import shared_models

import mergelang
from mergelang.cli import main


def test_show_draws_the_weights_of_a_merge(
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MERGELANG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COLUMNS", "120")
    models = shared_models(tmp_path_factory, ["a", "b"])
    recipe = tmp_path / "r.merge"
    recipe.write_text(
        f'model a = "{models / "a.safetensors"}"\nmodel b = "{models / "b.safetensors"}"\n'
        'save weighted_sum(a, b, alpha=GRAD_V) to "out.safetensors"\n',
        encoding="utf-8",
    )
    mergelang.run(recipe, cache_dir=tmp_path / "cache")
    assert main(["show", str(tmp_path / "out.safetensors"), "--no-hashes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    start = lines.index("block weights (weighted_sum.alpha)")
    assert lines[start + 1].split() == ["IN00", "██████████", "1", "1", "██████████", "OUT11"]
    assert lines[start + 12].split() == ["IN11", "▉", "0.0833", "0.0833", "█", "OUT00"]
    assert lines[start + 13].split() == ["M00", "0"]
    # A model that no recipe made has no chart.
    assert main(["show", str(models / "a.safetensors"), "--no-hashes"]) == 0
    assert "block weights" not in capsys.readouterr().out
