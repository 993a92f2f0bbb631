"""The grammar and the parser built from it, once per process.

The grammar is ``grammar/mergelang.lark`` in a checkout; a wheel ships it as
``mergelang/grammar/mergelang.lark``. :func:`recipe_parser` builds lark's LALR parser from it
(contextual lexer, positions kept, the indentation post-lexer
:class:`~mergelang.lang.postlexer.LinePostLexer` between lexer and parser) on first use and
keeps it. The post-lexer keeps per-parse state (comments, open brackets) on that one shared
object, so parses take :data:`PARSE_LOCK` while they use it.
"""

from __future__ import annotations

import functools
import importlib.resources
import threading
from pathlib import Path
from typing import NamedTuple

from lark import Lark

from mergelang.lang.postlexer import LinePostLexer

__all__ = ["GRAMMAR_NAME", "PARSE_LOCK", "RecipeParser", "grammar_text", "recipe_parser"]

GRAMMAR_NAME = "mergelang.lark"


def grammar_text() -> str:
    """The grammar, from the installed package (``mergelang/grammar``) or the checkout."""
    packaged = importlib.resources.files("mergelang") / "grammar" / GRAMMAR_NAME
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    checkout = Path(__file__).resolve().parents[2] / "grammar" / GRAMMAR_NAME
    return checkout.read_text(encoding="utf-8")


class RecipeParser(NamedTuple):
    """lark's parser and the post-lexer it feeds tokens through."""

    lark: Lark
    postlex: LinePostLexer


@functools.cache
def recipe_parser() -> RecipeParser:
    """The parser, built on first use."""
    postlex = LinePostLexer()
    lark = Lark(
        grammar_text(),
        parser="lalr",
        lexer="contextual",
        postlex=postlex,
        propagate_positions=True,
        maybe_placeholders=False,
    )
    return RecipeParser(lark, postlex)


PARSE_LOCK = threading.Lock()
"""Held for the whole of one parse: the post-lexer's state is shared (see the module doc)."""
