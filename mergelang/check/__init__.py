"""Stage 2, recipe -> checked recipe: names, arguments, types and weights, every problem at once.

:func:`check` turns a parsed :class:`~mergelang.lang.ast.Recipe` into a
:class:`CheckedRecipe` (:mod:`mergelang.check.checked_recipe`), the only thing the planner
reads. Merge Board lines are lowered to native statements first
(:func:`~mergelang.lang.merge_board.lower_merge_board`), so the checker knows only those.
Nothing here reads a checkpoint or imports torch.
"""

from __future__ import annotations

from mergelang.check.checked_recipe import (
    BoundArg,
    CheckedRecipe,
    InputRef,
    LinearCombination,
    MethodCall,
    ModelExpr,
    ModelSource,
    SaveTarget,
    Step,
    StepRef,
    Term,
)
from mergelang.check.checker import check
from mergelang.check.saves import SAVE_DTYPES, SAVE_OPTIONS

__all__ = [
    "SAVE_DTYPES",
    "SAVE_OPTIONS",
    "BoundArg",
    "CheckedRecipe",
    "InputRef",
    "LinearCombination",
    "MethodCall",
    "ModelExpr",
    "ModelSource",
    "SaveTarget",
    "Step",
    "StepRef",
    "Term",
    "check",
]
