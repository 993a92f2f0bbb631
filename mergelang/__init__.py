"""mergelang: a small language and streaming interpreter for merging Stable Diffusion checkpoints.

The public API. ``import mergelang`` stays cheap and never pulls in torch: what reads
tensors is imported on first use.

Front end (no torch): :func:`parse`, :func:`parse_file`, :func:`check`, :func:`format_recipe`,
:func:`format_text`. Running: :func:`plan`, :func:`run` (write a recipe's outputs) and
:func:`evaluate` (one result as tensors in memory). Checkpoints: :func:`open_checkpoint`,
:func:`read_safetensors_header`, :func:`detect`, :func:`file_hashes`. Errors are
:class:`MergelangError` subclasses carrying structured :class:`Diagnostic` objects.

``check``, ``plan`` and ``run`` name both a function of this API and a stage package
(``mergelang/check/``, ``plan/``, ``run/``). Importing a package for the first time makes it
an attribute of its parent, so the stage packages (whose ``__init__`` files import nothing
heavy) are imported here first and the functions bound after them: the names stay the
functions whatever is imported later. Inside mergelang, stages are reached with
``from mergelang.plan.planner import ...``, never as attributes of ``mergelang``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# The stage packages first, then the API names (see the docstring).
from mergelang import check as _check_stage  # noqa: F401
from mergelang import lang as _lang_stage  # noqa: F401
from mergelang import plan as _plan_stage  # noqa: F401
from mergelang import run as _run_stage  # noqa: F401
from mergelang._version import __version__
from mergelang.api import evaluate, plan, run
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
from mergelang.lang.formatter import format_recipe, format_text
from mergelang.lang.parser import parse, parse_file

if TYPE_CHECKING:
    from mergelang.arch import detect
    from mergelang.block_weights import BlockWeights
    from mergelang.io.hashing import file_hashes
    from mergelang.io.readers import open_checkpoint
    from mergelang.io.safetensors_header import read_safetensors_header
    from mergelang.plan.plan import Plan
    from mergelang.run.executor import OutputResult, RunResult

_LAZY: dict[str, str] = {
    "BlockWeights": "mergelang.block_weights",
    "open_checkpoint": "mergelang.io.readers",
    "read_safetensors_header": "mergelang.io.safetensors_header",
    "detect": "mergelang.arch",
    "file_hashes": "mergelang.io.hashing",
    "Plan": "mergelang.plan.plan",
    "RunResult": "mergelang.run.executor",
    "OutputResult": "mergelang.run.executor",
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
