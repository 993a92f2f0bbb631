"""What an expression is worth while the checker walks a recipe, and how messages name it.

An expression's value is a :class:`ModelValue` (a :data:`ModelExpr` and a label for
messages), a :class:`WeightsValue` (evaluated :class:`BlockWeights`, and the number when it
is a plain one), a :class:`TextValue`, a :class:`BlockValue` (a loop variable over blocks)
or :data:`INVALID` (its error is already reported, so using it reports nothing more).
:class:`Evaluator` is what the parts of the expression checker call back into. The helpers
below say what a value is in words, fill a template from it, and suggest a close name.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, TypeAlias

from mergelang.block_weights import DEFAULT_KEY, BlockWeights, format_number, vocabulary
from mergelang.check.checked_recipe import ModelExpr
from mergelang.lang import ast

__all__ = [
    "INVALID",
    "BlockValue",
    "Evaluator",
    "InvalidValue",
    "ModelValue",
    "TextValue",
    "Value",
    "Want",
    "WeightsValue",
    "describe",
    "did_you_mean",
    "finite_number",
    "is_block_word",
    "not_a_model",
    "template_text",
]


@dataclass(frozen=True)
class ModelValue:
    """A model: its expression, and how messages name it."""

    expr: ModelExpr
    label: str


@dataclass(frozen=True)
class WeightsValue:
    """Block weights, evaluated."""

    weights: BlockWeights
    number: float | None  # set when the value is a plain number


@dataclass(frozen=True)
class TextValue:
    """A string, templates filled."""

    value: str


@dataclass(frozen=True)
class BlockValue:
    """A block name: the value of a loop variable that runs over blocks."""

    name: str


class InvalidValue:
    """A value whose error was already reported: using it reports nothing more."""


INVALID = InvalidValue()
Value: TypeAlias = ModelValue | WeightsValue | TextValue | BlockValue | InvalidValue
Want: TypeAlias = Literal["model", "weights", "any"]
"""What the context of an expression wants: it decides what a ``$VARIABLE`` is (a number or
preset for weights, a path for a model) and how an unknown name is reported."""


class Evaluator(Protocol):
    """What the weights and call checkers need of the expression checker they serve."""

    def eval(self, expr: ast.Expr, want: Want) -> Value:
        """The value of ``expr``, every problem in it reported."""

    def render(self, node: ast.String) -> str | None:
        """The text of a string, its templates filled (``None`` after reporting a problem)."""


def describe(value: Value) -> str:
    """What the value is, for messages: ``a number``, ``a model (sd15)``..."""
    if isinstance(value, ModelValue):
        return f"a model ({value.label})"
    if isinstance(value, WeightsValue):
        return "a number" if value.number is not None else "block weights"
    if isinstance(value, TextValue):
        return "a string"
    if isinstance(value, BlockValue):
        return f"a block name ({value.name})"
    return "an invalid value"


def not_a_model(what: str, value: Value) -> str:
    """The message for ``what`` (``argument 'a' of weighted_sum``) holding ``value``, no
    model."""
    return f"{what} must be a model, not {describe(value)}"


def template_text(value: Value) -> str:
    """The text a ``{name}`` template placeholder is filled with."""
    if isinstance(value, BlockValue):
        return value.name
    if isinstance(value, WeightsValue) and value.number is not None:
        return format_number(value.number)
    if isinstance(value, TextValue):
        return value.value
    if isinstance(value, ModelValue):
        return value.label
    return "?"


def did_you_mean(name: str, candidates: Sequence[str]) -> str | None:
    """A hint naming the candidate closest to ``name`` (case aside), if any is close."""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    if not close:
        folded = {c.casefold(): c for c in candidates}
        close = [folded[c] for c in difflib.get_close_matches(name.casefold(), list(folded), 1)]
    return f"did you mean '{close[0]}'?" if close else None


def finite_number(text: str) -> float | None:
    """``text`` as a float, or ``None`` when it is not a finite number."""
    try:
        number = float(text)
    except ValueError:
        return None
    return number if number == number and abs(number) != float("inf") else None


def is_block_word(name: str) -> bool:
    """Whether ``name`` is reserved for blocks: a block, a group, ``BASE`` or ``default``."""
    vocab = vocabulary()
    return vocab.is_block(name) or name in vocab.groups or name == DEFAULT_KEY
