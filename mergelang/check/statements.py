"""Checking statements: models, assignments, ``for`` loops, conventions, Merge Board lines.

Each statement defines names, adds steps or saves, or sets the convention. A ``for`` loop's
body is checked once per iteration with the loop variable bound (so its steps and saves are
per iteration). A Merge Board line (``OUTPUT = A + B, 0.5``) becomes a weighted_sum or
add_difference step, defines ``OUTPUT`` when it is a name, and saves it as
:func:`~mergelang.check.checked_recipe.merge_board_output_path` says.
"""

from __future__ import annotations

from decimal import Decimal

from mergelang.block_weights import vocabulary
from mergelang.check.calls import Unconverted
from mergelang.check.checked_recipe import (
    BoundArg,
    InputRef,
    MethodCall,
    ModelSource,
    SaveTarget,
    Step,
    StepRef,
    merge_board_output_path,
)
from mergelang.check.saves import SaveChecker
from mergelang.check.scope import (
    BlockValue,
    InvalidValue,
    ModelValue,
    Usage,
    Value,
    WeightsValue,
    describe,
    did_you_mean,
    is_block_word,
)
from mergelang.errors import Span
from mergelang.io.file_formats import implied_format
from mergelang.lang import ast
from mergelang.lang.formatter import format_iterable
from mergelang.lang.syntax_errors import RESERVED_WORDS
from mergelang.methods import get_method

try:
    from mergelang.arch.conventions import CONVENTION_NAMES, DEFAULT_CONVENTION
except ImportError:  # pragma: no cover - the architectures package ships with mergelang
    CONVENTION_NAMES = ("mbw", "supermerger", "sd_mecha", "kohya")
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


class StatementChecker(SaveChecker):
    """Statements, one at a time, ``for`` loop bodies once per iteration."""

    convention: str = DEFAULT_CONVENTION
    convention_span: Span | None = None  # where the convention statement chose it
    loop_statements: int = 0  # statements the loops ran so far (see MAX_LOOP_STATEMENTS)
    too_many_loop_statements: bool = False

    def _statement(self, stmt: ast.Statement, *, top_level: bool) -> None:
        if isinstance(stmt, ast.ModelDecl):
            if self._at_top(stmt, top_level, "model declarations"):
                self._model_decl(stmt)
        elif isinstance(stmt, ast.Assign):
            self._assign(stmt)
        elif isinstance(stmt, ast.Save):
            self._save(stmt)
        elif isinstance(stmt, ast.For):
            self._for(stmt)
        elif isinstance(stmt, ast.MergeBoard):
            if self._at_top(stmt, top_level, "Merge Board lines"):
                self._merge_board(stmt)
        elif isinstance(stmt, ast.PresetsImport):
            self._at_top(stmt, top_level, "presets statements")
        elif isinstance(stmt, ast.ConventionChoice) and self._at_top(
            stmt, top_level, "convention statements"
        ):
            self._convention(stmt)
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
                self._unbound_placeholders(source)
                self._define_invalid(stmt.name, stmt)
                return
            ref = source.render()
            if not ref.strip():
                self.sink.error("the model path is empty", source.span, code="empty-path")
                self._define_invalid(stmt.name, stmt)
                return
            model = ModelSource(stmt.name, "path", ref, span=source.span)
        else:
            value = self._variable_value(source)
            if value is None:
                self._define_invalid(stmt.name, stmt)
                return
            model = ModelSource(stmt.name, "variable", value, source.name, span=source.span)
        if self._define(
            stmt.name, stmt.name_span, ModelValue(InputRef(stmt.name), stmt.name), "model", stmt
        ):
            self.models[stmt.name] = model
            self.usage[id(stmt)] = Usage(stmt.name, "model", stmt.name_span)

    def _assign(self, stmt: ast.Assign) -> None:
        value = self._eval(stmt.value, "any")
        if isinstance(value, InvalidValue):
            self._define_invalid(stmt.name, stmt)
            return
        step_name = self._step_name(stmt.name)
        if isinstance(value, ModelValue):
            step = Step(step_name, "model", value.expr, stmt.cached, "assign", span=stmt.span)
            bound: ModelValue | WeightsValue = ModelValue(StepRef(step_name), stmt.name)
        elif isinstance(value, WeightsValue):
            if stmt.cached:
                self.sink.error(
                    "only models are cached; this is block weights",
                    stmt.span,
                    code="type",
                    hint=f"write {stmt.name} = ... without cache",
                )
            step = Step(step_name, "weights", value.weights, False, "assign", span=stmt.span)
            bound = value
        else:
            self.sink.error(
                f"'{stmt.name}' would hold {describe(value)}; a name holds a model or weights",
                stmt.value.span,
                code="type",
            )
            self._define_invalid(stmt.name, stmt)
            return
        if self._define(stmt.name, stmt.name_span, bound, "intermediate", stmt):
            self.steps.append(step)
            self.usage.setdefault(id(stmt), Usage(stmt.name, "intermediate", stmt.name_span))

    def _for(self, stmt: ast.For) -> None:
        values = self._iterable(stmt.iterable)
        var = stmt.var
        problem = None
        if is_block_word(var):
            problem = f"'{var}' is a block name and cannot be a loop variable"
        elif var in RESERVED_WORDS:
            problem = f"'{var}' is a reserved word and cannot be a loop variable"
        elif var in self.loop:
            problem = f"'{var}' is already the variable of an enclosing loop"
        elif self._lookup(var) is not None or var in self.later:
            problem = f"the loop variable '{var}' hides a model or intermediate of that name"
        elif self.presets.get(var) is not None:
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
            self.loop[var] = value
            self.loop_names.append(var)
            self.locals.append({})
            try:
                for body_stmt in stmt.body:
                    self._statement(body_stmt, top_level=False)
            finally:
                self.locals.pop()
                self.loop_names.pop()
                del self.loop[var]

    def _count_loop_statements(self, stmt: ast.For, count: int) -> bool:
        """Count the statements ``count`` runs of ``stmt``'s body make; ``False`` (reported
        once) when the loops would run more than :data:`MAX_LOOP_STATEMENTS` in all."""
        self.loop_statements += count * len(stmt.body)
        if self.loop_statements <= MAX_LOOP_STATEMENTS:
            return True
        if not self.too_many_loop_statements:
            self.too_many_loop_statements = True
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
            blocks = self._block_range(iterable)
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
            return [self._eval(ast.Number(n, span=iterable.span), "any") for n in numbers]
        if not iterable.items:
            self.sink.error("the list is empty", iterable.span, code="bad-iterable")
            return None
        values: list[Value] = []
        for item in iterable.items:
            if isinstance(item, ast.Name) and item.name in vocabulary().order:
                values.append(BlockValue(item.name))
                continue
            value = self._eval(item, "any")
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

    # -- Merge Board lines

    def _merge_board(self, stmt: ast.MergeBoard) -> None:
        if not self._merge_board_line(stmt):
            self._define_invalid(stmt.output, stmt)

    def _merge_board_line(self, stmt: ast.MergeBoard) -> bool:
        """Check a Merge Board line, define its output and save it; ``False`` if it fails."""
        index = self.merge_board_number[id(stmt)]
        self.merge_board_steps[index] = None
        count = len(stmt.operands)
        method_name = {2: "weighted_sum", 3: "add_difference"}.get(count)
        models = [self._operand(op, index) for op in stmt.operands]
        if method_name is None:
            self.sink.error(
                f"a Merge Board line merges 2 models (weighted sum) or 3 (add difference), "
                f"not {count}",
                stmt.operands[min(count, 4) - 1].span,
                code="merge-board",
            )
            return False
        spec = get_method(method_name)
        if spec is None:  # pragma: no cover - the linear methods always register
            self.sink.error(f"method {method_name} is not available", stmt.span, code="method")
            return False
        alpha = self._eval(stmt.multiplier, "weights")
        base = self._eval(stmt.base, "weights") if stmt.base is not None else None
        args: list[BoundArg] = []
        ok = True
        for param, model, operand in zip(spec.model_params, models, stmt.operands, strict=False):
            if model is None:
                ok = False
                continue
            args.append(BoundArg(param.name, model.expr, span=operand.span))
        for param_name, value, node in (
            ("alpha", alpha, stmt.multiplier),
            ("base", base, stmt.base),
        ):
            scalar_param = spec.param(param_name)
            assert scalar_param is not None
            if value is None or node is None:
                args.append(BoundArg(param_name, None))
                continue
            converted = self._convert(spec, scalar_param, value, node.span)
            if isinstance(converted, Unconverted):
                ok = False
                continue
            args.append(BoundArg(param_name, converted, span=node.span))
        output = stmt.output
        duplicate = self.merge_board_first[output]
        if duplicate is not stmt:
            self.sink.error(
                f"the output '{output}' is already made on line {duplicate.span.line}",
                stmt.output_span,
                code="duplicate-name",
            )
            return False
        path = merge_board_output_path(
            output, safetensors=stmt.format is not None and stmt.format.name == "safetensors"
        )
        if ".." in path.split("/") or not path.split("/")[0] or path.startswith("."):
            self.sink.error(
                f"the output name '{output}' makes no usable file name",
                stmt.output_span,
                code="merge-board",
                hint="use letters, digits, spaces, - and _; / makes sub-folders",
            )
            return False
        if not ok:
            return False
        expr = MethodCall(method_name, tuple(args), span=stmt.span)
        step_name = output
        binding = ModelValue(StepRef(output), output)
        # An output that is no plain name (or is a reserved word) only names a file.
        nameable = output.isidentifier() and output not in RESERVED_WORDS
        if nameable and not self._define(output, stmt.output_span, binding, "merge_board", stmt):
            return False
        self.steps.append(Step(step_name, "model", expr, False, "merge_board", span=stmt.span))
        self.merge_board_steps[index] = step_name
        dtype = stmt.dtype.name if stmt.dtype is not None else "fp32"
        file_format = implied_format(path)
        self._add_save(
            SaveTarget(StepRef(step_name), path, dtype, format=file_format, span=stmt.span),
            stmt.output_span,
        )
        return True
