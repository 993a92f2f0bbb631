"""Block weights as pictures: an SVG chart, shaped as the U-Net's U where the scheme has one.

:func:`weights_svg` draws one value per block. For a U-Net scheme (see
:func:`~mergelang.report.layout.u_layout`) each block is a labelled bar in its place in the U
(``IN00`` top left, the middle block at the bottom, the last output block top right) and a
line joins the bars' ends in block order, so a weight reads as the U-shaped curve people
draw by hand. Any other scheme is a plain line chart in scheme order. ``compact=True`` gives
the small, unlabelled version the comparison page puts in every cell.

Every block is a ``<g class="block">`` carrying ``data-block``, ``data-value`` and its
position (``data-x``/``data-y``, the centre of its bar's track), so tools and tests can read
a chart back without rendering it. The SVG is self-contained: no fonts, scripts or links.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

from mergelang.arch.scheme import BlockScheme
from mergelang.block_weights import BASE, BlockWeights, format_number
from mergelang.report.layout import u_layout

__all__ = ["ChartSize", "resolved_values", "weights_svg"]

BAR_COLOUR = "#4a78c2"
CHANGED_COLOUR = "#d0573f"
TRACK_COLOUR = "#e4e7ec"
LINE_COLOUR = "#1f2a3a"


@dataclass(frozen=True)
class ChartSize:
    """The measures of a chart, in SVG user units."""

    row: float
    track: float
    label: float
    value: float
    gap: float
    margin: float
    font: float

    @property
    def column(self) -> float:
        return self.label + self.track + self.value


FULL = ChartSize(row=18, track=90, label=42, value=40, gap=24, margin=8, font=11)
COMPACT = ChartSize(row=5, track=30, label=0, value=0, gap=6, margin=2, font=0)


def resolved_values(
    weights: BlockWeights, scheme: BlockScheme, *, base: float | None = None
) -> dict[str, float]:
    """``weights`` as one number per block of ``scheme`` and ``"BASE"`` (a BASE the value
    leaves unset takes ``base``; unset blocks raise :class:`WeightsError`)."""
    resolved = weights.resolve(scheme, base=0.0 if base is None else base)
    values = {name: resolved[name] for name in scheme.blocks}
    if base is not None or weights.base_for(scheme) is not None:
        values[BASE] = resolved.base
    return values


def _domain(values: Mapping[str, float]) -> tuple[float, float]:
    """The value range a chart spans: always 0..1, wider when a value lies outside."""
    numbers = list(values.values()) or [0.0]
    low, high = min(0.0, *numbers), max(1.0, *numbers)
    return low, high


def weights_svg(
    values: Mapping[str, float],
    scheme: BlockScheme,
    *,
    title: str | None = None,
    compact: bool = False,
    changed: Collection[str] = (),
) -> str:
    """An SVG chart of one value per block of ``scheme`` (``values`` may hold ``"BASE"``
    too, shown under the chart). Blocks in ``changed`` are drawn in the accent colour (the
    page marks the blocks that differ from the reference that way)."""
    size = COMPACT if compact else FULL
    blocks = {name: float(values[name]) for name in scheme.blocks if name in values}
    layout = u_layout(scheme)
    if layout is None:
        return _line_chart(blocks, scheme, size, title, changed, values.get(BASE))
    low, high = _domain(blocks)
    span = high - low

    def position(value: float) -> float:
        return (value - low) / span * size.track

    top = size.margin + (size.font + 6 if title else 0)
    width = 2 * size.margin + 3 * size.column + 2 * size.gap
    height = top + layout.rows * size.row + size.margin
    base_value = values.get(BASE)
    if base_value is not None and not compact:
        height += size.row
    parts: list[str] = []
    points: list[str] = []
    for slot in layout.slots:
        if slot.block not in blocks:
            continue
        value = blocks[slot.block]
        left = size.margin + slot.column * (size.column + size.gap)
        track_x = left + (size.label if slot.column != 2 else size.value)
        y = top + slot.row * size.row
        mid = y + size.row / 2
        zero, end = position(0.0), position(value)
        colour = CHANGED_COLOUR if slot.block in changed else BAR_COLOUR
        bar_h = size.row * 0.6
        text, shown = format_number(value), format_number(round(value, 4))
        parts.append(
            f'<g class="block" data-block={quoteattr(slot.block)} data-value="{text}" '
            f'data-x="{track_x + size.track / 2:g}" data-y="{mid:g}">'
            f"<title>{escape(slot.block)}: {text}</title>"
            f'<rect class="track" x="{track_x:g}" y="{mid - bar_h / 2:g}" '
            f'width="{size.track:g}" height="{bar_h:g}" fill="{TRACK_COLOUR}"/>'
            f'<rect class="bar" x="{track_x + min(zero, end):g}" y="{mid - bar_h / 2:g}" '
            f'width="{abs(end - zero):g}" height="{bar_h:g}" fill="{colour}"/>'
        )
        if not compact:
            if slot.column == 2:
                label_x, value_x, anchor, value_anchor = (
                    track_x + size.track + 4,
                    track_x - 4,
                    "start",
                    "end",
                )
            else:
                label_x, value_x, anchor, value_anchor = (
                    track_x - 4,
                    track_x + size.track + 4,
                    "end",
                    "start",
                )
            parts.append(
                f'<text x="{label_x:g}" y="{mid + size.font / 3:g}" text-anchor="{anchor}">'
                f"{escape(slot.block)}</text>"
                f'<text class="value" x="{value_x:g}" y="{mid + size.font / 3:g}" '
                f'text-anchor="{value_anchor}">{shown}</text>'
            )
        parts.append("</g>")
        points.append(f"{track_x + end:g},{mid:g}")
    curve = (
        f'<polyline class="curve" points="{" ".join(points)}" fill="none" '
        f'stroke="{LINE_COLOUR}" stroke-width="{1.2 if not compact else 0.6}"/>'
    )
    head = _title(title, size, width)
    foot = ""
    if base_value is not None and not compact:
        foot = (
            f'<text class="base" x="{width / 2:g}" y="{height - size.margin - 4:g}" '
            f'text-anchor="middle">BASE {format_number(base_value)}</text>'
        )
    return _svg(width, height, size, head + "".join(parts) + curve + foot, scheme, "u")


def _line_chart(
    blocks: Mapping[str, float],
    scheme: BlockScheme,
    size: ChartSize,
    title: str | None,
    changed: Collection[str],
    base_value: float | None,
) -> str:
    """A plain line chart in scheme order, for schemes without a U."""
    low, high = _domain(blocks)
    step = max(size.row / 2, 4.0)
    plot_h = size.track
    left = size.margin + (size.label if size.label else 0)
    top = size.margin + (size.font + 6 if title else 0)
    count = max(len(scheme.blocks), 1)
    width = left + count * step + size.margin + (size.value if size.value else 0)
    height = top + plot_h + size.margin + (size.font * 2 if size.font else 0)
    parts: list[str] = []
    points: list[str] = []
    for index, name in enumerate(scheme.blocks):
        if name not in blocks:
            continue
        value = blocks[name]
        x = left + (index + 0.5) * step
        y = top + plot_h - (value - low) / (high - low) * plot_h
        colour = CHANGED_COLOUR if name in changed else BAR_COLOUR
        text = format_number(value)
        parts.append(
            f'<g class="block" data-block={quoteattr(name)} data-value="{text}" '
            f'data-x="{x:g}" data-y="{y:g}"><title>{escape(name)}: {text}</title>'
            f'<circle cx="{x:g}" cy="{y:g}" r="{max(step / 4, 1):g}" fill="{colour}"/></g>'
        )
        points.append(f"{x:g},{y:g}")
    frame = (
        f'<rect x="{left:g}" y="{top:g}" width="{count * step:g}" height="{plot_h:g}" '
        f'fill="none" stroke="{TRACK_COLOUR}"/>'
    )
    labels = ""
    if size.font:
        labels = (
            f'<text x="{left - 4:g}" y="{top + size.font / 2:g}" text-anchor="end">'
            f"{format_number(high)}</text>"
            f'<text x="{left - 4:g}" y="{top + plot_h:g}" text-anchor="end">'
            f"{format_number(low)}</text>"
            f'<text x="{left:g}" y="{top + plot_h + size.font + 4:g}">'
            f"{escape(scheme.blocks[0] if scheme.blocks else '')}</text>"
            f'<text x="{left + count * step:g}" y="{top + plot_h + size.font + 4:g}" '
            f'text-anchor="end">{escape(scheme.blocks[-1] if scheme.blocks else "")}</text>'
        )
        if base_value is not None:
            labels += (
                f'<text class="base" x="{width / 2:g}" y="{height - 4:g}" '
                f'text-anchor="middle">BASE {format_number(base_value)}</text>'
            )
    curve = (
        f'<polyline class="curve" points="{" ".join(points)}" fill="none" '
        f'stroke="{LINE_COLOUR}" stroke-width="1"/>'
    )
    body = _title(title, size, width) + frame + curve + "".join(parts) + labels
    return _svg(width, height, size, body, scheme, "line")


def _title(title: str | None, size: ChartSize, width: float) -> str:
    if not title or not size.font:
        return ""
    return (
        f'<text class="title" x="{width / 2:g}" y="{size.margin + size.font:g}" '
        f'text-anchor="middle" font-weight="bold">{escape(title)}</text>'
    )


def _svg(
    width: float, height: float, size: ChartSize, body: str, scheme: BlockScheme, shape: str
) -> str:
    font = f' font-family="sans-serif" font-size="{size.font:g}"' if size.font else ""
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="weights-chart" '
        f'data-scheme="{escape(scheme.name)}" data-shape="{shape}" '
        f'width="{width:g}" height="{height:g}" viewBox="0 0 {width:g} {height:g}"{font}>'
        f"{body}</svg>"
    )
