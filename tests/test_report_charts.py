"""Block-weight charts: the U's geometry read back from the SVG, the line chart, the
terminal rendering."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from rich.console import Console

from mergelang.arch import get_architecture
from mergelang.arch.scheme import BlockRule, BlockScheme
from mergelang.block_weights import BlockWeights
from mergelang.presets import BUILTIN_PRESETS
from mergelang.report import resolved_values, u_layout, weights_svg, weights_text

SVG = "{http://www.w3.org/2000/svg}"
SD = get_architecture("sd1").scheme
XL = get_architecture("sdxl").scheme
FLAT = BlockScheme(
    name="flat_test",
    title="flat",
    blocks=tuple(f"D{i:02d}" for i in range(6)),
    groups={"D": tuple(f"D{i:02d}" for i in range(6))},
    vectors=(),
    rules=(BlockRule("transformer", ("double_blocks", "{n}"), "D{n:02d}"),),
)


def _blocks(svg: str) -> dict[str, tuple[float, float, str]]:
    root = ET.fromstring(svg)
    return {
        g.get("data-block", ""): (
            float(g.get("data-x", "")),
            float(g.get("data-y", "")),
            g.get("data-value", ""),
        )
        for g in root.iter(f"{SVG}g")
        if g.get("class") == "block"
    }


@pytest.mark.parametrize("compact", [False, True])
def test_sd_chart_is_a_u(compact: bool) -> None:
    weights = BlockWeights.from_blocks({"IN04": 0.75}, default=1)
    svg = weights_svg(resolved_values(weights, SD), SD, title="IN04", compact=compact)
    blocks = _blocks(svg)
    assert list(blocks) == list(SD.blocks)
    in00, m00, out11 = blocks["IN00"], blocks["M00"], blocks["OUT11"]
    # IN00 top left, OUT11 top right on the same row, M00 below both, between them.
    assert in00[0] < m00[0] < out11[0]
    assert in00[1] == out11[1] < m00[1]
    assert m00[1] == max(y for _, y, _ in blocks.values())
    # The left arm goes down, the right arm comes up: OUT00 faces IN11.
    assert [blocks[f"IN{i:02d}"][1] for i in range(12)] == sorted(
        blocks[f"IN{i:02d}"][1] for i in range(12)
    )
    assert blocks["OUT00"][1] == blocks["IN11"][1]
    assert blocks["IN04"][2] == "0.75" and blocks["IN05"][2] == "1"
    assert ET.fromstring(svg).get("data-shape") == "u"


def test_sdxl_chart_has_19_blocks_in_a_u() -> None:
    values = {name: i / 18 for i, name in enumerate(XL.blocks)}
    blocks = _blocks(weights_svg(values, XL))
    assert len(blocks) == 19
    assert blocks["IN00"][1] == blocks["OUT08"][1] < blocks["M00"][1]
    assert blocks["IN08"][1] == blocks["OUT00"][1]
    assert blocks["IN00"][0] < blocks["M00"][0] < blocks["OUT08"][0]


def test_bars_grow_with_the_value() -> None:
    values = {name: 0.0 for name in SD.blocks} | {"IN00": 1.0, "IN01": 0.5, "OUT11": -0.5}
    root = ET.fromstring(weights_svg(values, SD))
    widths = {
        g.get("data-block"): float(
            next(r for r in g.iter(f"{SVG}rect") if r.get("class") == "bar").get("width", "")
        )
        for g in root.iter(f"{SVG}g")
        if g.get("class") == "block"
    }
    # The range is -0.5..1 over a 90-unit track: 1 is 60 units, 0.5 is 30, -0.5 is 30.
    assert widths["IN00"] == 60 and widths["IN01"] == 30 and widths["OUT11"] == 30
    assert widths["IN02"] == 0


def test_other_schemes_get_a_line_chart_in_scheme_order() -> None:
    assert u_layout(FLAT) is None
    values = {name: i / 5 for i, name in enumerate(FLAT.blocks)}
    svg = weights_svg(values, FLAT)
    assert ET.fromstring(svg).get("data-shape") == "line"
    blocks = _blocks(svg)
    xs = [blocks[name][0] for name in FLAT.blocks]
    ys = [blocks[name][1] for name in FLAT.blocks]
    assert xs == sorted(xs) and ys == sorted(ys, reverse=True)


def test_every_builtin_preset_draws_in_its_scheme() -> None:
    drawn = 0
    for name, weights in BUILTIN_PRESETS.items():
        vector = weights.vector
        scheme = XL if vector is not None and len(vector) == 19 else SD
        blocks = _blocks(weights_svg(resolved_values(weights, scheme, base=1.0), scheme))
        assert list(blocks) == list(scheme.blocks), name
        if vector is not None and len(vector) == len(scheme.blocks):
            assert [float(v) for _, _, v in blocks.values()] == list(vector), name
        drawn += 1
    assert drawn == len(BUILTIN_PRESETS) > 20


def test_terminal_u() -> None:
    weights = BlockWeights.from_blocks({"IN04": 0.75}, default=1)
    values = resolved_values(weights, SD)
    console = Console(width=100, record=True, color_system=None)
    console.print(weights_text(values, SD, title="study", changed={"IN04"}))
    lines = console.export_text().splitlines()
    assert lines[0] == "study"
    assert lines[1].split() == ["IN00", "██████████", "1", "1", "██████████", "OUT11"]
    assert lines[5].split()[:3] == ["IN04", "███████▌", "0.75"]
    assert lines[12].split() == ["IN11", "██████████", "1", "1", "██████████", "OUT00"]
    assert lines[13].split() == ["M00", "██████████", "1"]
    # M00 sits under the middle: its bar spans the centre of the line above.
    middle = len(lines[1]) // 2
    assert lines[13].index("M00") < middle < lines[13].rindex("█")
    assert lines[14] == "BASE 1"
