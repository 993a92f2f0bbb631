"""Operators written with no space around them, as inside a preset name (``SMOOTHSTEP*2``).

MBW's preset table names presets ``SMOOTHSTEP*2``, ``R_SMOOTHSTEP/3`` and
``REVERSE-SMOOTHSTEP``; the grammar reads those as arithmetic. :func:`glued_text` gives the
text such an expression was written as, from its operands' spans, so the checker can refuse
a glued form that spells a preset (naming the preset) and the formatter can write the preset
as its identifier spelling instead of spacing it out into arithmetic.
"""

from __future__ import annotations

from mergelang.block_weights import format_number
from mergelang.lang import ast

__all__ = ["glued_text"]


def _atom_text(expr: ast.Expr) -> str | None:
    if isinstance(expr, ast.Name):
        return expr.name
    if isinstance(expr, ast.Number) and expr.value >= 0:
        return format_number(expr.value)
    return None


def glued_text(node: ast.BinaryOp) -> str | None:
    """``left op right`` as written when a name and a name or plain number stand on one line
    with the operator between them and no space (``SMOOTHSTEP*2``); ``None`` otherwise."""
    left, right = node.left, node.right
    left_text, right_text = _atom_text(left), _atom_text(right)
    if not isinstance(left, ast.Name) or left_text is None or right_text is None:
        return None
    ls, rs = left.span, right.span
    if ls.line == 0 or not (ls.line == ls.end_line == rs.line == rs.end_line):
        return None
    if rs.column != ls.end_column + 1:
        return None
    if ls.end_column - ls.column != len(left_text) or rs.end_column - rs.column != len(right_text):
        return None
    return f"{left_text}{node.op}{right_text}"
