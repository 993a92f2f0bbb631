"""docs/presets.md lists exactly the built-in presets with their values."""

from __future__ import annotations

import re
from pathlib import Path

from weights_helpers import sd_slots

from mergelang.presets import BUILTIN_PRESETS

ROOT = Path(__file__).resolve().parents[1]


def test_the_presets_page_matches_the_built_in_table() -> None:
    text = (ROOT / "docs" / "presets.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `([^`]+)` \| ([^|]+) \| ([^|]+) \| ([^|]+) \|$", text, flags=re.M)
    assert [name for name, *_ in rows] == list(BUILTIN_PRESETS)
    for name, first, middle, last in rows:
        values = [float(v) for v in f"{first} {middle} {last}".split()]
        assert values == list(sd_slots(BUILTIN_PRESETS[name])), name
