"""The screenshot of the demo page that docs/page.md and docs/cookbook.md show."""

from __future__ import annotations

import struct
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHOT = ROOT / "docs" / "images" / "page-demo.png"


def test_the_demo_screenshot_is_a_small_png_the_docs_reference() -> None:
    data = SHOT.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 600 and height > width  # the whole U, taller than wide
    assert len(data) < 300_000
    for page in ("page.md", "cookbook.md"):
        text = (ROOT / "docs" / page).read_text(encoding="utf-8")
        assert "](images/page-demo.png)" in text, page
