"""Checking expressions: a value for every expression, and an error for every misuse.

:meth:`ExpressionChecker._eval` dispatches on the expression: numbers and strings (templates
filled from loop variables), names (loop variables, models, intermediates, presets, with a
"did you mean" for unknown ones), ``$VARIABLE``/``__VARIABLE__`` bound on the command line
(a number, a preset name or a model path, by what the context wants), Merge Board operands and
``__On__`` output references, method calls (:mod:`mergelang.check.calls`) and arithmetic and
weights literals (:mod:`mergelang.check.weights`).
"""

from __future__ import annotations

from mergelang.block_weights import BlockWeights
from mergelang.check.calls import CallChecker
from mergelang.check.checked_recipe import InputRef, ModelSource, StepRef
from mergelang.check.scope import (
    INVALID,
    InvalidValue,
    ModelValue,
    TextValue,
    Value,
    Want,
    WeightsValue,
    describe,
    did_you_mean,
    finite_number,
    is_block_word,
)
from mergelang.check.weights import WeightsChecker
from mergelang.errors import Span
from mergelang.lang import ast
from mergelang.methods import method_names

__all__ = ["ExpressionChecker"]


class ExpressionChecker(CallChecker, WeightsChecker):
    """Expressions: names, variables, Merge Board operands, calls and arithmetic."""

    def _eval(self, expr: ast.Expr, want: Want) -> Value:
        if isinstance(expr, ast.Number):
            return WeightsValue(BlockWeights.scalar(expr.value), expr.value)
        if isinstance(expr, ast.String):
            text = self._render(expr)
            return INVALID if text is None else TextValue(text)
        if isinstance(expr, ast.Name):
            return self._name(expr, want)
        if isinstance(expr, ast.Variable):
            return self._variable(expr, want)
        if isinstance(expr, ast.OutputRef):
            found = self._output_ref(expr, None)
            return INVALID if found is None else found
        if isinstance(expr, ast.ModelLiteral):
            return self._operand(expr, 0) or INVALID
        if isinstance(expr, ast.Call):
            return self._call(expr)
        if isinstance(expr, ast.BinaryOp):
            return self._binary(expr)
        if isinstance(expr, ast.Negate):
            return self._negate(expr)
        if isinstance(expr, ast.Vector):
            return self._vector(expr)
        if isinstance(expr, ast.Invalid):
            raise TypeError("ast.Invalid comes from lowering, which this checker does not read")
        return self._map(expr)

    def _name(self, node: ast.Name, want: Want) -> Value:
        name = node.name
        if name in self.loop:
            return self.loop[name]
        binding = self._lookup(name)
        if binding is not None:
            self._mark_used(binding)
            if binding.failed:
                return INVALID
            return binding.value
        preset = self.presets.get(name)
        if preset is not None:
            return WeightsValue(preset, None)
        if is_block_word(name):
            self.sink.error(
                f"'{name}' is a block name; blocks are used as weight map keys",
                node.span,
                code="block-as-value",
                hint=f"write {{{name}: 0.5, default: 0}}",
            )
            return INVALID
        line = self.later.get(name)
        if line is not None:
            if line == node.span.line:
                message = f"'{name}' is used in its own definition"
            else:
                message = f"'{name}' is used before its definition on line {line}"
            self.sink.error(
                message,
                node.span,
                code="use-before-definition",
                hint="a name can only use names defined above it",
            )
            return INVALID
        candidates = [
            *self.globals,
            *(n for scope in self.locals for n in scope),
            *self.loop,
            *self.presets.names(),
        ]
        hint = did_you_mean(name, candidates)
        if hint is None and name in method_names():
            hint = f"{name} is a merge method: call it, {name}(a, b, ...)"
        if want == "weights":
            self.sink.error(
                f"unknown preset or name '{name}'",
                node.span,
                code="unknown-preset",
                hint=hint or "presets: " + ", ".join(self.presets.names()[:8]) + ", ...",
            )
        else:
            self.sink.error(f"undefined name '{name}'", node.span, code="undefined-name", hint=hint)
        return INVALID

    def _variable_value(self, node: ast.Variable) -> str | None:
        value = self.variables.get(node.name)
        if value is None and node.name not in self.unbound_reported:
            # Reported once, where it is first used: the fix is one --set for every use.
            self.unbound_reported.add(node.name)
            hint = f"bind it on the command line: --set {node.name}=path/to/model.safetensors"
            if node.name[:1] == "O" and node.name[1:].isdigit():  # __O0__, __O01__
                hint = "__On__ is the output of Merge Board line n, counted from __O1__"
            self.sink.error(
                f"the variable {node.text} is not bound",
                node.span,
                code="unbound-variable",
                hint=hint,
            )
        return value

    def _variable(self, node: ast.Variable, want: Want) -> Value:
        value = self._variable_value(node)
        if value is None:
            return INVALID
        number = finite_number(value)
        if want == "weights" or (want == "any" and number is not None):
            if number is not None:
                return WeightsValue(BlockWeights.scalar(number), number)
            preset = self.presets.get(value)
            if preset is not None:
                return WeightsValue(preset, None)
            self.sink.error(
                f"{node.text} is '{value}', which is neither a number nor a preset name",
                node.span,
                code="variable-not-number",
                hint=f"--set {node.name}=0.5",
            )
            return INVALID
        key = self.model_by_variable.get(node.name)
        if key is None:
            key = node.text
            self.model_by_variable[node.name] = key
            self.models[key] = ModelSource(key, "variable", value, node.name, span=node.span)
        return ModelValue(InputRef(key), node.text)

    def _expect_model(self, value: Value, span: Span, what: str) -> ModelValue | None:
        if isinstance(value, ModelValue):
            return value
        if not isinstance(value, InvalidValue):
            self.sink.error(f"{what} must be a model, not {describe(value)}", span, code="type")
        return None

    # -- Merge Board operands

    def _operand(self, operand: ast.MergeBoardOperand, line_index: int) -> ModelValue | None:
        if isinstance(operand, ast.ModelLiteral):
            name = operand.text
            if name.isidentifier() and (self._lookup(name) is not None or name in self.later):
                value = self._name(ast.Name(name, span=operand.span), "model")
                return self._expect_model(value, operand.span, "a Merge Board operand")
            key = name
            if key not in self.models:
                self.models[key] = ModelSource(name, "literal", name, span=operand.span)
                defined = [n for n, b in self.globals.items() if b.kind != "merge_board"]
                hint = did_you_mean(name, defined)
                if hint is not None and name not in self.literal_warned:
                    self.literal_warned.add(name)
                    self.sink.warning(
                        f"'{name}' is not a defined name, so it is read as a checkpoint file name",
                        operand.span,
                        code="literal-model",
                        hint=hint,
                    )
            return ModelValue(InputRef(key), name)
        if isinstance(operand, ast.OutputRef):
            return self._output_ref(operand, line_index)
        value = self._eval(operand, "model")
        return self._expect_model(value, operand.span, "a Merge Board operand")

    def _output_ref(self, ref: ast.OutputRef, line_index: int | None) -> ModelValue | None:
        total = len(self.merge_board_lines)
        n = ref.index
        if n > total:
            self.sink.error(
                f"{ref.text} refers to Merge Board line {n}, but the recipe has {total}",
                ref.span,
                code="output-ref",
                hint="__On__ is the output of the n-th Merge Board merge line (1-based)",
            )
            return None
        target = self.merge_board_lines[n - 1]
        if line_index is not None and n == line_index:
            self.sink.error(
                f"{ref.text} refers to this line's own output",
                ref.span,
                code="output-ref",
                hint="__On__ can only use earlier Merge Board lines",
            )
            return None
        if n not in self.merge_board_steps:
            self.sink.error(
                f"{ref.text} refers to a later line ({target.span.line})",
                ref.span,
                code="output-ref",
                hint="__On__ can only use earlier Merge Board lines",
            )
            return None
        step = self.merge_board_steps[n]
        if step is None:
            return None
        binding = self.globals.get(step)
        if binding is not None:
            self._mark_used(binding)
        return ModelValue(StepRef(step), ref.text)
