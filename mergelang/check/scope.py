"""The checker's view of a recipe while it walks it: values, bindings and scopes.

While checking, an expression's value is a :class:`ModelValue` (a :data:`ModelExpr` and a
label for messages), a :class:`WeightsValue` (evaluated :class:`BlockWeights`, and the number
when it is a plain one), a :class:`TextValue`, a :class:`BlockValue` (a loop variable over
blocks) or :data:`INVALID` (its error is already reported, so using it reports nothing more).

:class:`CheckerState` holds everything the checker collects (models, steps, saves, the
diagnostic sink) and the scopes names live in: top-level bindings, one scope per ``for``
iteration and the loop variables. The checker's other parts build on it: weights and
arithmetic (:mod:`mergelang.check.weights`), method calls (:mod:`mergelang.check.calls`),
expressions (:mod:`mergelang.check.expressions`), saves (:mod:`mergelang.check.saves`) and
statements (:mod:`mergelang.check.statements`).
"""

from __future__ import annotations

import abc
import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeAlias

from mergelang.block_weights import DEFAULT_KEY, BlockWeights, format_number, vocabulary
from mergelang.check.checked_recipe import ModelExpr, ModelSource, SaveTarget, Step, StepRef
from mergelang.errors import DiagnosticSink, Span
from mergelang.lang import ast
from mergelang.lang.syntax_errors import MAX_ERRORS, RESERVED_WORDS
from mergelang.presets import PresetTable

__all__ = [
    "INVALID",
    "Binding",
    "BlockValue",
    "CheckerSink",
    "CheckerState",
    "InvalidValue",
    "ModelValue",
    "TextValue",
    "TooManyErrors",
    "Usage",
    "Value",
    "Want",
    "WeightsValue",
    "describe",
    "did_you_mean",
    "finite_number",
    "is_block_word",
    "template_text",
]

# ---- values while checking -------------------------------------------------------------------


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


@dataclass
class Binding:
    """A name in scope: a model declaration, an intermediate, a Merge Board output."""

    name: str
    value: ModelValue | WeightsValue
    kind: Literal["model", "intermediate", "merge_board"]
    line: int
    statement: ast.Node
    failed: bool = False  # the statement had an error: uses of the name report nothing


@dataclass
class Usage:
    """How often the names a statement defines are used (over every loop iteration)."""

    name: str
    kind: Literal["model", "intermediate"]
    span: Span
    used: bool = False


# ---- the state every part of the checker shares ----------------------------------------------


class TooManyErrors(Exception):
    """Raised by :class:`CheckerSink` at :data:`~mergelang.lang.syntax_errors.MAX_ERRORS` distinct
    errors: the check stops there."""


@dataclass
class CheckerSink(DiagnosticSink):
    """A :class:`DiagnosticSink` that ends the check at ``MAX_ERRORS`` distinct errors (a loop
    body's error found at every iteration counts once), so a recipe with thousands of
    mistakes is not checked, and reported, for minutes."""

    distinct: set[tuple[str, str, Span | None]] = field(default_factory=set, repr=False)

    def error(self, message: str, span: Span | None, *, code: str, hint: str | None = None) -> None:
        super().error(message, span, code=code, hint=hint)
        self.distinct.add((code, message, span))
        if len(self.distinct) >= MAX_ERRORS:
            raise TooManyErrors

    def source_line(self, span: Span) -> str | None:
        """The text of the recipe line ``span`` starts on."""
        return self._line(span)


class CheckerState(abc.ABC):
    """What the checker has collected so far, the names in scope, and how names are bound.

    ``globals`` holds the top-level names; ``locals`` one scope per enclosing ``for``
    iteration; ``loop`` the loop variables' current values (``loop_names`` in nesting order).
    ``usage`` tracks, per defining statement, whether its name was used; ``later`` where each
    top-level name is defined, for "used before its definition". Evaluating an expression is
    :class:`~mergelang.check.expressions.ExpressionChecker`'s; the chosen convention is
    :class:`~mergelang.check.statements.StatementChecker`'s.
    """

    def __init__(
        self,
        recipe: ast.Recipe,
        variables: Mapping[str, str],
        base_dir: Path | None,
        presets: PresetTable,
    ) -> None:
        self.recipe = recipe
        self.variables = dict(variables)
        self.base_dir = base_dir
        self.presets = presets
        self.sink = CheckerSink(recipe.path, recipe.source)
        self.models: dict[str, ModelSource] = {}
        self.model_by_variable: dict[str, str] = {}
        self.steps: list[Step] = []
        self.saves: list[SaveTarget] = []
        self.save_paths: dict[str, Span] = {}
        self.globals: dict[str, Binding] = {}
        self.locals: list[dict[str, Binding]] = []
        self.loop: dict[str, Value] = {}
        self.loop_names: list[str] = []
        self.usage: dict[int, Usage] = {}
        self.later: dict[str, int] = {}
        self.merge_board_lines: list[ast.MergeBoard] = []
        self.merge_board_number: dict[int, int] = {}  # id(line) -> its 1-based number
        self.merge_board_first: dict[str, ast.MergeBoard] = {}  # output -> first line
        self.merge_board_steps: dict[int, str | None] = {}
        self.literal_warned: set[str] = set()
        self.unbound_reported: set[str] = set()

    @abc.abstractmethod
    def _eval(self, expr: ast.Expr, want: Want) -> Value:
        """The value of ``expr``, every problem in it reported (see ExpressionChecker)."""

    # -- names in scope

    def _lookup(self, name: str) -> Binding | None:
        for scope in reversed(self.locals):
            if name in scope:
                return scope[name]
        return self.globals.get(name)

    def _mark_used(self, binding: Binding) -> None:
        usage = self.usage.get(id(binding.statement))
        if usage is not None:
            usage.used = True

    def _define(
        self,
        name: str,
        span: Span,
        value: ModelValue | WeightsValue,
        kind: Literal["model", "intermediate", "merge_board"],
        stmt: ast.Node,
    ) -> bool:
        if is_block_word(name):
            self.sink.error(
                f"'{name}' is a block name and cannot name a value",
                span,
                code="reserved-name",
                hint="block names, groups (IN, M, OUT), BASE and default are reserved",
            )
            return False
        if name in RESERVED_WORDS:
            self.sink.error(
                f"'{name}' is a reserved word and cannot name a value",
                span,
                code="reserved-name",
                hint="reserved words: " + ", ".join(RESERVED_WORDS),
            )
            self._define_invalid(name, stmt)
            return False
        if name in self.loop:
            self.sink.error(
                f"'{name}' is the loop variable here and cannot be assigned",
                span,
                code="duplicate-name",
            )
            return False
        scope = self.locals[-1] if self.locals else self.globals
        previous = scope.get(name) or self.globals.get(name)
        if previous is not None:
            self.sink.error(
                f"'{name}' is already defined on line {previous.line}",
                span,
                code="duplicate-name",
                hint="give each model, intermediate and Merge Board output its own name",
            )
            return False
        if self.presets.get(name) is not None and not self.locals:
            self.sink.warning(
                f"'{name}' hides the preset of the same name",
                span,
                code="shadowed-preset",
            )
        scope[name] = Binding(name, value, kind, span.line, stmt)
        return True

    def _define_invalid(self, name: str, stmt: ast.Node) -> None:
        """Keep the name of a statement that failed defined, so its uses report nothing
        more (the statement's own error says what is wrong)."""
        scope = self.locals[-1] if self.locals else self.globals
        if name.isidentifier() and name not in scope:
            placeholder = ModelValue(StepRef(name), name)
            scope[name] = Binding(name, placeholder, "intermediate", stmt.span.line, stmt, True)
            self.usage.pop(id(stmt), None)

    def _step_name(self, name: str) -> str:
        if not self.loop_names:
            return name
        bindings = ",".join(f"{v}={template_text(self.loop[v])}" for v in self.loop_names)
        return f"{name}@{bindings}"

    # -- templates

    def _render(self, node: ast.String) -> str | None:
        missing = [p for p in node.placeholders if p.name not in self.loop]
        if missing:
            self._unbound_placeholders(node)
            return None
        return node.render({n: template_text(v) for n, v in self.loop.items()})

    def _unbound_placeholders(self, node: ast.String) -> None:
        for placeholder in node.placeholders:
            if placeholder.name in self.loop:
                continue
            hint = did_you_mean(placeholder.name, list(self.loop))
            self.sink.error(
                f"the template placeholder {{{placeholder.name}}} is not a loop variable here",
                placeholder.span,
                code="unbound-placeholder",
                hint=hint
                or "placeholders are filled from for-loop variables; write {{ for a literal brace",
            )
