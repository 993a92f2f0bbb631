"""Checking weights and arithmetic: what ``+ - * /`` mean for models and for weights.

Weights arithmetic (numbers, vectors, maps, presets) is evaluated here with
:class:`~mergelang.block_weights.BlockWeights`. Model arithmetic (``a + b``, ``a - b``,
``a * weights``, ``weights * a``, ``a / number``, ``-a``) becomes a
:class:`~mergelang.check.checked_recipe.LinearCombination`; anything else (``model * model``,
``model + 0.5``) is a type error. Vector and map literals, block names and block ranges are
checked here too, and so are the key patterns of elemental entries (``"attn2" in OUT: 0.5``).
"""

from __future__ import annotations

from mergelang.block_weights import (
    BlockWeights,
    KeySelector,
    MapKey,
    WeightsError,
    WrittenBlock,
    block_range,
    selector_blocks,
    suggest_block,
    vocabulary,
)
from mergelang.check.checked_recipe import LinearCombination, Term
from mergelang.check.scope import Scope
from mergelang.check.sink import CheckerSink
from mergelang.check.values import (
    INVALID,
    BlockValue,
    Evaluator,
    InvalidValue,
    ModelValue,
    Value,
    WeightsValue,
    describe,
    finite_number,
    is_block_word,
)
from mergelang.errors import Span
from mergelang.lang import ast

__all__ = ["WeightsChecker"]


class WeightsChecker:
    """Arithmetic on models and weights, weight vectors and maps, block names and ranges.

    ``evaluator`` gives the values of the operands and entries (it is the expression
    checker this one serves); loop variables come from ``scope``.
    """

    def __init__(self, evaluator: Evaluator, scope: Scope, sink: CheckerSink) -> None:
        self.evaluator = evaluator
        self.scope = scope
        self.sink = sink

    # -- arithmetic

    def binary(self, node: ast.BinaryOp) -> Value:
        left = self.evaluator.eval(node.left, "any")
        right = self.evaluator.eval(node.right, "any")
        if isinstance(left, InvalidValue) or isinstance(right, InvalidValue):
            return INVALID
        op = node.op
        if isinstance(left, WeightsValue) and isinstance(right, WeightsValue):
            return self._weights_arithmetic(node, left, right)
        if isinstance(left, ModelValue) and isinstance(right, ModelValue) and op in "+-":
            right_terms = _terms(right, node.right.span)
            if op == "-":
                right_terms = tuple(Term(-t.weight, t.model, span=t.span) for t in right_terms)
            terms = _terms(left, node.left.span) + right_terms
            return ModelValue(LinearCombination(terms, span=node.span), "model arithmetic")
        try:
            if op == "*" and isinstance(left, ModelValue) and isinstance(right, WeightsValue):
                return _scale(left, right.weights, node)
            if op == "*" and isinstance(left, WeightsValue) and isinstance(right, ModelValue):
                return _scale(right, left.weights, node)
            if op == "/" and isinstance(left, ModelValue) and isinstance(right, WeightsValue):
                return _scale(left, 1.0 / right.weights, node)
        except WeightsError as exc:
            # A term's weights that cannot take this factor (elemental entries times
            # weights that differ per block), or a division by a zero weight.
            where = node.right.span if op == "/" else node.span
            self.sink.error(exc.message, where, code="weights", hint=exc.hint)
            return INVALID
        self.sink.error(
            _type_error_message(op, left, right),
            node.span,
            code="type",
            hint=_type_error_hint(op, left, right),
        )
        return INVALID

    def _weights_arithmetic(
        self, node: ast.BinaryOp, left: WeightsValue, right: WeightsValue
    ) -> Value:
        op = node.op
        if left.number is not None and right.number is not None:
            a, b = left.number, right.number
            if op == "/" and b == 0:
                self.sink.error("division by zero", node.right.span, code="weights")
                return INVALID
            number = {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else 0.0}[op]
            if finite_number(repr(number)) is None:
                self.sink.error("the result is not a finite number", node.span, code="weights")
                return INVALID
            return WeightsValue(BlockWeights.scalar(number), number)
        lhs: BlockWeights | float = left.number if left.number is not None else left.weights
        rhs: BlockWeights | float = right.number if right.number is not None else right.weights
        try:
            if op == "+":
                result = lhs + rhs
            elif op == "-":
                result = lhs - rhs
            elif op == "*":
                result = lhs * rhs
            else:
                result = lhs / rhs
        except WeightsError as exc:
            self.sink.error(exc.message, node.span, code="weights", hint=exc.hint)
            return INVALID
        assert isinstance(result, BlockWeights)
        return WeightsValue(result, None)

    def negate(self, node: ast.Negate) -> Value:
        value = self.evaluator.eval(node.operand, "any")
        if isinstance(value, InvalidValue):
            return value
        if isinstance(value, WeightsValue):
            number = None if value.number is None else -value.number
            return WeightsValue(-value.weights, number)
        if isinstance(value, ModelValue):
            terms = tuple(Term(-t.weight, t.model, span=t.span) for t in _terms(value, node.span))
            return ModelValue(LinearCombination(terms, span=node.span), "model arithmetic")
        self.sink.error(f"cannot negate {describe(value)}", node.span, code="type")
        return INVALID

    # -- weights literals

    def vector(self, node: ast.Vector) -> Value:
        numbers: list[float] = []
        ok = True
        for item in node.items:
            value = self.evaluator.eval(item, "weights")
            if isinstance(value, WeightsValue) and value.number is not None:
                numbers.append(value.number)
                continue
            ok = False
            if not isinstance(value, InvalidValue):
                self.sink.error(
                    f"a weight vector holds numbers, not {describe(value)}",
                    item.span,
                    code="not-a-number",
                    hint="write each block's weight as a number, e.g. [0.5, 0.5, ...]",
                )
        if not ok:
            return INVALID
        try:
            return WeightsValue(BlockWeights.from_vector(numbers), None)
        except WeightsError as exc:
            span = node.items[exc.index].span if exc.index is not None else node.span
            self.sink.error(
                exc.message,
                span,
                code="vector-length" if exc.index is None else "weights",
                hint=exc.hint,
            )
            return INVALID

    def weight_map(self, node: ast.WeightMap) -> Value:
        entries: list[tuple[MapKey | KeySelector, float]] = []
        written: list[WrittenBlock] = []
        ok = True
        for entry in node.entries:
            key: MapKey | KeySelector | None
            if isinstance(entry.key, ast.KeyPattern):
                key = self._key_pattern(entry.key, entry.span, written)
            else:
                key = self._map_key(entry.key, written)
            value = self.evaluator.eval(entry.value, "weights")
            if key is None:
                ok = False
            if isinstance(value, WeightsValue) and value.number is not None:
                if key is not None:
                    entries.append((key, value.number))
                continue
            ok = False
            if not isinstance(value, InvalidValue):
                self.sink.error(
                    f"a weight map entry's value is a number, not {describe(value)}",
                    entry.value.span,
                    code="not-a-number",
                )
        if not ok:
            return INVALID
        try:
            return WeightsValue(BlockWeights.from_map(entries, written=written), None)
        except WeightsError as exc:
            span = node.entries[exc.index].key.span if exc.index is not None else node.span
            self.sink.error(exc.message, span, code="weights", hint=exc.hint)
            return INVALID

    def _key_pattern(
        self, key: ast.KeyPattern, entry_span: Span, written: list[WrittenBlock]
    ) -> KeySelector | None:
        """The selector of an elemental entry; errors at the pattern or the block at fault."""
        pattern = self.evaluator.render(key.pattern)
        ok = pattern is not None
        if pattern == "":
            self.sink.error(
                "an elemental key pattern is empty",
                key.pattern.span,
                code="key-pattern",
                hint='write part of a key name ("attn2") or a glob ("*.attn2.to_k.*")',
            )
            ok = False
        blocks: tuple[str, ...] | None = None
        if key.blocks is not None:
            names: list[MapKey] = []
            for item in key.blocks:
                if isinstance(item, ast.Name) and item.name == "default":
                    self.sink.error(
                        "default is not a block: an elemental entry's block set lists blocks, "
                        "groups, ranges and BASE",
                        item.span,
                        code="unknown-block",
                    )
                    ok = False
                    continue
                name = self._map_key(item, written)
                if name is None:
                    ok = False
                else:
                    names.append(name)
            if ok:
                try:
                    blocks = selector_blocks(names)
                except WeightsError as exc:
                    self.sink.error(exc.message, key.span, code="weights", hint=exc.hint)
                    ok = False
        if not ok or pattern is None:
            return None
        return KeySelector(pattern, key.negated, blocks, key.exclude, span=entry_span)

    def _map_key(
        self, key: ast.Name | ast.BlockRange, written: list[WrittenBlock]
    ) -> MapKey | None:
        """The map key ``key`` names; each block name or group it writes goes to
        ``written`` with its place (a loop variable's block at the variable)."""
        if isinstance(key, ast.BlockRange):
            blocks = self.block_range(key)
            if blocks is None:
                return None
            written += [
                WrittenBlock(key.start, key.start_span),
                WrittenBlock(key.end, key.end_span),
            ]
            return (key.start, key.end)
        name = key.name
        if name in self.scope.loop:
            bound = self.scope.loop[name]
            if isinstance(bound, BlockValue):
                _note_written(bound.name, key.span, written)
                return bound.name
            self.sink.error(
                f"the loop variable '{name}' holds {describe(bound)}, not a block name",
                key.span,
                code="loop-variable",
            )
            return None
        if is_block_word(name):
            _note_written(name, key.span, written)
            return name
        self._unknown_block(name, key.span)
        return None

    def block_range(self, node: ast.BlockRange) -> tuple[str, ...] | None:
        ok = True
        for name, span in ((node.start, node.start_span), (node.end, node.end_span)):
            if name not in vocabulary().order:
                self._unknown_block(name, span)
                ok = False
        if not ok:
            return None
        try:
            return block_range(node.start, node.end)
        except ValueError:
            self.sink.error(
                f"the block range {node.start}..{node.end} runs backwards",
                node.span,
                code="block-range",
                hint=f"write {node.end}..{node.start}; blocks run "
                f"{vocabulary().order_text(node.start, node.end)}",
            )
            return None

    def _unknown_block(self, name: str, span: Span) -> None:
        suggestion = suggest_block(name)
        hint = f"did you mean {suggestion}? " if suggestion else ""
        self.sink.error(
            f"unknown block name '{name}'",
            span,
            code="unknown-block",
            hint=hint
            + vocabulary().blocks_text()
            + f"; also {', '.join(vocabulary().groups)}, BASE and default",
        )


def _note_written(name: str, span: Span, written: list[WrittenBlock]) -> None:
    """Keep a block name or group (not BASE or default, which every scheme has)."""
    vocab = vocabulary()
    if name in vocab.order or name in vocab.groups:
        written.append(WrittenBlock(name, span))


def _terms(model: ModelValue, span: Span) -> tuple[Term, ...]:
    if isinstance(model.expr, LinearCombination):
        return model.expr.terms
    return (Term(BlockWeights.scalar(1.0), model.expr, span=span),)


def _scale(model: ModelValue, weight: BlockWeights, node: ast.BinaryOp) -> ModelValue:
    terms = tuple(
        # 1 * w is w exactly; keeping w itself keeps its description for messages.
        Term(weight if t.weight.is_scalar == 1.0 else t.weight * weight, t.model, span=t.span)
        for t in _terms(model, node.span)
    )
    return ModelValue(LinearCombination(terms, span=node.span), "model arithmetic")


_OP_WORDS = {"+": "add", "-": "subtract", "*": "multiply", "/": "divide"}


def _type_error_message(op: str, left: Value, right: Value) -> str:
    if isinstance(left, ModelValue) and isinstance(right, ModelValue):
        return f"cannot {_OP_WORDS[op]} two models"
    lhs, rhs = describe(left), describe(right)
    if op == "-":
        return f"cannot subtract {rhs} from {lhs}"
    if op == "/":
        return f"cannot divide {lhs} by {rhs}"
    if op == "*":
        return f"cannot multiply {lhs} by {rhs}"
    return f"cannot add {lhs} and {rhs}"


def _type_error_hint(op: str, left: Value, right: Value) -> str | None:
    models = isinstance(left, ModelValue), isinstance(right, ModelValue)
    if all(models):
        return "models add and subtract; scale one with weights: a * 0.5 + b * 0.5"
    if any(models) and op in "+-":
        return "to scale a model write model * 0.5; to mix two use weighted_sum(a, b, alpha=0.5)"
    if models[1] and op == "/":
        return "divide a model by a number: model / 2"
    return None
