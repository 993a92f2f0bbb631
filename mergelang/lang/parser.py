"""Recipe text -> :class:`mergelang.lang.ast.Recipe`.

Three passes: lark's LALR parser (grammar ``grammar/mergelang.lark``, contextual lexer) builds
a parse tree while :class:`~mergelang.lang.postlexer.LinePostLexer` turns indentation into
``_INDENT``/``_DEDENT`` tokens and collects comments; then :class:`_TreeToAst` turns the tree
into frozen dataclasses with spans, splitting Merge Board lines into their parts with exact
columns.

A syntax error stops parsing: it becomes a :class:`~mergelang.errors.RecipeError` holding one
diagnostic with a friendly message (missing comma, unclosed bracket pointing at the opener,
``=`` written for ``:`` in a weight map...; see :mod:`mergelang.lang.syntax_errors`). Problems
found while building the tree (a lone brace in a template, a misplaced Merge Board flag) are
collected and raised together.

Some texts are refused whatever their syntax, each with a located error and never a Python
exception: one over :data:`MAX_RECIPE_SIZE`, one holding a control character (a NUL in a
path, an escape), and expressions or loops nested deeper than :data:`MAX_NESTING` and
:data:`MAX_LOOP_NESTING`. :func:`read_recipe_text` reads only regular files, at most
:data:`MAX_RECIPE_SIZE` bytes of them, and locates a byte that is not UTF-8.
"""

from __future__ import annotations

import functools
import importlib.resources
import math
import os
import re
import stat
import threading
from pathlib import Path
from typing import Any, NamedTuple

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import UnexpectedInput
from lark.tree import Meta

from mergelang.errors import Diagnostic, RecipeError, Span
from mergelang.io.file_formats import FILE_FORMATS
from mergelang.io.save_choices import SAVE_DTYPES
from mergelang.lang import ast
from mergelang.lang.postlexer import BadDedent, LinePostLexer, token_span
from mergelang.lang.syntax_errors import ParseProblem, explain_syntax_error, recipe_error

__all__ = [
    "MAX_RECIPE_SIZE",
    "decode_recipe",
    "parse",
    "parse_file",
    "read_recipe_text",
    "too_large",
]

GRAMMAR_NAME = "mergelang.lark"

DTYPE_FLAGS = tuple(SAVE_DTYPES)
"""Merge Board flags that pick the saved precision (Merge Board itself knows ``fp16``)."""

FORMAT_FLAGS = tuple(FILE_FORMATS)
"""Merge Board flags that pick the file format (without one, Merge Board writes ``.ckpt``)."""

_DUNDER = re.compile(r"__(?=[A-Za-z0-9])([A-Za-z0-9_]*[A-Za-z0-9])__")
_OUTPUT_REF = re.compile(r"__O([1-9][0-9]*)__")
_DOLLAR = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
_PLUS_SEPARATOR = re.compile(r"[ \t]+\+[ \t]+")
_TEMPLATE_TOKEN = re.compile(r"\{\{|\}\}|\{[A-Za-z_][A-Za-z0-9_]*\}|[{}]")

MAX_NESTING = 100
"""How deeply expressions may nest (brackets, calls, operators: ``a + b + c`` is two levels).
Parsing, checking and formatting walk expressions recursively; deeper ones are a syntax error
rather than a Python RecursionError."""

MAX_LOOP_NESTING = 20
"""How deeply ``for`` loops may nest (for the same reason as :data:`MAX_NESTING`)."""

MAX_RECIPE_SIZE = 256 * 1024
"""The largest recipe accepted, in bytes of a file or characters of a text: 256 KiB, some
6,000 statements of ordinary length. Hand-written and generated recipes are a few kilobytes
(a sweep is a ``for`` loop, not one line per output); a larger text is refused at once,
rather than read whole and parsed for minutes."""

_NESTING_RULES = frozenset({"add", "sub", "mul", "div", "neg", "call", "vector", "weight_map"})

_FORBIDDEN_CHAR = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
"""Control characters (tab and newline aside) and lone surrogates: no recipe holds them, in a
string or anywhere else (a NUL in a path would cut it short at the operating system)."""

_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
)


# ---- grammar loading ----------------------------------------------------------------------


def grammar_text() -> str:
    """The grammar, from the installed package (``mergelang/grammar``) or the checkout."""
    packaged = importlib.resources.files("mergelang") / "grammar" / GRAMMAR_NAME
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    checkout = Path(__file__).resolve().parents[2] / "grammar" / GRAMMAR_NAME
    return checkout.read_text(encoding="utf-8")


class _Parser(NamedTuple):
    lark: Lark
    postlex: LinePostLexer


@functools.cache
def _parser() -> _Parser:
    postlex = LinePostLexer()
    lark = Lark(
        grammar_text(),
        parser="lalr",
        lexer="contextual",
        postlex=postlex,
        propagate_positions=True,
        maybe_placeholders=False,
    )
    return _Parser(lark, postlex)


# lark's postlexer keeps per-parse state on a shared object, so parses are serialised.
_PARSE_LOCK = threading.Lock()


# ---- parse tree -> AST ----------------------------------------------------------------------


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
class _TreeToAst(Transformer[Token, Any]):
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
        name, source = children
        return ast.ModelDecl(str(name), source, span=_meta_span(meta), name_span=token_span(name))

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


def _line_ends(text: str) -> str:
    """``text`` with every line ending (``\\r\\n``, ``\\r``) made ``\\n``."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _normalise(text: str) -> str:
    if text.startswith("\ufeff"):
        text = text[1:]
    text = _line_ends(text)
    if not text.endswith("\n"):
        text += "\n"
    return text


def parse(text: str, *, path: str | None = None) -> ast.Recipe:
    """Parse recipe text. Raises :class:`RecipeError` (with line and column) on bad syntax,
    on a control character and on a text over :data:`MAX_RECIPE_SIZE` characters."""
    if len(text) > MAX_RECIPE_SIZE:
        raise too_large(path or "<recipe>")
    source = _normalise(text)
    forbidden = _forbidden_character(source)
    if forbidden is not None:
        raise recipe_error([forbidden], path, source)
    parser = _parser()
    with _PARSE_LOCK:
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
    builder = _TreeToAst()
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


def read_recipe_text(path: str | Path) -> str:
    """The text of a recipe file (UTF-8, a BOM allowed); a file that cannot be a recipe (a
    folder, a FIFO or device, one over :data:`MAX_RECIPE_SIZE`, not UTF-8) raises
    RecipeError naming it."""
    where = str(path)
    try:
        # O_NONBLOCK: opening a FIFO with no writer must not wait; it is refused below.
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise _file_error(where, "recipe file not found") from None
    except IsADirectoryError:
        raise _file_error(where, "this is a folder, not a recipe file") from None
    except OSError as exc:
        raise _file_error(where, f"cannot read the recipe: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise _file_error(where, "this is a folder, not a recipe file")
        if not stat.S_ISREG(info.st_mode):
            raise _file_error(
                where,
                "this is not a regular file (a FIFO, socket or device)",
                hint="to read a recipe from a pipe, give - and feed it on standard input",
            )
        if info.st_size > MAX_RECIPE_SIZE:
            raise too_large(where)
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_RECIPE_SIZE:  # the file may grow while it is read
            chunk = os.read(fd, MAX_RECIPE_SIZE + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise _file_error(where, f"cannot read the recipe: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    return decode_recipe(data, where)


def decode_recipe(data: bytes, where: str) -> str:
    """Recipe bytes -> text: UTF-8, a BOM allowed. Text over :data:`MAX_RECIPE_SIZE` bytes,
    UTF-16/32 and bytes that are not UTF-8 raise RecipeError; a bad byte is located by
    line and column (the offset is in the message)."""
    if len(data) > MAX_RECIPE_SIZE:
        raise too_large(where)
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            raise _file_error(
                where,
                f"the recipe is {encoding} text, not UTF-8",
                code="recipe-encoding",
                hint="save the recipe as UTF-8",
            )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        before = _line_ends(data[: exc.start].decode("utf-8-sig"))
        line = before.count("\n") + 1
        line_start = before.rfind("\n") + 1
        column = len(before) - line_start + 1
        shown = _line_ends(data.decode("utf-8-sig", errors="replace"))[line_start:]
        binary = b"\0" in data
        raise RecipeError(
            [
                Diagnostic(
                    f"the recipe is not UTF-8 text (byte {exc.start} on line {line})",
                    "recipe-encoding",
                    where,
                    Span.point(line, column),
                    "is this a binary file? a recipe is UTF-8 text"
                    if binary
                    else "save the recipe as UTF-8",
                    source_line=shown.split("\n", 1)[0],
                )
            ]
        ) from None


def too_large(where: str) -> RecipeError:
    """The error for a recipe over :data:`MAX_RECIPE_SIZE`."""
    return _file_error(
        where,
        f"the recipe is too large (over {MAX_RECIPE_SIZE // 1024} KiB)",
        code="recipe-too-large",
        hint="split it into several recipes, or use for loops instead of repeated lines",
    )


def _file_error(
    path: str, message: str, *, code: str = "recipe-file", hint: str | None = None
) -> RecipeError:
    return RecipeError([Diagnostic(message, code, path, hint=hint)])


def parse_file(path: str | Path) -> ast.Recipe:
    """Read and parse a recipe file; the recipe's ``path`` is the path as given."""
    return parse(read_recipe_text(path), path=str(path))
