"""Seeing merges: block-weight charts and the page that compares a sweep's images.

- :mod:`~mergelang.report.layout`: where each block sits in the U-Net's U.
- :mod:`~mergelang.report.charts`: block weights as SVG (:func:`weights_svg`).
- :mod:`~mergelang.report.terminal`: the same U drawn with rich (:func:`weights_text`).
- :mod:`~mergelang.report.pnginfo`: what a PNG says about its model (A1111, ComfyUI).
- :mod:`~mergelang.report.matching`: images matched to models by hash, name or file name.
- :mod:`~mergelang.report.outputs`: an output's hashes, architecture and weights, from its
  header and embedded recipe.
- :mod:`~mergelang.report.comparison` and :mod:`~mergelang.report.html`: the page.

Nothing here imports torch.
"""

from __future__ import annotations

from mergelang.report.charts import resolved_values, weights_svg
from mergelang.report.layout import Slot, ULayout, u_layout
from mergelang.report.terminal import weights_text

__all__ = ["Slot", "ULayout", "resolved_values", "u_layout", "weights_svg", "weights_text"]
