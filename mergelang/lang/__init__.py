"""Stage 1, text -> AST: the grammar, the indentation post-lexer, the parser, syntax-error
explanations, the AST and the formatter. Nothing here imports torch."""

from __future__ import annotations

from mergelang.lang.formatter import format_recipe, format_text
from mergelang.lang.parser import parse, parse_file

__all__ = ["format_recipe", "format_text", "parse", "parse_file"]
