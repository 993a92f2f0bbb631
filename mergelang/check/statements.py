"""Checking statements: models, assignments, saves, ``for`` loops and the convention.

:class:`StatementChecker` takes one statement at a time: a model declaration or an
assignment defines a name (in :class:`~mergelang.check.scope.Scope`) and adds an input or a
step, a ``save`` goes to :class:`~mergelang.check.saves.SaveChecker`, a ``convention`` sets
the convention. A ``for`` loop's body is checked once per iteration with the loop variable
bound, so its steps and saves are per iteration; the loops of a recipe may run
:data:`MAX_LOOP_STATEMENTS` statements in all. Model declarations, presets and conventions
belong at the top level. Expressions are :class:`~mergelang.check.expressions.ExpressionChecker`'s.
"""

from __future__ import annotations

import re
from dataclasses import replace
from decimal import Decimal

from mergelang.block_weights import vocabulary
from mergelang.check.checked_recipe import InputRef, ModelSource, Step, StepRef
from mergelang.check.expressions import ExpressionChecker
from mergelang.check.saves import SaveChecker
from mergelang.check.scope import BindingKind, Scope, Usage
from mergelang.check.sink import CheckerSink
from mergelang.check.values import (
    BlockValue,
    InvalidValue,
    ModelValue,
    Value,
    WeightsValue,
    describe,
    did_you_mean,
    is_block_word,
)
from mergelang.errors import Span
from mergelang.lang import ast
from mergelang.lang.formatter import format_iterable
from mergelang.lang.syntax_errors import RESERVED_WORDS

_SHA256_PIN = re.compile(r"[0-9a-f]{10,64}")
"""A model pin: the first 10 (AutoV2) to 64 hex digits of the file's sha256."""

try:
    from mergelang.arch.conventions import CONVENTION_NAMES, DEFAULT_CONVENTION
except ImportError:  # pragma: no cover - the architectures package ships with mergelang
    CONVENTION_NAMES = ("mbw", "kohya", "supermerger", "supermerger_2023", "sd_mecha")
    DEFAULT_CONVENTION = "mbw"

__all__ = ["MAX_LOOP_STATEMENTS", "MAX_RANGE_VALUES", "StatementChecker"]

MAX_RANGE_VALUES = 1000
"""The most values a numeric range in a ``for`` loop may give (a guard against typos such as
``0..100 step 0.001``; a list or nested loops can still make more outputs)."""

MAX_LOOP_STATEMENTS = 10_000
"""The most statements the ``for`` loops of a recipe may run in all (each loop's values times
the statements of its body, nested loops included). A sweep of every block at 25 values makes
625 outputs; nested loops that multiply past this would write thousands of checkpoints and
take the checker minutes to expand."""


class StatementChecker:
    """Statements, one at a time, ``for`` loop bodies once per iteration.

    ``steps`` collects the named steps in recipe order; ``convention`` is the one chosen
    (``convention_span`` where), :data:`~mergelang.arch.conventions.DEFAULT_CONVENTION`
    without a convention statement.
    """

    def __init__(
        self,
        scope: Scope,
        sink: CheckerSink,
        expressions: ExpressionChecker,
        saves: SaveChecker,
    ) -> None:
        self.scope = scope
        self.sink = sink
        self.expressions = expressions
        self.saves = saves
        self.steps: list[Step] = []
        self.convention: str = DEFAULT_CONVENTION
        self.convention_span: Span | None = None
        self._loop_statements = 0  # statements the loops ran so far (see MAX_LOOP_STATEMENTS)
        self._too_many_loop_statements = False

    def check(self, stmt: ast.Statement, *, top_level: bool) -> None:
        """Check one statement (and, for a ``for`` loop, its body at every iteration)."""
        if isinstance(stmt, ast.ModelDecl):
            if self._at_top(stmt, top_level, "model declarations"):
                self._model_decl(stmt)
        elif isinstance(stmt, ast.Assign):
            self._assign(stmt)
        elif isinstance(stmt, ast.Save):
            self.saves.save(stmt)
        elif isinstance(stmt, ast.For):
            self._for(stmt)
        elif isinstance(stmt, ast.PresetsImport):
            self._at_top(stmt, top_level, "presets statements")
        elif isinstance(stmt, ast.ConventionChoice):
            if self._at_top(stmt, top_level, "convention statements"):
                self._convention(stmt)
        elif isinstance(stmt, ast.Invalid):
            self.expressions.report(stmt)
        elif isinstance(stmt, ast.MergeBoard):
            raise TypeError("Merge Board lines are lowered before checking")
        # ast.VarDoc documents a variable and checks nothing.

    def _at_top(self, stmt: ast.Node, top_level: bool, what: str) -> bool:
        if not top_level:
            self.sink.error(
                f"{what} belong at the top level, not inside a for loop",
                stmt.span,
                code="not-in-loop",
                hint="move it above the for loop",
            )
        return top_level

    def _model_decl(self, stmt: ast.ModelDecl) -> None:
        source = stmt.source
        if isinstance(source, ast.String):
            if source.placeholders:
                self.expressions.report_unbound_placeholders(source)
                self.scope.define_invalid(stmt.name, stmt)
                return
            ref = source.render()
            if not ref.strip():
                self.sink.error("the model path is empty", source.span, code="empty-path")
                self.scope.define_invalid(stmt.name, stmt)
                return
            model = ModelSource(stmt.name, "path", ref, span=source.span)
        else:
            value = self.expressions.variable_value(source)
            if value is None:
                self.scope.define_invalid(stmt.name, stmt)
                return
            model = ModelSource(stmt.name, "variable", value, source.name, span=source.span)
        if stmt.pin is not None:
            pin = stmt.pin.value.strip().lower()
            if not _SHA256_PIN.fullmatch(pin):
                self.sink.error(
                    f"a sha256 pin is 10 to 64 hexadecimal digits, not '{stmt.pin.value}'",
                    stmt.pin.span,
                    code="bad-pin",
                    hint='e.g. sha256 "6ce0161689" (the AutoV2 hash) or all 64 digits',
                )
                self.scope.define_invalid(stmt.name, stmt)
                return
            model = replace(model, sha256=pin, sha256_span=stmt.pin.span)
        bound = ModelValue(InputRef(stmt.name), stmt.name)
        if self.scope.define(stmt.name, stmt.name_span, bound, "model", stmt):
            self.expressions.models[stmt.name] = model
            self.scope.track(stmt, Usage(stmt.name, "model", stmt.name_span))

    def _assign(self, stmt: ast.Assign) -> None:
        value = self.expressions.eval(stmt.value, "any")
        if isinstance(value, InvalidValue):
            self.scope.define_invalid(stmt.name, stmt)
            return
        step_name = self.scope.step_name(stmt.name)
        if isinstance(value, ModelValue):
            step = Step(step_name, "model", value.expr, stmt.cached, stmt.origin, span=stmt.span)
            bound: ModelValue | WeightsValue = ModelValue(StepRef(step_name), stmt.name)
        elif isinstance(value, WeightsValue):
            if stmt.cached:
                self.sink.error(
                    "only models are cached; this is block weights",
                    stmt.span,
                    code="type",
                    hint=f"write {stmt.name} = ... without cache",
                )
            step = Step(step_name, "weights", value.weights, False, stmt.origin, span=stmt.span)
            bound = value
        else:
            self.sink.error(
                f"'{stmt.name}' would hold {describe(value)}; a name holds a model or weights",
                stmt.value.span,
                code="type",
            )
            self.scope.define_invalid(stmt.name, stmt)
            return
        kind: BindingKind = "merge_board" if stmt.origin == "merge_board" else "intermediate"
        if self.scope.define(stmt.name, stmt.name_span, bound, kind, stmt):
            self.steps.append(step)
            self.scope.track(stmt, Usage(stmt.name, "intermediate", stmt.name_span))

    def _for(self, stmt: ast.For) -> None:
        values = self._iterable(stmt.iterable)
        var = stmt.var
        problem = None
        if is_block_word(var):
            problem = f"'{var}' is a block name and cannot be a loop variable"
        elif var in RESERVED_WORDS:
            problem = f"'{var}' is a reserved word and cannot be a loop variable"
        elif var in self.scope.loop:
            problem = f"'{var}' is already the variable of an enclosing loop"
        elif self.scope.lookup(var) is not None or var in self.scope.later:
            problem = f"the loop variable '{var}' hides a model or intermediate of that name"
        elif self.scope.presets.get(var) is not None:
            problem = f"the loop variable '{var}' hides the preset of that name"
        if problem is not None:
            self.sink.error(
                problem,
                stmt.var_span,
                code="loop-variable",
                hint="pick another name, e.g. blk or v",
            )
            return
        if values is None or not self._count_loop_statements(stmt, len(values)):
            return
        for value in values:
            with self.scope.iteration(var, value):
                for body_stmt in stmt.body:
                    self.check(body_stmt, top_level=False)

    def _count_loop_statements(self, stmt: ast.For, count: int) -> bool:
        """Count the statements ``count`` runs of ``stmt``'s body make; ``False`` (reported
        once) when the loops would run more than :data:`MAX_LOOP_STATEMENTS` in all."""
        self._loop_statements += count * len(stmt.body)
        if self._loop_statements <= MAX_LOOP_STATEMENTS:
            return True
        if not self._too_many_loop_statements:
            self._too_many_loop_statements = True
            end = stmt.iterable.span
            self.sink.error(
                f"the for loops would run more than {MAX_LOOP_STATEMENTS} statements in all",
                Span(stmt.span.line, stmt.span.column, end.end_line, end.end_column),
                code="too-many-iterations",
                hint="each run of a save writes a checkpoint: split the sweep into several "
                "recipes, or loop over fewer values",
            )
        return False

    def _iterable(self, iterable: ast.Iterable) -> list[Value] | None:
        if isinstance(iterable, ast.BlockRange):
            blocks = self.expressions.weights.block_range(iterable)
            return None if blocks is None else [BlockValue(b) for b in blocks]
        if isinstance(iterable, ast.Name):
            groups = vocabulary().groups
            if iterable.name in groups:
                return [BlockValue(b) for b in groups[iterable.name]]
            self.sink.error(
                f"a for loop iterates a block range, a group, a list or a numeric range, "
                f"not '{iterable.name}'",
                iterable.span,
                code="bad-iterable",
                hint="for blk in IN00..OUT11:  /  for blk in OUT:  /  for v in [0.25, 0.5]:  /  "
                "for v in 0.1..0.9 step 0.2:",
            )
            return None
        if isinstance(iterable, ast.NumberRange):
            numbers = self._number_range(iterable)
            if numbers is None:
                return None
            evaluate = self.expressions.eval
            return [evaluate(ast.Number(n, span=iterable.span), "any") for n in numbers]
        if not iterable.items:
            self.sink.error("the list is empty", iterable.span, code="bad-iterable")
            return None
        values: list[Value] = []
        for item in iterable.items:
            if (
                isinstance(item, ast.Name)
                and item.written is None
                and item.name in vocabulary().order
            ):
                values.append(BlockValue(item.name))
                continue
            value = self.expressions.eval(item, "any")
            if isinstance(value, InvalidValue):
                return None
            values.append(value)
        return values

    def _number_range(self, node: ast.NumberRange) -> list[float] | None:
        """The numbers of ``start..end step s``, or ``None`` after reporting why there are none.

        The values are computed in decimal from the numbers as written, so ``0.1..0.9 step
        0.2`` gives exactly 0.1, 0.3, 0.5, 0.7, 0.9 (no ``0.30000000000000004``) and the end is
        included when a whole number of steps reaches it.
        """
        start = Decimal(repr(node.start.value))
        end = Decimal(repr(node.end.value))
        step = Decimal(1) if node.step is None else Decimal(repr(node.step.value))
        written = format_iterable(node)
        if step == 0:
            quarter = ast.Number(0.25)
            where = node.span if node.step is None else node.step.span
            self.sink.error(
                "the step of a range cannot be 0",
                where,
                code="bad-iterable",
                hint="e.g. " + format_iterable(ast.NumberRange(node.start, node.end, quarter)),
            )
            return None
        count = int((end - start) / step) + 1 if (end - start) * step >= 0 else 0
        if count == 0:
            self.sink.error(
                f"the range {written} is empty: the step goes away from the end",
                node.span,
                code="bad-iterable",
                hint="count down with a negative step, e.g. 0.9..0.1 step -0.2"
                if step > 0
                else "count up with a positive step, e.g. 0.1..0.9 step 0.2",
            )
            return None
        if count > MAX_RANGE_VALUES:
            # A tiny step can make a number hundreds of digits long: not worth printing.
            how_many = str(count) if count < 10**12 else "over 10^12"
            self.sink.error(
                f"the range {written} has {how_many} values; a loop runs at most "
                f"{MAX_RANGE_VALUES} times",
                node.span,
                code="bad-iterable",
                hint="use a larger step",
            )
            return None
        return [float(start + i * step) for i in range(count)]

    def _convention(self, stmt: ast.ConventionChoice) -> None:
        name = stmt.name.name
        if self.convention_span is not None:
            self.sink.error(
                f"the convention is already chosen on line {self.convention_span.line}",
                stmt.span,
                code="duplicate-convention",
            )
            return
        self.convention_span = stmt.span
        if name not in CONVENTION_NAMES:
            hint = did_you_mean(name, CONVENTION_NAMES)
            self.sink.error(
                f"unknown convention '{name}'",
                stmt.name.span,
                code="unknown-convention",
                hint=(hint + " " if hint else "") + "conventions: " + ", ".join(CONVENTION_NAMES),
            )
            return
        self.convention = name
