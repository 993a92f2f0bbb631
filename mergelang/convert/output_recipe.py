"""The recipe that made an output of mergelang, from its metadata.

Every output records its recipe's canonical text (``mergelang.recipe``) and, when its save is
inside ``for`` loops, the values of those loops' variables that made this one file
(``mergelang.bindings``: JSON ``{variable: value}``). :func:`recipe_of_output` gives the
recipe back with each such loop iterating that one value only, so running it makes this
output (and whatever else the same iteration saves) and nothing of the rest of the sweep.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping

from mergelang.lang import ast
from mergelang.lang.formatter import format_recipe
from mergelang.lang.parser import parse

__all__ = ["BINDINGS_KEY", "bindings_of", "recipe_of_output"]

RECIPE_KEY = "mergelang.recipe"
BINDINGS_KEY = "mergelang.bindings"


def bindings_of(metadata: Mapping[str, str]) -> dict[str, str]:
    """The loop values recorded in an output's metadata (empty when none or unreadable)."""
    try:
        found = json.loads(metadata.get(BINDINGS_KEY, "{}"))
    except ValueError:
        return {}
    if not isinstance(found, dict):
        return {}
    return {str(k): str(v) for k, v in found.items()}


def recipe_of_output(metadata: Mapping[str, str]) -> str | None:
    """The recipe that made the output whose metadata this is, its loop values bound;
    ``None`` when mergelang did not make it."""
    text = metadata.get(RECIPE_KEY)
    if text is None:
        return None
    bindings = bindings_of(metadata)
    if not bindings:
        return text
    recipe = parse(text)
    statements = tuple(_bind(stmt, bindings) for stmt in recipe.statements)
    bound = format_recipe(dataclasses.replace(recipe, statements=statements))
    values = ", ".join(f"{name} = {value}" for name, value in bindings.items())
    return f"# the loop values of this output: {values}\n{bound}"


def _bind(stmt: ast.Statement, bindings: Mapping[str, str]) -> ast.Statement:
    if not isinstance(stmt, ast.For):
        return stmt
    body = tuple(_bind(inner, bindings) for inner in stmt.body)
    value = bindings.get(stmt.var)
    if value is None:
        return dataclasses.replace(stmt, body=body)
    return dataclasses.replace(stmt, iterable=ast.Vector(items=(_literal(value),)), body=body)


def _literal(value: str) -> ast.Expr:
    """A loop value as the recipe writes it: a number, else a name (a block)."""
    try:
        return ast.Number(float(value))
    except ValueError:
        return ast.Name(value)
