"""Recipe text -> :class:`mergelang.lang.ast.Recipe`: :func:`parse` and :func:`parse_file`.

Three passes: lark's LALR parser (:mod:`mergelang.lang.grammar`) builds a parse tree while
:class:`~mergelang.lang.postlexer.LinePostLexer` turns indentation into ``_INDENT``/``_DEDENT``
tokens and collects comments; then :class:`~mergelang.lang.build_ast.TreeToAst` turns the tree
into frozen dataclasses with spans. Merge Board lines stay :class:`~mergelang.lang.ast.MergeBoard`
statements here (the formatter prints them as written); :mod:`mergelang.lang.merge_board`
lowers them to native statements for the checker.

Before parsing, the text is normalised: a BOM dropped, every line ending made ``\\n``, a final
newline added. A syntax error stops parsing: it becomes a :class:`~mergelang.errors.RecipeError`
holding one diagnostic with a friendly message (missing comma, unclosed bracket pointing at
the opener, ``=`` written for ``:`` in a weight map...; see
:mod:`mergelang.lang.syntax_errors`). Problems found while building the tree (a lone brace in
a template, a misplaced Merge Board flag) are collected and raised together.

Some texts are refused whatever their syntax, each with a located error and never a Python
exception: one over :data:`~mergelang.io.text_files.MAX_RECIPE_SIZE`, one holding a control
character (a NUL in a path, an escape), and expressions or loops nested deeper than
:data:`MAX_NESTING` and :data:`MAX_LOOP_NESTING`. Reading a file is
:func:`~mergelang.io.text_files.read_recipe_text`'s (regular files only, bounded, UTF-8).
"""

from __future__ import annotations

import re
from pathlib import Path

from lark import Token, Tree
from lark.exceptions import UnexpectedInput

from mergelang.errors import Span
from mergelang.io.text_files import (
    MAX_RECIPE_SIZE,
    normalise_line_ends,
    read_recipe_text,
    too_large,
)
from mergelang.lang import ast
from mergelang.lang.build_ast import TreeToAst
from mergelang.lang.grammar import PARSE_LOCK, recipe_parser
from mergelang.lang.postlexer import BadDedent
from mergelang.lang.syntax_errors import ParseProblem, explain_syntax_error, recipe_error

__all__ = ["MAX_LOOP_NESTING", "MAX_NESTING", "parse", "parse_file"]

MAX_NESTING = 100
"""How deeply expressions may nest (brackets, calls, operators: ``a + b + c`` is two levels).
Parsing, checking and formatting walk expressions recursively; deeper ones are a syntax error
rather than a Python RecursionError."""

MAX_LOOP_NESTING = 20
"""How deeply ``for`` loops may nest (for the same reason as :data:`MAX_NESTING`)."""

_NESTING_RULES = frozenset({"add", "sub", "mul", "div", "neg", "call", "vector", "weight_map"})

_FORBIDDEN_CHAR = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
"""Control characters (tab and newline aside) and lone surrogates: no recipe holds them, in a
string or anywhere else (a NUL in a path would cut it short at the operating system)."""


def _too_deep(tree: Tree[Token]) -> ParseProblem | None:
    """A problem at the first expression nested more than :data:`MAX_NESTING` levels deep,
    or the first ``for`` loop nested more than :data:`MAX_LOOP_NESTING` (the tree is walked
    without recursion, so any depth is safe)."""
    stack: list[tuple[Tree[Token], int, int]] = [(tree, 0, 0)]
    while stack:
        node, depth, loops = stack.pop()
        if node.data in _NESTING_RULES:
            depth += 1
            if depth > MAX_NESTING:
                return ParseProblem(
                    f"this expression nests more than {MAX_NESTING} levels deep",
                    "too-deep",
                    Span.point(node.meta.line, node.meta.column),
                    "split it into named intermediates (NAME = ...) and combine those",
                )
        elif node.data == "for_stmt":
            loops += 1
            if loops > MAX_LOOP_NESTING:
                return ParseProblem(
                    f"for loops nest more than {MAX_LOOP_NESTING} levels deep here",
                    "too-deep",
                    Span.point(node.meta.line, node.meta.column),
                    "loop over a list of values instead of nesting further",
                )
        stack.extend((child, depth, loops) for child in node.children if isinstance(child, Tree))
    return None


def _forbidden_character(source: str) -> ParseProblem | None:
    """A problem at the first control character or lone surrogate in ``source``, if any."""
    found = _FORBIDDEN_CHAR.search(source)
    if found is None:
        return None
    index = found.start()
    line = source.count("\n", 0, index) + 1
    column = index - source.rfind("\n", 0, index)
    char = found.group()
    if char == "\0":
        return ParseProblem(
            "the recipe holds a NUL character (U+0000)",
            "control-character",
            Span.point(line, column),
            "is this a binary file? a recipe is UTF-8 text",
        )
    what = "a lone surrogate" if "\ud800" <= char <= "\udfff" else "the control character"
    return ParseProblem(
        f"the recipe holds {what} U+{ord(char):04X}",
        "control-character",
        Span.point(line, column),
        "remove it: tabs and line ends are the only control characters a recipe may hold",
    )


# ---- public API ----------------------------------------------------------------------------


def _normalise(text: str) -> str:
    if text.startswith("\ufeff"):
        text = text[1:]
    text = normalise_line_ends(text)
    if not text.endswith("\n"):
        text += "\n"
    return text


def parse(text: str, *, path: str | None = None) -> ast.Recipe:
    """Parse recipe text. Raises :class:`~mergelang.errors.RecipeError` (with line and column)
    on bad syntax, on a control character and on a text over
    :data:`~mergelang.io.text_files.MAX_RECIPE_SIZE` characters."""
    if len(text) > MAX_RECIPE_SIZE:
        raise too_large(path or "<recipe>")
    source = _normalise(text)
    forbidden = _forbidden_character(source)
    if forbidden is not None:
        raise recipe_error([forbidden], path, source)
    parser = recipe_parser()
    with PARSE_LOCK:
        try:
            tree = parser.lark.parse(source)
        except UnexpectedInput as exc:
            problem = explain_syntax_error(exc, parser.lark, list(parser.postlex.brackets), source)
            raise recipe_error([problem], path, source) from None
        except BadDedent as exc:
            problem = ParseProblem(
                exc.message, "indentation", exc.span, "indent a block's lines the same way"
            )
            raise recipe_error([problem], path, source) from None
        comments = tuple(parser.postlex.comments)
    too_deep = _too_deep(tree)
    if too_deep is not None:
        raise recipe_error([too_deep], path, source)
    builder = TreeToAst()
    statements = builder.transform(tree)
    if builder.problems:
        raise recipe_error(builder.problems, path, source)
    end_line = source.count("\n")
    return ast.Recipe(
        statements,
        comments,
        path=path,
        source=source,
        span=Span(1, 1, max(end_line, 1), 1),
    )


def parse_file(path: str | Path) -> ast.Recipe:
    """Read and parse a recipe file; the recipe's ``path`` is the path as given."""
    return parse(read_recipe_text(path), path=str(path))
