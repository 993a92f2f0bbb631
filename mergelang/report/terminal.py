"""Block weights in the terminal: the U as two columns of bars, drawn with rich.

The left column is the input blocks top to bottom, the right column the output blocks bottom
to top (so ``OUT11`` faces ``IN00`` on the first line), and the middle block sits centred
under them: the same U as :func:`~mergelang.report.charts.weights_svg`. A scheme without a U
is one line per block in scheme order.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from rich.text import Text

from mergelang.arch.scheme import BlockScheme
from mergelang.block_weights import BASE, format_number
from mergelang.report.layout import u_layout

__all__ = ["weights_text"]

BAR_WIDTH = 10
_EIGHTHS = " ▏▎▍▌▋▊▉"


def _bar(value: float, high: float, width: int) -> str:
    """A bar of ``|value| / high`` of ``width`` cells, in eighths of a cell."""
    fraction = min(abs(value) / high, 1.0) if high > 0 else 0.0
    eighths = round(fraction * width * 8)
    full, rest = divmod(eighths, 8)
    text = "█" * full + (_EIGHTHS[rest] if rest else "")
    return text.ljust(width)


def _mirrored_bar(value: float, high: float, width: int) -> str:
    """A bar growing leftwards, in halves of a cell (the only partial block that hugs a
    cell's right edge is the right half)."""
    fraction = min(abs(value) / high, 1.0) if high > 0 else 0.0
    halves = round(fraction * width * 2)
    full, rest = divmod(halves, 2)
    return ("▐" * rest + "█" * full).rjust(width)


def short_number(value: float) -> str:
    """A value as charts print it: at most four decimals (the exact value is in the data)."""
    return format_number(round(value, 4))


def weights_text(
    values: Mapping[str, float],
    scheme: BlockScheme,
    *,
    title: str | None = None,
    changed: Collection[str] = (),
    width: int = BAR_WIDTH,
) -> Text:
    """A rich :class:`~rich.text.Text` of one value per block (``values`` may hold
    ``"BASE"``, printed last). Negative values are red, blocks in ``changed`` bold."""
    blocks = {name: float(values[name]) for name in scheme.blocks if name in values}
    high = max([1.0, *(abs(v) for v in blocks.values())])
    number_width = max([4, *(len(short_number(v)) for v in blocks.values())])
    name_width = max([3, *(len(n) for n in blocks)])
    out = Text()
    if title:
        out.append(title + "\n", style="bold")

    def cell(name: str | None, mirrored: bool) -> Text:
        part = Text()
        if name is None or name not in blocks:
            part.append(" " * (name_width + width + number_width + 2))
            return part
        value = blocks[name]
        style = "red" if value < 0 else "cyan"
        label_style = "bold" if name in changed else "dim"
        number = short_number(value)
        if mirrored:
            part.append(number.rjust(number_width) + " ")
            part.append(_mirrored_bar(value, high, width), style=style)
            part.append(" " + name.ljust(name_width), style=label_style)
        else:
            part.append(name.rjust(name_width) + " ", style=label_style)
            part.append(_bar(value, high, width), style=style)
            part.append(" " + number.ljust(number_width))
        return part

    layout = u_layout(scheme)
    if layout is None:
        for name in scheme.blocks:
            if name in blocks:
                out.append_text(cell(name, mirrored=False))
                out.append("\n")
    else:
        arm_rows = layout.rows - len(scheme.groups["M"])
        grid: dict[tuple[int, int], str] = {(s.column, s.row): s.block for s in layout.slots}
        for row in range(arm_rows):
            out.append_text(cell(grid.get((0, row)), mirrored=False))
            out.append("  ")
            out.append_text(cell(grid.get((2, row)), mirrored=True))
            out.rstrip()
            out.append("\n")
        half = (name_width + width + number_width + 2) // 2 + 1
        for row in range(arm_rows, layout.rows):
            out.append(" " * half)
            out.append_text(cell(grid.get((1, row)), mirrored=False))
            out.rstrip()
            out.append("\n")
    if BASE in values:
        out.append(f"BASE {short_number(values[BASE])}\n", style="dim")
    out.rstrip()
    return out
