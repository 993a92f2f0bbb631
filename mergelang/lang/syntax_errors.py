"""Syntax errors explained: lark's exceptions -> friendly, located problems.

:func:`explain_syntax_error` turns an :class:`~lark.exceptions.UnexpectedInput` into a
:class:`ParseProblem` that says what is wrong in the recipe's terms: a missing comma, an
unclosed bracket (pointing at the opener), ``=`` written for ``:`` in a weight map, a string
never closed, unexpected indentation... and otherwise what was found and what was expected.
:func:`recipe_error` turns problems (these, or those found while building the AST) into one
:class:`~mergelang.errors.RecipeError`, in source order.
"""

from __future__ import annotations

import contextlib
import re
from typing import NamedTuple

from lark import Lark, Token
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from mergelang.errors import Diagnostic, RecipeError, Span, source_lines
from mergelang.lang.postlexer import OPENERS, LinePostLexer, token_span

__all__ = [
    "MAX_ERRORS",
    "RESERVED_WORDS",
    "ParseProblem",
    "explain_syntax_error",
    "recipe_error",
    "too_many_errors",
]

_CLOSING_CHAR = {"(": ")", "[": "]", "{": "}"}
_EXPRESSION_STARTS = frozenset(
    {"NAME", "NUMBER", "STRING", "DOLLAR_VAR", "DUNDER_VAR", "LPAR", "LSQB", "LBRACE", "MINUS"}
)
_NEVER_IN_BRACKETS = frozenset({"TO", "AS", "WITH"})
"""Keywords that only follow a complete expression: meeting one means a bracket is open."""


RESERVED_WORDS = (
    "model",
    "cache",
    "save",
    "to",
    "as",
    "with",
    "for",
    "in",
    "presets",
    "convention",
)
"""The language's keywords: none of them can name a model, an intermediate or a loop variable."""

_STATEMENT_KEYWORDS = frozenset({"model", "cache", "save", "for", "presets", "convention"})
"""Keywords that start a statement (``cache = x`` fails to parse on its ``=``)."""


MAX_ERRORS = 100
"""The most errors one recipe reports (parsing or checking); past them, a note says where the
list stops. A few are worth reading; thousands (a generated recipe gone wrong) would only take
minutes to print."""


class ParseProblem(NamedTuple):
    """One problem found while parsing, located, with an optional hint."""

    message: str
    code: str
    span: Span
    hint: str | None


_TERMINAL_WORDS = {
    "NAME": "a name",
    "NUMBER": "a number",
    "STRING": 'a "string"',
    "DOLLAR_VAR": "a $VARIABLE",
    "DUNDER_VAR": "a __VARIABLE__",
    "MB_HEAD": "a Merge Board line",
    "_NL": "the end of the line",
    "_INDENT": "an indented block",
    "_DEDENT": "the end of the indented block",
    "$END": "the end of the file",
}


def _describe_expected(lark: Lark, expected: set[str]) -> str:
    words: set[str] = set()
    for name in expected:
        if name in _TERMINAL_WORDS:
            words.add(_TERMINAL_WORDS[name])
            continue
        try:
            pattern = lark.get_terminal(name).pattern
        except KeyError:
            words.add(name)
            continue
        words.add(f"'{pattern.value}'" if pattern.type == "str" else name)
    ordered = sorted(words, key=lambda w: (not w.startswith("'"), w))
    if len(ordered) > 8:
        ordered = [*ordered[:8], "..."]
    return ", ".join(ordered)


def _describe_token(token: Token) -> str:
    kind = token.type
    if kind in ("$END", "_NL", "_INDENT", "_DEDENT"):
        return _TERMINAL_WORDS[kind].removeprefix("the ")
    if kind == "NAME":
        return f"name '{token}'"
    if kind == "NUMBER":
        return f"number {token}"
    if kind == "STRING":
        return f"string {token}"
    if kind in ("DOLLAR_VAR", "DUNDER_VAR"):
        return f"variable {token}"
    if kind == "MB_HEAD":
        return "a Merge Board line"
    return f"'{token}'"


def _starts_line(source_lines: list[str], token: Token) -> bool:
    line = token.line or 0
    if not 0 < line <= len(source_lines):
        return False
    return source_lines[line - 1][: (token.column or 1) - 1].strip() == ""


def _indent_of(source_lines: list[str], line: int) -> int:
    if not 0 < line <= len(source_lines):
        return 0
    text = source_lines[line - 1]
    return len(text) - len(text.lstrip())


def explain_syntax_error(
    exc: UnexpectedInput, lark: Lark, brackets: list[Token], source: str
) -> ParseProblem:
    """What went wrong, in the recipe's terms. ``brackets`` are the opening brackets still
    open where parsing stopped (:attr:`LinePostLexer.brackets`)."""
    lines = source_lines(source)
    if isinstance(exc, UnexpectedCharacters):
        span = Span.point(exc.line, exc.column)
        char = exc.char
        if char == '"':
            rest = lines[exc.line - 1][exc.column :] if 0 < exc.line <= len(lines) else ""
            string_hint = 'end it with " on the same line'
            if '\\"' in rest:
                string_hint = (
                    '\\" is a quote inside the string; end a path with \\\\" (a doubled backslash)'
                )
            return ParseProblem("this string is never closed", "unclosed-string", span, string_hint)
        if char == "'":
            return ParseProblem(
                "strings use double quotes", "syntax", span, 'write "path/to/file.safetensors"'
            )
        if char == "\\":
            return ParseProblem(
                "a statement cannot continue on the next line with '\\'",
                "syntax",
                span,
                "inside ( ), [ ] or { } a statement may span lines",
            )
        if not char.isprintable() or char.isspace():
            # A no-break space, a line separator...: shown by its code point, as it may
            # look like nothing at all.
            return ParseProblem(
                f"unexpected character U+{ord(char):04X}",
                "syntax",
                span,
                "recipes separate words with plain spaces and tabs",
            )
        return ParseProblem(f"unexpected character '{char}'", "syntax", span, None)
    assert isinstance(exc, UnexpectedToken)
    token: Token = exc.token
    expected: set[str] = set(exc.expected)
    if exc.interactive_parser is not None:
        with contextlib.suppress(UnexpectedInput):
            accepted = exc.interactive_parser.accepts()  # type: ignore[no-untyped-call]
            expected = set(accepted) or expected
    span = token_span(token) if token.type != "$END" else Span.point(exc.line, exc.column)
    innermost = brackets[-1] if brackets else None
    opener = OPENERS[innermost.type] if innermost is not None else None

    if innermost is not None and opener is not None:
        at_end = token.type == "$END"
        later_line = (token.line or 0) > (innermost.line or 0)
        new_statement = (
            later_line
            and _starts_line(lines, token)
            and (token.column or 1) - 1 <= _indent_of(lines, innermost.line or 0)
        )
        if at_end or new_statement or token.type in _NEVER_IN_BRACKETS:
            return ParseProblem(
                f"'{opener}' is never closed",
                "unclosed-bracket",
                token_span(innermost),
                f"close it with '{_CLOSING_CHAR[opener]}'",
            )
        if token.type == "EQUAL" and "COLON" in expected and opener == "{":
            return ParseProblem(
                "weight maps use ':' between a block and its weight, not '='",
                "map-colon",
                span,
                "write {IN00: 0.5, default: 1}",
            )
        if token.type == "COLON" and opener == "(":
            return ParseProblem(
                "keyword arguments use '=', not ':'",
                "keyword-equals",
                span,
                "write alpha=0.5",
            )
        if "COMMA" in expected and token.type in _EXPRESSION_STARTS:
            what = {"(": "arguments", "[": "list items", "{": "map entries"}[opener]
            return ParseProblem(
                f"missing ',' between {what}", "missing-comma", span, f"add ',' before {token}"
            )
    if token.type == "_INDENT":
        line = token.end_line or span.line
        width = len(str(token).expandtabs(LinePostLexer.tab_size))
        return ParseProblem(
            "unexpected indentation",
            "indentation",
            Span(line, 1, line, width + 1),
            _mixed_indent_hint(lines, line) or "only the body of a for loop is indented",
        )
    if token.type == "_NL" and "COLON" in expected:
        return ParseProblem(
            "missing ':' at the end of the for line",
            "syntax",
            span,
            "for blk in IN00..OUT11:",
        )
    if token.type == "EQUAL" and innermost is None:
        line_no, column = token.line or 0, token.column or 1
        before = lines[line_no - 1][: column - 1] if 0 < line_no <= len(lines) else ""
        if before.strip() in _STATEMENT_KEYWORDS:
            return ParseProblem(
                f"'{before.strip()}' is a reserved word and cannot name a value",
                "reserved-name",
                span,
                "reserved words: " + ", ".join(RESERVED_WORDS),
            )
    if token.type == "COMMA" and innermost is None:
        line_text = lines[token.line - 1] if token.line and token.line <= len(lines) else ""
        comma_hint = "a statement holds one value; lists go in [ ]"
        if _ONE_OPERAND.match(line_text):
            return ParseProblem(
                "a Merge Board line merges 2 models (weighted sum) or 3 (add difference), not 1",
                "merge-board",
                span,
                "OUTPUT = A + B, 0.5 (or OUTPUT = A + B + C, 1 to add a difference)",
            )
        if "=" in line_text and "+" in line_text:
            comma_hint = (
                "a Merge Board line separates its models with ' + ' (spaces around +): "
                "OUTPUT = A + B, 0.5"
            )
        return ParseProblem("unexpected ','", "syntax", span, comma_hint)
    message = f"unexpected {_describe_token(token)}"
    if expected:
        message += f"; expected {_describe_expected(lark, expected)}"
    hint: str | None = None
    if "EQUAL" in expected and innermost is None and token.type != "_NL":
        hint = "a statement is NAME = value, model, save, for, presets or convention"
    elif token.type in _EXPRESSION_STARTS and innermost is None:
        hint = _two_values_hint(lines, token, expected)
    elif innermost is not None and opener is not None:
        hint = (
            f"the '{opener}' at line {innermost.line}, column {innermost.column} is not closed yet"
        )
    return ParseProblem(message, "syntax", span, hint)


_ONE_OPERAND = re.compile(r"^[^=#]+=\s*__[A-Za-z0-9_]+__\s*,")
"""A Merge Board line with one operand: ``mix = __A__, 0.5``."""


def _mixed_indent_hint(lines: list[str], line: int) -> str | None:
    """A hint for a line indented with tabs where the line above uses spaces (or the other
    way round): inside a loop body that is what makes the indentation unexpected."""
    if not 0 < line <= len(lines):
        return None
    own = lines[line - 1][: len(lines[line - 1]) - len(lines[line - 1].lstrip())]
    above = next((t for t in reversed(lines[: line - 1]) if t.strip()), "")
    theirs = above[: len(above) - len(above.lstrip())]
    if not own or not theirs or set(own) == set(theirs):
        return None
    if "\t" in own + theirs and " " in own + theirs:
        return (
            "this line and the one above are indented with a different mix of tabs and "
            "spaces: indent every line of a loop body the same way"
        )
    return None


def _two_values_hint(lines: list[str], token: Token, expected: set[str]) -> str:
    """The hint for a value where none may follow: a missing ``to`` in a save, an unquoted
    path, else a missing operator."""
    line = token.line or 0
    text = lines[line - 1] if 0 < line <= len(lines) else ""
    rest = text[(token.column or 1) - 1 :].split("#", 1)[0].strip()
    if token.type == "STRING" and any(e.upper().endswith("TO") for e in expected):
        return 'write to before the path: save MODEL to "out/mix.safetensors"'
    if token.type == "NAME" and ("/" in rest or "\\" in rest or "." in rest) and " " not in rest:
        return f'paths go in double quotes: "{rest}"'
    return "two values in a row: is an operator missing?"


def too_many_errors(span: Span, path: str | None, source_line: str | None) -> Diagnostic:
    """The note that ends a list of :data:`MAX_ERRORS` errors: reading stopped at ``span``."""
    return Diagnostic(
        f"too many errors: stopped here after {MAX_ERRORS}",
        "too-many-errors",
        path,
        Span.point(span.line, span.column),
        "fix these and check again",
        "error",
        source_line,
    )


def recipe_error(problems: list[ParseProblem], path: str | None, source: str) -> RecipeError:
    """One error holding every problem, in source order, each with its source line (the
    first :data:`MAX_ERRORS`, then a note saying where the list stops)."""
    lines = source_lines(source)

    def line_of(span: Span) -> str | None:
        return lines[span.line - 1] if 0 < span.line <= len(lines) else None

    ordered = sorted(problems, key=lambda p: (p.span.line, p.span.column))
    diagnostics = [
        Diagnostic(p.message, p.code, path, p.span, p.hint, "error", line_of(p.span))
        for p in ordered[:MAX_ERRORS]
    ]
    if len(ordered) > MAX_ERRORS:
        stop = ordered[MAX_ERRORS].span
        diagnostics.append(too_many_errors(stop, path, line_of(stop)))
    return RecipeError(diagnostics)
