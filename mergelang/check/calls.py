"""Checking method calls: binding arguments to a merge method's parameters.

Positional arguments bind in parameter order (a variadic parameter takes the rest), keywords
by name; every parameter is then checked against its kind: models must be models, weights
are evaluated and range-checked per block, numbers and ints checked against their range,
strings kept as text (one of the parameter's choices, where it declares them). The result
is a :class:`~mergelang.check.checked_recipe.MethodCall` whose
:class:`~mergelang.check.checked_recipe.BoundArg` values follow the method's parameter
order, defaults filled in.
"""

from __future__ import annotations

from mergelang.block_weights import BlockWeights
from mergelang.check.checked_recipe import ArgValue, BoundArg, MethodCall
from mergelang.check.scope import Scope
from mergelang.check.sink import CheckerSink
from mergelang.check.values import (
    INVALID,
    Evaluator,
    InvalidValue,
    ModelValue,
    TextValue,
    Value,
    Want,
    WeightsValue,
    describe,
    did_you_mean,
    not_a_model,
)
from mergelang.errors import Span
from mergelang.lang import ast
from mergelang.methods import MethodSpec, Param, get_method, method_names

__all__ = ["CallChecker"]


class _Unconverted:
    """The result of an argument that could not be converted (already reported)."""


_UNCONVERTED = _Unconverted()


class CallChecker:
    """Method calls: argument binding and conversion to the parameters' kinds.

    ``evaluator`` gives the arguments' values (it is the expression checker this one
    serves); ``scope`` tells a misspelt method from a model's name.
    """

    def __init__(self, evaluator: Evaluator, scope: Scope, sink: CheckerSink) -> None:
        self.evaluator = evaluator
        self.scope = scope
        self.sink = sink

    def call(self, call: ast.Call) -> Value:
        spec = get_method(call.func)
        if spec is None:
            binding = self.scope.lookup(call.func)
            hint = did_you_mean(call.func, method_names())
            if binding is not None:
                hint = f"'{call.func}' is a model or intermediate, not a method"
            self.sink.error(
                f"unknown merge method '{call.func}'",
                call.func_span,
                code="unknown-method",
                hint=hint or "methods: " + ", ".join(method_names()),
            )
            for arg in call.args:
                self.evaluator.eval(arg.value if isinstance(arg, ast.Keyword) else arg, "any")
            return INVALID
        given: dict[str, tuple[list[ast.Expr], Span]] = {}
        ok = True
        params = list(spec.params)
        position = 0
        positional = call.positional
        for index, arg in enumerate(positional):
            if position >= len(params):
                self.sink.error(
                    f"too many arguments: {spec.signature()} takes at most "
                    f"{len(params)} positional arguments, not {len(positional)}",
                    arg.span,
                    code="argument-count",
                )
                ok = False
                break
            param = params[position]
            if param.variadic:
                rest = list(positional[index:])
                given[param.name] = (rest, _join(rest[0].span, rest[-1].span))
                position = len(params)
                break
            given[param.name] = ([arg], arg.span)
            position += 1
        for keyword in call.keywords:
            param_or_none = spec.param(keyword.name)
            if param_or_none is None:
                hint = did_you_mean(keyword.name, [p.name for p in spec.params])
                self.sink.error(
                    f"{spec.name} has no parameter '{keyword.name}'",
                    keyword.name_span,
                    code="unknown-keyword",
                    hint=hint or spec.signature(),
                )
                ok = False
                continue
            if keyword.name in given:
                self.sink.error(
                    f"the argument '{keyword.name}' is given twice",
                    keyword.name_span,
                    code="duplicate-keyword",
                    hint=spec.signature(),
                )
                ok = False
                continue
            given[keyword.name] = ([keyword.value], keyword.span)
        args: list[BoundArg] = []
        for param in spec.params:
            if param.name not in given:
                if param.required:
                    self.sink.error(
                        f"{spec.name} is missing its argument '{param.name}'",
                        call.func_span,
                        code="missing-argument",
                        hint=spec.signature(),
                    )
                    ok = False
                    continue
                args.append(BoundArg(param.name, _default(param)))
                continue
            nodes, span = given[param.name]
            if param.variadic:
                models = [self._model_arg(call, spec, param, n) for n in nodes]
                if any(m is None for m in models):
                    ok = False
                    continue
                exprs = tuple(m.expr for m in models if m is not None)
                args.append(BoundArg(param.name, exprs, span=span))
                continue
            node = nodes[0]
            if param.kind == "model":
                model = self._model_arg(call, spec, param, node)
                if model is None:
                    ok = False
                    continue
                args.append(BoundArg(param.name, model.expr, span=node.span))
                continue
            want: Want = "any" if param.kind == "string" else "weights"
            converted = self._convert(spec, param, self.evaluator.eval(node, want), node.span)
            if isinstance(converted, _Unconverted):
                ok = False
                continue
            args.append(BoundArg(param.name, converted, span=node.span))
        if not ok:
            return INVALID
        return ModelValue(MethodCall(spec.name, tuple(args), span=call.span), f"{spec.name}(...)")

    def _model_arg(
        self, call: ast.Call, spec: MethodSpec, param: Param, node: ast.Expr
    ) -> ModelValue | None:
        value = self.evaluator.eval(node, "model")
        if isinstance(value, ModelValue):
            return value
        if isinstance(value, InvalidValue):
            return None
        if call.operand_label is not None:
            self.sink.error(not_a_model(call.operand_label, value), node.span, code="type")
            return None
        self.sink.error(
            not_a_model(f"argument '{param.name}' of {spec.name}", value),
            node.span,
            code="type",
            hint=spec.signature(),
        )
        return None

    def _convert(
        self, spec: MethodSpec, param: Param, value: Value, span: Span
    ) -> ArgValue | _Unconverted:
        """A non-model argument in the form :class:`BoundArg` holds, or ``_UNCONVERTED``."""
        if isinstance(value, InvalidValue):
            return _UNCONVERTED
        what = f"argument '{param.name}' of {spec.name}"
        if param.kind == "string":
            if isinstance(value, TextValue):
                problem = param.choice_error(value.value)
                if problem is not None:
                    assert param.choices is not None
                    self.sink.error(
                        f"{what}: {problem}",
                        span,
                        code="unknown-choice",
                        hint=did_you_mean(value.value, param.choices) or spec.signature(),
                    )
                    return _UNCONVERTED
                return value.value
            self.sink.error(f"{what} must be a string, not {describe(value)}", span, code="type")
            return _UNCONVERTED
        if not isinstance(value, WeightsValue):
            expected = "weights (a number, a list, a map or a preset)"
            if param.kind != "weights":
                expected = "a number"
            self.sink.error(
                f"{what} must be {expected}, not {describe(value)}",
                span,
                code="type",
                hint=spec.signature(),
            )
            return _UNCONVERTED
        if param.kind == "weights":
            for slot, slot_value in value.weights.numbers():
                problem = param.range_error(slot_value)
                if problem is not None:
                    where = "" if value.number is not None else f" (at {slot})"
                    self.sink.error(f"out of range: {problem}{where}", span, code="out-of-range")
                    return _UNCONVERTED
            return value.weights
        if value.number is None:
            self.sink.error(
                f"{what} must be a number, not block weights",
                span,
                code="type",
                hint=spec.signature(),
            )
            return _UNCONVERTED
        number: float | int = value.number
        if param.kind == "int":
            if not value.number.is_integer():
                self.sink.error(f"{what} must be a whole number", span, code="type")
                return _UNCONVERTED
            number = int(value.number)
        problem = param.range_error(number)
        if problem is not None:
            self.sink.error(f"out of range: {problem}", span, code="out-of-range")
            return _UNCONVERTED
        return number


def _default(param: Param) -> ArgValue:
    default = param.default
    if param.kind == "weights" and isinstance(default, int | float):
        return BlockWeights.scalar(float(default))
    if isinstance(default, BlockWeights | int | float | str) or default is None:
        return default
    return None


def _join(first: Span, last: Span) -> Span:
    return Span(first.line, first.column, last.end_line, last.end_column)
