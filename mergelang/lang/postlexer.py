"""The token stream between lark's lexer and the LALR parser.

:class:`LinePostLexer` turns the indentation after each newline into ``_INDENT``/``_DEDENT``
tokens, drops newlines inside brackets, collects comments and keeps track of the brackets
still open (the syntax error messages point at an unclosed one). :func:`token_span` is a
token's :class:`~mergelang.errors.Span`.
"""

from __future__ import annotations

from collections.abc import Iterator

from lark import Token
from lark.lark import PostLex

from mergelang.errors import Span
from mergelang.lang import ast

__all__ = ["CLOSERS", "OPENERS", "BadDedent", "LinePostLexer", "token_span"]

OPENERS = {"LPAR": "(", "LSQB": "[", "LBRACE": "{"}
"""Opening bracket token types -> the bracket."""

CLOSERS = {"RPAR": "(", "RSQB": "[", "RBRACE": "{"}
"""Closing bracket token types -> the opening bracket they close."""


class BadDedent(Exception):
    """A line indented less than its block but more than any enclosing one."""

    def __init__(self, message: str, span: Span) -> None:
        super().__init__(message)
        self.message = message
        self.span = span


class LinePostLexer(PostLex):
    """Turns the indentation after each newline into ``_INDENT``/``_DEDENT`` tokens.

    Newlines inside brackets are dropped (a list may span lines). Every ``_NL`` token also
    carries the comments and blank lines it covers: they are collected into ``comments``.
    ``brackets`` holds the opening brackets not yet closed, which the syntax error messages
    use to point at an unclosed one.
    """

    always_accept = ("_NL",)
    tab_size = 8

    def __init__(self) -> None:
        self.comments: list[ast.Comment] = []
        self.brackets: list[Token] = []
        self._indents: list[int] = [0]
        self._last_code_line = 0

    def process(self, stream: Iterator[Token]) -> Iterator[Token]:
        self.comments = []
        self.brackets = []
        self._indents = [0]
        self._last_code_line = 0
        return self._process(stream)

    def _process(self, stream: Iterator[Token]) -> Iterator[Token]:
        last: Token | None = None
        for token in stream:
            last = token
            if token.type == "_NL":
                self._collect_comments(token)
                if self.brackets:
                    continue
                yield token
                yield from self._indentation(token)
                continue
            yield token
            self._last_code_line = token.end_line or token.line or 0
            if token.type in OPENERS:
                self.brackets.append(token)
            elif token.type in CLOSERS and self.brackets:
                self.brackets.pop()
        while len(self._indents) > 1:
            self._indents.pop()
            yield (
                Token.new_borrow_pos("_DEDENT", "", last)
                if last is not None
                else Token("_DEDENT", "", 0, 1, 1)
            )

    def _indentation(self, newline: Token) -> Iterator[Token]:
        text = str(newline)
        indent_text = text.rsplit("\n", 1)[1] if "\n" in text else ""
        width = len(indent_text.expandtabs(self.tab_size))
        if width > self._indents[-1]:
            self._indents.append(width)
            yield Token.new_borrow_pos("_INDENT", indent_text, newline)
            return
        while width < self._indents[-1]:
            self._indents.pop()
            yield Token.new_borrow_pos("_DEDENT", indent_text, newline)
        if width != self._indents[-1]:
            line = newline.end_line or 1
            raise BadDedent(
                "this line's indentation matches no enclosing block",
                Span(line, 1, line, width + 1),
            )

    def _collect_comments(self, token: Token) -> None:
        text = str(token)
        line = token.line or 1
        column = token.column or 1
        index = 0
        while index < len(text):
            char = text[index]
            if char == "\n":
                line += 1
                column = 1
                index += 1
            elif char == "#":
                end = text.find("\n", index)
                end = len(text) if end < 0 else end
                body = text[index:end].rstrip()
                span = Span(line, column, line, column + len(body))
                trailing = line == self._last_code_line
                self.comments.append(ast.Comment(body, trailing, span=span))
                column += end - index
                index = end
            else:
                column += 1
                index += 1


def token_span(token: Token) -> Span:
    """Where ``token`` stands in the source."""
    line = token.line or 0
    column = token.column or 0
    end_line = token.end_line or line
    end_column = token.end_column or column + len(token)
    return Span(line, column, end_line, end_column)
