"""docs/presets.md's charts are generated from the built-in table and are up to date."""

from __future__ import annotations

import re
from pathlib import Path

from weights_helpers import sd_slots

from mergelang.presets import BUILTIN_PRESETS, preset_identifier
from mergelang.report.presets_page import generated_files, main

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def test_the_committed_charts_are_what_the_generator_writes_now() -> None:
    files = generated_files(DOCS)
    for path, text in files.items():
        assert path.is_file(), f"{path} is missing: run python -m mergelang.report.presets_page"
        assert path.read_text(encoding="utf-8") == text, f"{path} is out of date"
    committed = sorted((DOCS / "presets").glob("*.svg"))
    assert committed == sorted(p for p in files if p.suffix == ".svg")
    assert main([str(DOCS), "--check"]) == 0


def test_each_chart_draws_its_presets_values_in_block_order() -> None:
    names = list(BUILTIN_PRESETS)
    assert len({preset_identifier(n) for n in names}) == len(names)
    for name in names:
        svg = (DOCS / "presets" / f"{preset_identifier(name)}.svg").read_text(encoding="utf-8")
        points = re.findall(r'<g class="block" data-block="(\w+)" data-value="([^"]+)"', svg)
        by_block = {block: float(value) for block, value in points}
        order = [f"IN{i:02d}" for i in range(12)] + ["M00"] + [f"OUT{i:02d}" for i in range(12)]
        assert sorted(by_block) == sorted(order), name
        assert [by_block[b] for b in order] == list(sd_slots(BUILTIN_PRESETS[name])), name
        assert f"<title>{name}" in svg or f">{name}<" in svg, name


def test_the_gallery_shows_every_chart_once() -> None:
    text = (DOCS / "presets.md").read_text(encoding="utf-8")
    shown = re.findall(r"!\[[^\]]*\]\(presets/([\w.]+\.svg)\)", text)
    assert shown == [f"{preset_identifier(n)}.svg" for n in BUILTIN_PRESETS]


def test_check_reports_a_stale_chart(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "presets.md").write_text((DOCS / "presets.md").read_text("utf-8"), "utf-8")
    assert main([str(docs)]) == 0
    assert main([str(docs), "--check"]) == 0
    chart = docs / "presets" / "GRAD_V.svg"
    chart.write_text(chart.read_text("utf-8").replace('data-value="1"', 'data-value="0.9"', 1))
    assert main([str(docs), "--check"]) == 1
    (docs / "presets" / "OLD.svg").write_text("<svg/>", encoding="utf-8")
    assert main([str(docs)]) == 0
    assert not (docs / "presets" / "OLD.svg").exists()
    assert main([str(docs), "--check"]) == 0
