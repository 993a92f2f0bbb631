"""``mergelang convert``: other tools' merge descriptions as mergelang recipes.

:func:`convert` takes the text and the name of its format (or ``auto``) and returns a
canonical recipe (``mergelang fmt --check`` passes on it). The formats:

- ``merge-board``: a Merge Board recipe (:mod:`mergelang.convert.merge_board`);
- ``mbw-each``: MBW Each multi-merge command lines (:mod:`mergelang.convert.mbw_each`);
- ``supermerger``: SuperMerger block-weight and elemental strings, or a merge's
  ``sd_merge_recipe`` JSON (:mod:`mergelang.convert.supermerger`);
- ``comfyui``: a ComfyUI workflow's ModelMergeFlux1 / ModelMergeSD3_2B /
  ModelMergeSD35_Large nodes (:mod:`mergelang.convert.comfyui`).

Problems are raised as :class:`~mergelang.errors.RecipeError` at their line and column in
the text converted.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from mergelang.convert.comfyui import NODES as COMFYUI_NODES
from mergelang.convert.comfyui import convert_comfyui
from mergelang.convert.mbw_each import convert_mbw_each
from mergelang.convert.merge_board import convert_merge_board
from mergelang.convert.supermerger import convert_supermerger

__all__ = ["FORMATS", "convert", "detect_format"]

FORMATS: dict[str, Callable[[str, str | None], str]] = {
    "merge-board": convert_merge_board,
    "mbw-each": convert_mbw_each,
    "supermerger": convert_supermerger,
    "comfyui": convert_comfyui,
}
"""Format name -> converter ``(text, path) -> recipe text``."""

_MBW_KEY = re.compile(
    r"(?:^|,)\s*(?:O|Model_[AB]|base_alpha|preset_weights|weight_values|(?:IN|M|OUT)_[AB]_\d\d)"
    r"\s*=",
    re.IGNORECASE,
)
_MERGE_BOARD_LINE = re.compile(r"^[^=#]+=\s*\S.* \+ .*,")


def detect_format(text: str) -> str:
    """The format ``text`` is most likely in: JSON naming a ComfyUI merge node is a ComfyUI
    workflow, other JSON SuperMerger's ``sd_merge_recipe``,
    ``KEY=VALUE`` items MBW Each, ``OUT = A + B, M`` lines Merge Board, anything else
    SuperMerger weights."""
    if text.lstrip().startswith("{"):
        if any(f'"{name}"' in text for name in COMFYUI_NODES):
            return "comfyui"
        return "supermerger"
    lines = [
        line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]
    if any(_MBW_KEY.search(line) and " + " not in line for line in lines):
        return "mbw-each"
    if any(_MERGE_BOARD_LINE.match(line) for line in lines):
        return "merge-board"
    return "supermerger"


def convert(text: str, source: str = "auto", path: str | None = None) -> str:
    """The canonical mergelang recipe for ``text`` in format ``source`` (a key of
    :data:`FORMATS`, or ``auto`` to use :func:`detect_format`)."""
    name = detect_format(text) if source == "auto" else source
    converter = FORMATS.get(name)
    if converter is None:
        raise ValueError(f"unknown format {source!r}; formats: {', '.join(FORMATS)}, auto")
    return converter(text, path)
