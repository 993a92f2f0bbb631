"""mergelang: a small language and streaming interpreter for merging Stable Diffusion checkpoints.

The public API. Everything is imported lazily, so ``import mergelang`` stays cheap and never
pulls in torch until a function that reads tensors is used.

Front end (no torch): :func:`parse`, :func:`parse_file`, :func:`check`, :func:`format_recipe`,
:func:`format_text`. Checkpoints: :func:`open_checkpoint`, :func:`read_safetensors_header`,
:func:`detect`, :func:`file_hashes`. Errors are :class:`MergelangError` subclasses carrying
structured :class:`Diagnostic` objects.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from mergelang._version import __version__
from mergelang.errors import (
    CheckpointError,
    Diagnostic,
    MergelangError,
    OutputError,
    RecipeError,
    Span,
    UsageError,
)

if TYPE_CHECKING:
    from mergelang.arch import detect
    from mergelang.check import check
    from mergelang.format import format_recipe, format_text
    from mergelang.io.hashing import file_hashes
    from mergelang.io.readers import open_checkpoint
    from mergelang.io.safetensors_header import read_safetensors_header
    from mergelang.parser import parse, parse_file
    from mergelang.weights import BlockWeights

_LAZY: dict[str, str] = {
    "parse": "mergelang.parser",
    "parse_file": "mergelang.parser",
    "check": "mergelang.check",
    "format_recipe": "mergelang.format",
    "format_text": "mergelang.format",
    "BlockWeights": "mergelang.weights",
    "open_checkpoint": "mergelang.io.readers",
    "read_safetensors_header": "mergelang.io.safetensors_header",
    "detect": "mergelang.arch",
    "file_hashes": "mergelang.io.hashing",
}

__all__ = [
    "BlockWeights",
    "CheckpointError",
    "Diagnostic",
    "MergelangError",
    "OutputError",
    "RecipeError",
    "Span",
    "UsageError",
    "__version__",
    "check",
    "detect",
    "file_hashes",
    "format_recipe",
    "format_text",
    "open_checkpoint",
    "parse",
    "parse_file",
    "read_safetensors_header",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mergelang' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
