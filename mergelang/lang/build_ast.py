"""Parse tree -> AST: the lark Transformer that builds :mod:`mergelang.lang.ast` nodes.

:class:`TreeToAst` builds the frozen dataclasses bottom-up, each with the span lark's
``meta`` (or the token) gives it. A Merge Board head (``OUTPUT = A + B [+ C],``, one token)
is split into its output and operands here, each with its exact columns, and the flags after
the multiplier are sorted into precision and format. Problems met on the way (a lone brace in
a string, a flag in a Merge Board line's multiplier place, a positional argument after a
keyword) are collected in :attr:`TreeToAst.problems`, not raised, so all are reported at once.
"""

from __future__ import annotations

import math
import re
from typing import Any

from lark import Token, Transformer, v_args
from lark.tree import Meta

from mergelang.errors import Span
from mergelang.lang import ast
from mergelang.lang.merge_board import DTYPE_FLAGS, FORMAT_FLAGS
from mergelang.lang.postlexer import token_span
from mergelang.lang.syntax_errors import ParseProblem

__all__ = ["TreeToAst"]

_DUNDER = re.compile(r"__(?=[A-Za-z0-9])([A-Za-z0-9_]*[A-Za-z0-9])__")
_OUTPUT_REF = re.compile(r"__O([1-9][0-9]*)__")
_DOLLAR = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
_PLUS_SEPARATOR = re.compile(r"[ \t]+\+[ \t]+")
_TEMPLATE_TOKEN = re.compile(r"\{\{|\}\}|\{[A-Za-z_][A-Za-z0-9_]*\}|[{}]")


def _meta_span(meta: Meta) -> Span:
    if getattr(meta, "empty", True):
        return ast.NO_SPAN
    return Span(meta.line, meta.column, meta.end_line, meta.end_column)


def _sub_span(token: Token, start: int, end: int) -> Span:
    """The span of ``token[start:end]`` (a part of a single-line token)."""
    line = token.line or 0
    column = (token.column or 0) + start
    return Span(line, column, line, column + (end - start))


def _unescape(raw: str) -> str:
    """String literal body -> value: ``\\"`` and ``\\\\`` are escapes; any other backslash is
    kept as written, so Windows paths need no doubling."""
    out: list[str] = []
    index = 0
    while index < len(raw):
        char = raw[index]
        if char == "\\" and index + 1 < len(raw) and raw[index + 1] in '\\"':
            out.append(raw[index + 1])
            index += 2
        else:
            out.append(char)
            index += 1
    return "".join(out)


@v_args(meta=True)
class TreeToAst(Transformer[Token, Any]):
    """Builds AST nodes bottom-up; collects problems instead of raising mid-way."""

    def __init__(self) -> None:
        super().__init__()
        self.problems: list[ParseProblem] = []

    def _problem(self, message: str, code: str, span: Span, hint: str | None = None) -> None:
        self.problems.append(ParseProblem(message, code, span, hint))

    # -- statements

    def start(self, meta: Meta, children: list[Any]) -> tuple[ast.Statement, ...]:
        return tuple(children)

    def model_decl(self, meta: Meta, children: list[Any]) -> ast.ModelDecl:
        name, source, *pin = children
        return ast.ModelDecl(
            str(name),
            source,
            span=_meta_span(meta),
            name_span=token_span(name),
            pin=pin[0] if pin and pin[0] is not None else None,
        )

    def model_pin(self, meta: Meta, children: list[Any]) -> ast.String:
        (token,) = children
        return self._string(token)

    def model_source(self, meta: Meta, children: list[Any]) -> ast.String | ast.Variable:
        (token,) = children
        if token.type == "STRING":
            return self._string(token)
        if token.type == "DOLLAR_VAR":
            return ast.Variable(str(token)[1:], "dollar", span=token_span(token))
        node = self._variable(token)
        if isinstance(node, ast.OutputRef):
            self._problem(
                f"a model declaration takes a path or a variable, not {node.text}",
                "model-source",
                node.span,
                hint=f"use {node.text} directly where the model is needed",
            )
            return ast.Variable(f"O{node.index}", "dunder", span=node.span)
        return node

    def assign(self, meta: Meta, children: list[Any]) -> ast.Assign:
        name, value = children
        return ast.Assign(str(name), value, span=_meta_span(meta), name_span=token_span(name))

    def cache_assign(self, meta: Meta, children: list[Any]) -> ast.Assign:
        name, value = children
        return ast.Assign(
            str(name), value, cached=True, span=_meta_span(meta), name_span=token_span(name)
        )

    def save_stmt(self, meta: Meta, children: list[Any]) -> ast.Save:
        value, path_token, *rest = children
        dtype: ast.Name | None = None
        options: tuple[ast.SaveOption, ...] = ()
        for kind, part in rest:
            if kind == "dtype":
                dtype = part
            else:
                options = part
        return ast.Save(value, self._string(path_token), dtype, options, span=_meta_span(meta))

    def save_dtype(self, meta: Meta, children: list[Any]) -> tuple[str, ast.Name]:
        (token,) = children
        return ("dtype", ast.Name(str(token), span=token_span(token)))

    def save_with(self, meta: Meta, children: list[Any]) -> tuple[str, tuple[ast.SaveOption, ...]]:
        return ("with", tuple(children))

    def save_option(self, meta: Meta, children: list[Any]) -> ast.SaveOption:
        key, value = children
        return ast.SaveOption(str(key), value, span=_meta_span(meta), key_span=token_span(key))

    def save_value(self, meta: Meta, children: list[Any]) -> ast.SaveValue:
        (token,) = children
        if token.type == "STRING":
            return self._string(token)
        if token.type == "NUMBER":
            return self._number(token)
        return ast.Name(str(token), span=token_span(token))

    def negative_save_value(self, meta: Meta, children: list[Any]) -> ast.Number:
        number = self._number(children[0])
        return ast.Number(-number.value, span=_meta_span(meta))

    def presets_stmt(self, meta: Meta, children: list[Any]) -> ast.PresetsImport:
        return ast.PresetsImport(self._string(children[0]), span=_meta_span(meta))

    def convention_stmt(self, meta: Meta, children: list[Any]) -> ast.ConventionChoice:
        (token,) = children
        name = ast.Name(str(token), span=token_span(token))
        return ast.ConventionChoice(name, span=_meta_span(meta))

    def var_doc(self, meta: Meta, children: list[Any]) -> ast.VarDoc:
        (token,) = children
        match = _DUNDER.fullmatch(str(token))
        assert match is not None  # the terminal guarantees it
        return ast.VarDoc(match.group(1), span=_meta_span(meta))

    def for_stmt(self, meta: Meta, children: list[Any]) -> ast.For:
        var, iterable, *body = children
        first = _meta_span(meta)
        last = body[-1].span
        span = Span(first.line, first.column, last.end_line, last.end_column)
        return ast.For(str(var), iterable, tuple(body), span=span, var_span=token_span(var))

    def merge_board(self, meta: Meta, children: list[Any]) -> ast.MergeBoard:
        head, *parts = children
        output, output_span, operands = self._split_head(head)
        span = _meta_span(meta)
        multiplier = parts[0]
        base: ast.Expr | None = None
        dtype: ast.Name | None = None
        file_format: ast.Name | None = None
        if isinstance(multiplier, ast.Name) and multiplier.name in DTYPE_FLAGS + FORMAT_FLAGS:
            self._problem(
                f"a Merge Board line needs a multiplier before the flag '{multiplier.name}'",
                "merge-board",
                multiplier.span,
                hint=f"write {output} = A + B, 0.5, {multiplier.name}",
            )
        for part in parts[1:]:
            if isinstance(part, ast.Name) and part.name in DTYPE_FLAGS:
                if dtype is not None:
                    self._duplicate_flag(part, dtype)
                dtype = part
            elif isinstance(part, ast.Name) and part.name in FORMAT_FLAGS:
                if file_format is not None:
                    self._duplicate_flag(part, file_format)
                file_format = part
            elif base is None:
                base = part
            else:
                self._problem(
                    "a Merge Board line takes a multiplier, an optional base weight and the "
                    "flags fp16 and safetensors; this is one value too many",
                    "merge-board",
                    part.span,
                    hint="OUTPUT = A + B, M[, BASE][, fp16][, safetensors]",
                )
        return ast.MergeBoard(
            output,
            operands,
            multiplier,
            base,
            dtype,
            file_format,
            span=span,
            output_span=output_span,
        )

    def _duplicate_flag(self, flag: ast.Name, first: ast.Name) -> None:
        self._problem(
            f"the flag '{flag.name}' repeats what '{first.name}' already chose",
            "merge-board",
            flag.span,
            hint="give each of the precision and format flags once",
        )

    def _split_head(self, head: Token) -> tuple[str, Span, tuple[ast.MergeBoardOperand, ...]]:
        text = str(head)
        equals = text.index("=")
        left = text[:equals]
        output = left.strip()
        start = len(left) - len(left.lstrip())
        output_span = _sub_span(head, start, start + len(output))
        right_start = equals + 1
        right = text[right_start : len(text) - 1]  # drop the trailing comma
        operands: list[ast.MergeBoardOperand] = []
        cursor = 0
        pieces: list[tuple[int, int]] = []
        for separator in _PLUS_SEPARATOR.finditer(right):
            pieces.append((cursor, separator.start()))
            cursor = separator.end()
        pieces.append((cursor, len(right)))
        for begin, end in pieces:
            piece = right[begin:end]
            stripped = piece.strip()
            offset = right_start + begin + (len(piece) - len(piece.lstrip()))
            span = _sub_span(head, offset, offset + len(stripped))
            operands.append(_operand(stripped, span))
        return output, output_span, tuple(operands)

    # -- expressions

    def number(self, meta: Meta, children: list[Any]) -> ast.Number:
        return self._number(children[0])

    def negative_number(self, meta: Meta, children: list[Any]) -> ast.Number:
        number = self._number(children[0])
        return ast.Number(-number.value, span=_meta_span(meta))

    def number_range(self, meta: Meta, children: list[Any]) -> ast.NumberRange:
        start, end, *step = children
        return ast.NumberRange(start, end, step[0] if step else None, span=_meta_span(meta))

    def string(self, meta: Meta, children: list[Any]) -> ast.String:
        return self._string(children[0])

    def name(self, meta: Meta, children: list[Any]) -> ast.Name:
        (token,) = children
        return ast.Name(str(token), span=token_span(token))

    def dollar_var(self, meta: Meta, children: list[Any]) -> ast.Variable:
        (token,) = children
        return ast.Variable(str(token)[1:], "dollar", span=token_span(token))

    def dunder_var(self, meta: Meta, children: list[Any]) -> ast.Variable | ast.OutputRef:
        return self._variable(children[0])

    def call(self, meta: Meta, children: list[Any]) -> ast.Call:
        func, *rest = children
        args: tuple[ast.Expr | ast.Keyword, ...] = tuple(rest[0]) if rest else ()
        seen_keyword: ast.Keyword | None = None
        for arg in args:
            if isinstance(arg, ast.Keyword):
                seen_keyword = arg
            elif seen_keyword is not None:
                self._problem(
                    f"a positional argument follows the keyword argument '{seen_keyword.name}'",
                    "positional-after-keyword",
                    arg.span,
                    hint="put positional arguments first, then name=value ones",
                )
        return ast.Call(str(func), args, span=_meta_span(meta), func_span=token_span(func))

    def arguments(self, meta: Meta, children: list[Any]) -> list[Any]:
        return children

    def keyword(self, meta: Meta, children: list[Any]) -> ast.Keyword:
        name, value = children
        return ast.Keyword(str(name), value, span=_meta_span(meta), name_span=token_span(name))

    def add(self, meta: Meta, children: list[Any]) -> ast.BinaryOp:
        return ast.BinaryOp("+", children[0], children[1], span=_meta_span(meta))

    def sub(self, meta: Meta, children: list[Any]) -> ast.BinaryOp:
        return ast.BinaryOp("-", children[0], children[1], span=_meta_span(meta))

    def mul(self, meta: Meta, children: list[Any]) -> ast.BinaryOp:
        return ast.BinaryOp("*", children[0], children[1], span=_meta_span(meta))

    def div(self, meta: Meta, children: list[Any]) -> ast.BinaryOp:
        return ast.BinaryOp("/", children[0], children[1], span=_meta_span(meta))

    def neg(self, meta: Meta, children: list[Any]) -> ast.Expr:
        (operand,) = children
        if isinstance(operand, ast.Number):
            return ast.Number(-operand.value, span=_meta_span(meta))
        return ast.Negate(operand, span=_meta_span(meta))

    def vector(self, meta: Meta, children: list[Any]) -> ast.Vector:
        return ast.Vector(tuple(children), span=_meta_span(meta))

    def weight_map(self, meta: Meta, children: list[Any]) -> ast.WeightMap:
        return ast.WeightMap(tuple(children), span=_meta_span(meta))

    def map_entry(self, meta: Meta, children: list[Any]) -> ast.MapEntry:
        key, value = children
        return ast.MapEntry(key, value, span=_meta_span(meta))

    def key_pattern(self, meta: Meta, children: list[Any]) -> ast.KeyPattern:
        negated = isinstance(children[0], Token) and children[0].type == "NOT"
        rest = children[1:] if negated else children
        pattern = self._string(rest[0])
        blocks: tuple[ast.BlockItem, ...] | None = None
        exclude = False
        if len(rest) > 1:
            exclude, blocks = rest[1]
        return ast.KeyPattern(pattern, negated, blocks, exclude, span=_meta_span(meta))

    def key_blocks(self, meta: Meta, children: list[Any]) -> tuple[bool, tuple[ast.BlockItem, ...]]:
        exclude = isinstance(children[0], Token) and children[0].type == "NOT"
        items = children[-1]
        return exclude, tuple(items) if isinstance(items, list) else (items,)

    def block_list(self, meta: Meta, children: list[Any]) -> list[ast.BlockItem]:
        return list(children)

    def block_range(self, meta: Meta, children: list[Any]) -> ast.BlockRange:
        start, end = children
        return ast.BlockRange(
            str(start),
            str(end),
            span=_meta_span(meta),
            start_span=token_span(start),
            end_span=token_span(end),
        )

    # -- tokens

    def _number(self, token: Token) -> ast.Number:
        value = float(str(token))
        if not math.isfinite(value):
            self._problem(f"the number {token} is too large", "number", token_span(token))
            value = 0.0
        return ast.Number(value, span=token_span(token))

    def _variable(self, token: Token) -> ast.Variable | ast.OutputRef:
        text = str(token)
        span = token_span(token)
        ref = _OUTPUT_REF.fullmatch(text)
        if ref is not None:
            return ast.OutputRef(int(ref.group(1)), span=span)
        match = _DUNDER.fullmatch(text)
        assert match is not None  # the terminal guarantees it
        return ast.Variable(match.group(1), "dunder", span=span)

    def _string(self, token: Token) -> ast.String:
        raw = str(token)[1:-1]
        placeholders: list[ast.Placeholder] = []
        for match in _TEMPLATE_TOKEN.finditer(raw):
            piece = match.group(0)
            span = _sub_span(token, 1 + match.start(), 1 + match.end())
            if piece in ("{{", "}}"):
                continue
            if piece in ("{", "}"):
                self._problem(
                    f"a lone '{piece}' in a string",
                    "template",
                    span,
                    hint="{name} is a loop variable's value; write {{ or }} for a brace",
                )
                continue
            placeholders.append(ast.Placeholder(piece[1:-1], span=span))
        return ast.String(_unescape(raw), tuple(placeholders), span=token_span(token))


def _operand(text: str, span: Span) -> ast.MergeBoardOperand:
    ref = _OUTPUT_REF.fullmatch(text)
    if ref is not None:
        return ast.OutputRef(int(ref.group(1)), span=span)
    dunder = _DUNDER.fullmatch(text)
    if dunder is not None:
        return ast.Variable(dunder.group(1), "dunder", span=span)
    dollar = _DOLLAR.fullmatch(text)
    if dollar is not None:
        return ast.Variable(dollar.group(1), "dollar", span=span)
    return ast.ModelLiteral(text, span=span)
