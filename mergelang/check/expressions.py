"""Checking expressions: a value for every expression, and an error for every misuse.

:meth:`ExpressionChecker.eval` dispatches on the expression: numbers and strings (templates
filled from loop variables), names (loop variables, models, intermediates, presets, with a
"did you mean" for unknown ones), ``$VARIABLE``/``__VARIABLE__`` bound on the command line
(a number, a preset name or a model path, by what the context wants), checkpoints named
literally, and the problems a front-end pass left in the recipe
(:class:`~mergelang.lang.ast.Invalid`). Method calls are
:class:`~mergelang.check.calls.CallChecker`'s and arithmetic and weights literals
:class:`~mergelang.check.weights.WeightsChecker`'s; both call back here for the values of
their parts. The input models the expressions name are
collected in :attr:`ExpressionChecker.models`.
"""

from __future__ import annotations

from collections.abc import Mapping

from mergelang.block_weights import BlockWeights
from mergelang.check.calls import CallChecker
from mergelang.check.checked_recipe import InputRef, ModelSource
from mergelang.check.scope import Scope
from mergelang.check.sink import CheckerSink
from mergelang.check.values import (
    INVALID,
    InvalidValue,
    ModelValue,
    TextValue,
    Value,
    Want,
    WeightsValue,
    did_you_mean,
    finite_number,
    is_block_word,
    not_a_model,
    template_text,
)
from mergelang.check.weights import WeightsChecker
from mergelang.errors import Span
from mergelang.lang import ast
from mergelang.lang.formatter import format_expr
from mergelang.lang.glued_names import glued_text
from mergelang.methods import method_names

__all__ = ["ExpressionChecker"]


class ExpressionChecker:
    """Expressions: names, variables, literal checkpoints, strings, calls and arithmetic.

    ``models`` collects the recipe's input models as expressions name them: declared ones
    (added by the statement checker), ``$NAME``/``__NAME__`` bound on the command line (keyed
    by the variable as written) and checkpoints named literally (keyed by the name).
    """

    def __init__(
        self,
        scope: Scope,
        sink: CheckerSink,
        variables: Mapping[str, str],
    ) -> None:
        self.scope = scope
        self.sink = sink
        self.variables = variables
        self.models: dict[str, ModelSource] = {}
        self.calls = CallChecker(self, scope, sink)
        self.weights = WeightsChecker(self, scope, sink)
        self._model_by_variable: dict[str, str] = {}
        self._literal_warned: set[str] = set()
        self._unbound_reported: set[str] = set()

    def eval(self, expr: ast.Expr, want: Want) -> Value:
        """The value of ``expr``, every problem in it reported."""
        if isinstance(expr, ast.Number):
            return WeightsValue(BlockWeights.scalar(expr.value), expr.value)
        if isinstance(expr, ast.String):
            text = self.render(expr)
            return INVALID if text is None else TextValue(text)
        if isinstance(expr, ast.Name):
            return self._name(expr, want)
        if isinstance(expr, ast.Variable):
            return self._variable(expr, want)
        if isinstance(expr, ast.ModelLiteral):
            return self._model_literal(expr)
        if isinstance(expr, ast.Call):
            return self.calls.call(expr)
        if isinstance(expr, ast.BinaryOp):
            if self._glued_preset(expr):
                return INVALID
            return self.weights.binary(expr)
        if isinstance(expr, ast.Negate):
            return self.weights.negate(expr)
        if isinstance(expr, ast.Vector):
            return self.weights.vector(expr)
        if isinstance(expr, ast.WeightMap):
            return self.weights.weight_map(expr)
        if isinstance(expr, ast.Invalid):
            self.report(expr)
            return INVALID
        raise TypeError(f"{expr.text} is lowered before checking (mergelang.lang.merge_board)")

    def report(self, problem: ast.Invalid) -> None:
        """Check what a front-end pass left standing at a problem, then report it."""
        for part in problem.parts:
            value = self.eval(part, "model")
            if problem.operand_label is not None:
                self.expect_model(value, part.span, problem.operand_label)
        if problem.message is not None:
            self.sink.error(problem.message, problem.span, code=problem.code, hint=problem.hint)

    def expect_model(self, value: Value, span: Span, label: str) -> ModelValue | None:
        """``value`` if it is a model; otherwise ``None``, and an error naming it ``label``
        unless its own error is already reported."""
        if isinstance(value, ModelValue):
            return value
        if not isinstance(value, InvalidValue):
            self.sink.error(not_a_model(label, value), span, code="type")
        return None

    def _glued_preset(self, node: ast.BinaryOp) -> bool:
        """Report a preset name written bare, such as ``SMOOTHSTEP*2``, which would read as
        arithmetic; true if reported."""
        text = glued_text(node)
        presets = self.scope.presets
        if text is None or text not in presets:
            return False
        spelled = presets.spelling(text)
        self.sink.error(
            f"'{text}' reads as {format_expr(node.left)} {node.op} {format_expr(node.right)}, "
            f"but {text} is a preset",
            node.span,
            code="ambiguous-preset",
            hint=f"write the preset {text} as {spelled}; put spaces around "
            f"'{node.op}' for arithmetic",
        )
        return True

    # -- names and variables

    def _name(self, node: ast.Name, want: Want) -> Value:
        name = node.name
        scope = self.scope
        if name in scope.loop:
            return scope.loop[name]
        binding = scope.lookup(name)
        if binding is not None:
            scope.mark_used(binding)
            if binding.failed:
                return INVALID
            if node.written is not None and isinstance(binding.value, ModelValue):
                return ModelValue(binding.value.expr, node.written)
            return binding.value
        preset = self.scope.presets.get(name)
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
        line = scope.later.get(name)
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
        hint = did_you_mean(name, [*scope.names(), *self.scope.presets.spellings()])
        if hint is None and name in method_names():
            hint = f"{name} is a merge method: call it, {name}(a, b, ...)"
        if want == "weights":
            self.sink.error(
                f"unknown preset or name '{name}'",
                node.span,
                code="unknown-preset",
                hint=hint or "presets: " + ", ".join(self.scope.presets.spellings()[:8]) + ", ...",
            )
        else:
            self.sink.error(f"undefined name '{name}'", node.span, code="undefined-name", hint=hint)
        return INVALID

    def variable_value(self, node: ast.Variable, want: Want = "model") -> str | None:
        """The value ``--set`` binds the variable to; ``None`` (reported where the variable
        is first used, with a hint for what is wanted there) when it is not bound."""
        value = self.variables.get(node.name)
        if value is None and node.name not in self._unbound_reported:
            # Reported once, where it is first used: the fix is one --set for every use.
            self._unbound_reported.add(node.name)
            example = "0.5" if want == "weights" else "path/to/model.safetensors"
            hint = f"bind it on the command line: --set {node.name}={example}"
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
        value = self.variable_value(node, want)
        if value is None:
            return INVALID
        number = finite_number(value)
        if want == "weights" or (want == "any" and number is not None):
            if number is not None:
                return WeightsValue(BlockWeights.scalar(number), number)
            preset = self.scope.presets.get(value)
            if preset is not None:
                return WeightsValue(preset, None)
            self.sink.error(
                f"{node.text} is '{value}', which is neither a number nor a preset name",
                node.span,
                code="variable-not-number",
                hint=f"--set {node.name}=0.5",
            )
            return INVALID
        key = self._model_by_variable.get(node.name)
        if key is None:
            key = node.text
            self._model_by_variable[node.name] = key
            self.models[key] = ModelSource(key, "variable", value, node.name, span=node.span)
        return ModelValue(InputRef(key), node.text)

    def _model_literal(self, node: ast.ModelLiteral) -> Value:
        """A checkpoint named by its file name (a Merge Board operand naming nothing the
        recipe defines); a warning when the word is close to a name the recipe declares."""
        name = node.text
        if name not in self.models:
            self.models[name] = ModelSource(name, "literal", name, span=node.span)
            hint = did_you_mean(name, self.scope.declared())
            if hint is not None and name not in self._literal_warned:
                self._literal_warned.add(name)
                self.sink.warning(
                    f"'{name}' is not a defined name, so it is read as a checkpoint file name",
                    node.span,
                    code="literal-model",
                    hint=hint,
                )
        return ModelValue(InputRef(name), name)

    # -- templates

    def render(self, node: ast.String) -> str | None:
        """The text of a string, its ``{name}`` placeholders filled from the loop variables;
        ``None`` after reporting a placeholder that is no loop variable here."""
        loop = self.scope.loop
        if any(p.name not in loop for p in node.placeholders):
            self.report_unbound_placeholders(node)
            return None
        return node.render({n: template_text(v) for n, v in loop.items()})

    def report_unbound_placeholders(self, node: ast.String) -> None:
        """An error at every placeholder of ``node`` that is no loop variable here."""
        loop = self.scope.loop
        for placeholder in node.placeholders:
            if placeholder.name in loop:
                continue
            hint = did_you_mean(placeholder.name, list(loop))
            self.sink.error(
                f"the template placeholder {{{placeholder.name}}} is not a loop variable here",
                placeholder.span,
                code="unbound-placeholder",
                hint=hint
                or "placeholders are filled from for-loop variables; write {{ for a literal brace",
            )
