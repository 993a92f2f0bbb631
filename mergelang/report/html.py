"""A :class:`~mergelang.report.comparison.Comparison` as one self-contained HTML page.

The page needs no network: its style and script are inline, the charts are inline SVG, and
the images are referenced by paths relative to the page (or embedded as ``data:`` URLs with
``embed=True``, for a page to send on its own). Each output is a ``<section class="cell">``
placed on a CSS grid (``grid-row``/``grid-column`` from the comparison), carrying
``data-output`` and ``data-block``; its images are one column per seed. Clicking an image
enlarges it; the arrow keys move between blocks (in the enlarged view: the same seed of the
next block), Escape closes it. Problems and unmatched files are listed at the end.
"""

from __future__ import annotations

import base64
import mimetypes
import os
from dataclasses import replace
from html import escape
from pathlib import Path
from urllib.parse import quote

from mergelang.block_weights import format_number
from mergelang.report.charts import weights_svg
from mergelang.report.comparison import Cell, Comparison
from mergelang.report.matching import ImageMatch

__all__ = ["render_html"]

STYLE = """
body { font-family: system-ui, sans-serif; margin: 16px; color: #1f2a3a; background: #f6f7f9; }
h1 { font-size: 20px; margin: 0 0 4px; }
.summary { color: #555; margin: 0 0 16px; }
.board { display: grid; gap: 10px; align-items: start; }
.cell { background: #fff; border: 1px solid #d7dbe2; border-radius: 6px; padding: 6px; }
.cell.current { outline: 3px solid #d0573f; }
.cell h2 { font-size: 13px; margin: 0 0 4px; font-weight: 600; word-break: break-all; }
.cell .meta { display: flex; gap: 8px; align-items: center; font-size: 12px; }
.cell .diff { color: #d0573f; font-variant-numeric: tabular-nums; }
.reference { border-color: #4a78c2; }
.images { display: grid; grid-auto-flow: column; grid-auto-columns: max-content;
  justify-content: start; gap: 4px; margin-top: 4px; }
figure { margin: 0; text-align: center; font-size: 11px; color: #555; }
figure img { display: block; width: 96px; height: auto; cursor: zoom-in; border-radius: 3px; }
.missing { width: 96px; height: 96px; display: flex; align-items: center;
  justify-content: center; background: #eceef2; color: #888; font-size: 11px; }
.label { font-weight: 600; font-size: 13px; align-self: center; }
#lightbox { position: fixed; inset: 0; background: rgba(10, 12, 16, .88); display: none;
  align-items: center; justify-content: center; flex-direction: column; z-index: 10; }
#lightbox.open { display: flex; }
#lightbox img { height: 86vh; width: auto; max-width: 92vw; object-fit: contain; }
#lightbox p { color: #eee; margin: 8px 0 0; }
.problems { margin-top: 24px; font-size: 13px; }
.problems li { margin: 2px 0; }
"""

SCRIPT = """
(function () {
  const cells = Array.from(document.querySelectorAll('.cell[data-order]'))
    .sort((a, b) => Number(a.dataset.order) - Number(b.dataset.order));
  const box = document.getElementById('lightbox');
  const big = box.querySelector('img');
  const caption = box.querySelector('p');
  let current = -1;
  let seed = null;
  function show(img) {
    big.src = img.src;
    seed = img.dataset.seed;
    caption.textContent = img.alt;
    box.classList.add('open');
  }
  function select(index) {
    if (!cells.length) return;
    index = Math.max(0, Math.min(cells.length - 1, index));
    if (current >= 0) cells[current].classList.remove('current');
    current = index;
    const cell = cells[current];
    cell.classList.add('current');
    cell.scrollIntoView({block: 'nearest', inline: 'nearest'});
    if (box.classList.contains('open')) {
      const img = cell.querySelector('img[data-seed="' + seed + '"]') || cell.querySelector('img');
      if (img) show(img);
    }
  }
  document.querySelectorAll('.images img').forEach(function (img) {
    img.addEventListener('click', function () {
      const cell = img.closest('.cell');
      const index = cells.indexOf(cell);
      if (index >= 0) select(index);
      show(img);
    });
  });
  box.addEventListener('click', function () { box.classList.remove('open'); });
  document.addEventListener('keydown', function (event) {
    if (event.key === 'ArrowDown' || event.key === 'ArrowRight') {
      select(current + 1); event.preventDefault();
    } else if (event.key === 'ArrowUp' || event.key === 'ArrowLeft') {
      select(current < 0 ? 0 : current - 1); event.preventDefault();
    } else if (event.key === 'Escape') {
      box.classList.remove('open');
    }
  });
})();
"""


def _source(image: Path, page_dir: Path, embed: bool) -> str:
    if embed:
        kind = mimetypes.guess_type(image.name)[0] or "application/octet-stream"
        data = base64.b64encode(image.read_bytes()).decode("ascii")
        return f"data:{kind};base64,{data}"
    relative = os.path.relpath(image.resolve(), page_dir.resolve())
    return quote(Path(relative).as_posix())


def _images(
    images: dict[int | None, ImageMatch],
    seeds: list[int | None],
    name: str,
    page_dir: Path,
    embed: bool,
) -> str:
    parts: list[str] = []
    for seed in seeds or [None]:
        label = "seed ?" if seed is None else f"seed {seed}"
        match = images.get(seed)
        if match is None:
            parts.append(f'<figure><div class="missing">no image</div>{label}</figure>')
            continue
        src = _source(match.path, page_dir, embed)
        alt = f"{name}, {label}"
        parts.append(
            f'<figure><img src="{escape(src)}" alt="{escape(alt)}" '
            f'data-seed="{"" if seed is None else seed}" data-file="{escape(match.path.name)}" '
            f'title="{escape(match.path.name)} (matched by {escape(match.how)})">'
            f"<figcaption>{label}</figcaption></figure>"
        )
    return '<div class="images">' + "".join(parts) + "</div>"


def _signed(delta: float) -> str:
    text = format_number(round(delta, 4))
    return text.replace("-", "−") if delta < 0 else "+" + text


def _cell_html(cell: Cell, comparison: Comparison, page_dir: Path, embed: bool) -> str:
    output = cell.output
    scheme = comparison.scheme
    chart = ""
    if output.weights is not None and scheme is not None:
        chart = weights_svg(output.weights, scheme, compact=True, changed=output.changed)
    if output.weights is None:
        diff = "weights unknown"
    elif not output.changed:
        diff = "same as the reference"
    else:
        items = [f"{name} {_signed(delta)}" for name, delta in output.changed.items()]
        diff = ", ".join(items if len(items) <= 4 else [*items[:4], f"{len(items) - 4} more"])
    block = f' data-block="{escape(cell.block)}"' if cell.block else ""
    return (
        f'<section class="cell" data-output="{escape(output.name)}"{block} '
        f'data-order="{cell.order}" '
        f'style="grid-row: {cell.row + 1}; grid-column: {cell.column + 1}">'
        f"<h2>{escape(output.name)}</h2>"
        f'<div class="meta">{chart}<span class="diff">{escape(diff)}</span></div>'
        f"{_images(cell.images, comparison.seeds, output.name, page_dir, embed)}</section>"
    )


def _reference_html(comparison: Comparison, page_dir: Path, embed: bool, style: str) -> str:
    ref = comparison.reference
    if ref is None:
        return ""
    hash_text = f" · AutoV2 {ref.autov2}" if ref.autov2 else ""
    return (
        f'<section class="cell reference" data-output="{escape(ref.stem)}" '
        f'data-reference="true" style="{style}">'
        f"<h2>reference: {escape(ref.stem)}</h2>"
        f'<div class="meta"><span>the unmodified model{escape(hash_text)}</span></div>'
        f"{_images(comparison.reference_images, comparison.seeds, ref.stem, page_dir, embed)}"
        "</section>"
    )


def _problems_html(comparison: Comparison) -> str:
    items: list[str] = []
    items += [f"<li>{escape(p)}</li>" for p in comparison.problems]
    items += [
        f'<li class="unmatched">{escape(u.path.name)}: {escape(u.reason)}</li>'
        for u in comparison.unmatched
    ]
    if comparison.without_images:
        names = ", ".join(comparison.without_images)
        items.append(f'<li class="without-images">outputs without images: {escape(names)}</li>')
    if not items:
        return ""
    return f'<section class="problems"><h2>Not shown</h2><ul>{"".join(items)}</ul></section>'


def render_html(comparison: Comparison, page: Path, *, embed: bool = False) -> str:
    """The page's HTML; image paths are made relative to ``page``'s folder."""
    page_dir = page.parent
    seeds = ", ".join("?" if s is None else str(s) for s in comparison.seeds) or "none"
    arch = comparison.architecture.title if comparison.architecture is not None else "unknown"
    summary = (
        f"{len(comparison.cells)} outputs ({escape(arch)}), {comparison.image_count()} images, "
        f"seeds {escape(seeds)}"
    )
    parts: list[str] = []
    if comparison.shape == "u":
        columns = "repeat(3, max-content)"
        ref_style = "grid-row: 1; grid-column: 2"
        parts.append(_reference_html(comparison, page_dir, embed, ref_style))
        parts += [_cell_html(c, comparison, page_dir, embed) for c in comparison.cells]
    else:
        columns = f"max-content repeat({comparison.columns}, max-content)"
        ref_style = f"grid-row: 1; grid-column: 1 / span {comparison.columns + 1}"
        reference = _reference_html(comparison, page_dir, embed, ref_style)
        head_row = 2
        parts.append(reference)
        for index, label in enumerate(comparison.column_labels):
            parts.append(
                f'<div class="label" style="grid-row: {head_row}; grid-column: {index + 2}">'
                f"{escape(label)}</div>"
            )
        for index, label in enumerate(comparison.row_labels):
            parts.append(
                f'<div class="label" style="grid-row: {index + head_row + 1}; grid-column: 1">'
                f"{escape(label)}</div>"
            )
        parts += [_cell_html(c, comparison, page_dir, embed) for c in _shift(comparison)]
    board = (
        f'<main class="board" data-shape="{comparison.shape}" '
        f'style="grid-template-columns: {columns}">{"".join(parts)}</main>'
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(comparison.title)}</title><style>{STYLE}</style></head><body>"
        f'<h1>{escape(comparison.title)}</h1><p class="summary">{summary}</p>'
        f"{board}{_problems_html(comparison)}"
        '<div id="lightbox" role="dialog"><img alt=""><p></p></div>'
        f"<script>{SCRIPT}</script></body></html>\n"
    )


def _shift(comparison: Comparison) -> list[Cell]:
    """Grid cells moved past the reference row, the column-label row and the label column."""
    return [replace(c, row=c.row + 2, column=c.column + 1) for c in comparison.cells]
