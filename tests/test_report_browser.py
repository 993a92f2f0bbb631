"""The comparison page in a real browser: headless Chromium (Debian's ``chromium``).

The page is opened with a probe script appended that, once everything has loaded, reads the
live layout (each cell's bounding box), whether every image decoded, and what a click and the
arrow keys do, and writes it into the DOM as JSON; ``--dump-dom`` hands the DOM back. Skipped
when no Chromium is installed (``apt-get install -y chromium``).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from report_helpers import make_study
from run_helpers import shared_models

from mergelang.report.comparison import build_comparison
from mergelang.report.html import render_html
from mergelang.report.sources import output_paths

CHROMIUM = next(
    (found for name in ("chromium", "chromium-browser") if (found := shutil.which(name))), None
)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")

PROBE = """
<script>
window.addEventListener('load', function () {
  const box = function (element) {
    const r = element.getBoundingClientRect();
    return {left: r.left, top: r.top, right: r.right, bottom: r.bottom, width: r.width};
  };
  const cells = {};
  document.querySelectorAll('.cell[data-block]').forEach(function (cell) {
    cells[cell.dataset.block] = box(cell);
  });
  const reference = box(document.querySelector('.cell[data-reference]'));
  const images = Array.from(document.querySelectorAll('.images img')).map(function (img) {
    return [img.dataset.file, img.complete && img.naturalWidth > 0];
  });
  const thumb = document.querySelector('.cell[data-block="IN00"] img[data-seed="2"]');
  const thumbWidth = box(thumb).width;
  thumb.click();
  setTimeout(function () {
    const lightbox = document.getElementById('lightbox');
    const big = lightbox.querySelector('img');
    const opened = {open: lightbox.classList.contains('open'), width: box(big).width,
                    src: big.getAttribute('src')};
    document.dispatchEvent(new KeyboardEvent('keydown', {key: 'ArrowDown'}));
    const next = {current: document.querySelector('.cell.current').dataset.block,
                  src: big.getAttribute('src')};
    document.dispatchEvent(new KeyboardEvent('keydown', {key: 'Escape'}));
    const closed = !lightbox.classList.contains('open');
    const probe = document.createElement('pre');
    probe.id = 'probe';
    probe.textContent = JSON.stringify({cells: cells, reference: reference, images: images,
      thumbWidth: thumbWidth, opened: opened, next: next, closed: closed});
    document.body.appendChild(probe);
  }, 200);
});
</script>
"""


def _dump_dom(page: Path, profile: Path) -> str:
    assert CHROMIUM is not None
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--window-size=1600,2400",
        "--virtual-time-budget=5000",
        "--dump-dom",
        page.as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_the_u_in_a_real_browser(tmp_path_factory: pytest.TempPathFactory) -> None:
    models = shared_models(tmp_path_factory, ["a"])
    folder = tmp_path_factory.mktemp("page-browser")
    recipe = make_study(folder, models)
    outputs, problems = output_paths([recipe])
    assert problems == []
    comparison = build_comparison(outputs, folder / "renders", cache_dir=folder / "cache")
    page = folder / "pages" / "study.html"
    page.parent.mkdir()
    html = render_html(comparison, page)
    page.write_text(html.replace("</body>", PROBE + "</body>"), encoding="utf-8")

    dom = _dump_dom(page, folder / "profile")
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, flags=re.S)
    assert found is not None, dom[-2000:]
    probe = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    cells = probe["cells"]
    assert len(cells) == 25
    in00, m00, out11 = cells["IN00"], cells["M00"], cells["OUT11"]
    # IN00 top left, OUT11 top right, on one row; M00 below everything, in the middle.
    assert in00["top"] == out11["top"] == min(c["top"] for c in cells.values())
    assert in00["left"] == min(c["left"] for c in cells.values())
    assert out11["right"] == max(c["right"] for c in cells.values())
    assert m00["top"] == max(c["top"] for c in cells.values())
    assert m00["top"] > cells["IN11"]["bottom"] - 1
    middle = (in00["left"] + out11["right"]) / 2
    assert abs((m00["left"] + m00["right"]) / 2 - middle) < 2
    # Each arm is one column: the left arm goes down, the right arm comes up.
    assert [cells[f"IN{i:02d}"]["left"] for i in range(12)] == [in00["left"]] * 12
    tops = [cells[f"IN{i:02d}"]["top"] for i in range(12)]
    assert tops == sorted(tops) and len(set(tops)) == 12
    assert [cells[f"OUT{i:02d}"]["top"] for i in range(12)] == tops[::-1]
    # The reference sits at the top of the U's middle.
    assert probe["reference"]["top"] == in00["top"]
    assert (
        in00["right"] <= probe["reference"]["left"] < probe["reference"]["right"] <= out11["left"]
    )
    # Every matched image loaded: 25 outputs and the reference, 2 seeds each.
    assert len(probe["images"]) == 52
    assert all(loaded for _, loaded in probe["images"]), probe["images"]
    # A click enlarges the image; the down arrow shows the same seed of the next block.
    assert probe["opened"]["open"] is True
    assert probe["opened"]["src"] == (folder / "renders" / "000-2.png").as_uri()
    assert probe["opened"]["width"] > 3 * probe["thumbWidth"]
    assert probe["next"] == {
        "current": "IN01",
        "src": (folder / "renders" / "001-2.png").as_uri(),
    }
    assert probe["closed"] is True
