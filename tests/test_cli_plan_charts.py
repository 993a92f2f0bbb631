"""``mergelang plan`` draws each step's per-block weights as the U after the plan."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mergelang.arch import SD1
from mergelang.cli import main
from mergelang.presets import BUILTIN_PRESETS
from mergelang.testing import make_checkpoint

RECIPE = """\
model a = "a.safetensors"
model b = "b.safetensors"

mixed = weighted_sum(a, b, alpha=GRAD_V)
save mixed to "mixed.safetensors"
save a * {IN04: 0.75, default: 1} to "study.safetensors"
save weighted_sum(a, b, alpha=0.5) to "flat.safetensors"
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    make_checkpoint(tmp_path / "a.safetensors", "sd1", seed=1)
    make_checkpoint(tmp_path / "b.safetensors", "sd1", seed=2)
    (tmp_path / "r.merge").write_text(RECIPE, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "120")
    monkeypatch.setenv("NO_COLOR", "1")
    return tmp_path


def _plan(capsys: pytest.CaptureFixture[str], *extra: str) -> list[str]:
    assert main(["plan", "r.merge", "--cache-dir", "cache", *extra]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    return captured.out.splitlines()


def _row(value: float) -> str:
    return format(round(value, 4), "g")


def test_plan_draws_the_weights_of_every_step_that_varies_by_block(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = _plan(capsys)
    titles = [line for line in lines if line.startswith("#") and line.endswith("(sd1)")]
    # GRAD_V's alpha and the study's weight on a; the flat 0.5 and scalar terms get none.
    assert len(titles) == 2
    assert any("weighted_sum alpha" in t for t in titles)
    assert any("weight of #" in t for t in titles)

    start = next(i for i, line in enumerate(lines) if "weighted_sum alpha" in line)
    chart = lines[start + 1 : start + 14]
    grad_v = BUILTIN_PRESETS["GRAD_V"].slots(SD1.scheme)
    for row in range(12):
        words = chart[row].split()
        # IN row faces OUT row: IN00 with OUT11, ..., IN11 with OUT00.
        assert words[0] == f"IN{row:02d}"
        assert words[-1] == f"OUT{11 - row:02d}"
        numbers = [w for w in words if w[0].isdigit()]
        assert numbers == [_row(grad_v[row] or 0.0), _row(grad_v[24 - row] or 0.0)]
    assert chart[12].split() == ["M00", "0"]

    study = next(i for i, line in enumerate(lines) if "weight of #" in line)
    rows = lines[study + 1 : study + 13]
    assert rows[4].split()[:1] == ["IN04"] and "0.75" in rows[4].split()
    assert all("0.75" not in r.split() for i, r in enumerate(rows) if i != 4)


def test_no_charts_leaves_the_plan_text_alone(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with_charts = _plan(capsys)
    without = _plan(capsys, "--no-charts")
    assert not any("(sd1)" in line and line.startswith("#") for line in without)
    assert with_charts[: len(without)] == without
    assert main(["plan", "r.merge", "--cache-dir", "cache", "--json"]) == 0
    json.loads(capsys.readouterr().out)  # JSON output has no charts mixed in
