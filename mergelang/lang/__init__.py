"""Stage 1, text -> AST: the grammar, the indentation post-lexer, the parser, syntax-error
explanations, the AST, the formatter, and the lowering of Merge Board lines to native
statements (the checker's input). Nothing here imports torch."""

from __future__ import annotations

from mergelang.lang.formatter import format_recipe, format_text
from mergelang.lang.merge_board import lower_merge_board
from mergelang.lang.parser import parse, parse_file

__all__ = ["format_recipe", "format_text", "lower_merge_board", "parse", "parse_file"]
