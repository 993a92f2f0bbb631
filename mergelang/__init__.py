"""mergelang: a small language and streaming interpreter for merging Stable Diffusion checkpoints.

The public API. ``import mergelang`` stays cheap and never pulls in torch: what reads
tensors is imported on first use.

Front end (no torch): :func:`parse`, :func:`parse_file`, :func:`check`, :func:`format_recipe`,
:func:`format_text`. These are imported eagerly: ``check`` is both a module and a function,
and binding the function here keeps ``mergelang.check`` the function whatever is imported
later. Running: :func:`plan`, :func:`run` (write a recipe's outputs) and :func:`evaluate`
(one result as tensors in memory). Checkpoints: :func:`open_checkpoint`,
:func:`read_safetensors_header`, :func:`detect`, :func:`file_hashes`. Errors are
:class:`MergelangError` subclasses carrying structured :class:`Diagnostic` objects.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from mergelang._version import __version__
from mergelang.check import check
from mergelang.errors import (
    CheckpointError,
    Diagnostic,
    MergelangError,
    OutputError,
    RecipeError,
    Span,
    UsageError,
)
from mergelang.format import format_recipe, format_text
from mergelang.parser import parse, parse_file

if TYPE_CHECKING:
    from mergelang.api import evaluate, plan, run
    from mergelang.arch import detect
    from mergelang.executor import OutputResult, RunResult
    from mergelang.io.hashing import file_hashes
    from mergelang.io.readers import open_checkpoint
    from mergelang.io.safetensors_header import read_safetensors_header
    from mergelang.planned import Plan
    from mergelang.weights import BlockWeights

_LAZY: dict[str, str] = {
    "BlockWeights": "mergelang.weights",
    "open_checkpoint": "mergelang.io.readers",
    "read_safetensors_header": "mergelang.io.safetensors_header",
    "detect": "mergelang.arch",
    "file_hashes": "mergelang.io.hashing",
    "plan": "mergelang.api",
    "run": "mergelang.api",
    "evaluate": "mergelang.api",
    "Plan": "mergelang.planned",
    "RunResult": "mergelang.executor",
    "OutputResult": "mergelang.executor",
}

__all__ = [
    "BlockWeights",
    "CheckpointError",
    "Diagnostic",
    "MergelangError",
    "OutputError",
    "OutputResult",
    "Plan",
    "RecipeError",
    "RunResult",
    "Span",
    "UsageError",
    "__version__",
    "check",
    "detect",
    "evaluate",
    "file_hashes",
    "format_recipe",
    "format_text",
    "open_checkpoint",
    "parse",
    "parse_file",
    "plan",
    "read_safetensors_header",
    "run",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mergelang' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
