"""Shrinking widths for fixtures while every key name stays the real one."""

from __future__ import annotations

from mergelang.arch.components import Layout

__all__ = ["conv", "linear", "norm", "scaled_width"]


def scaled_width(width: int, scale: float) -> int:
    """``width * scale`` rounded to a multiple of 8, at least 8; ``width`` itself at scale 1."""
    if scale <= 0:
        raise ValueError(f"scale must be positive, not {scale}")
    if scale == 1.0:
        return width
    return max(8, round(width * scale / 8) * 8)


def linear(out: Layout, name: str, rows: int, cols: int, *, bias: bool = True) -> None:
    out[f"{name}.weight"] = (rows, cols)
    if bias:
        out[f"{name}.bias"] = (rows,)


def conv(out: Layout, name: str, cout: int, cin: int, kernel: int) -> None:
    out[f"{name}.weight"] = (cout, cin, kernel, kernel)
    out[f"{name}.bias"] = (cout,)


def norm(out: Layout, name: str, channels: int) -> None:
    out[f"{name}.weight"] = (channels,)
    out[f"{name}.bias"] = (channels,)
