"""The steps an expression depends on, deepest first, found without recursion.

A recipe's chain of steps (``s1 = a * 0.9``, ``s2 = s1 * 0.9``, ... each using the one
before) is as deep as the user makes it. The planner builds a step's node only after the
nodes of the steps it uses, in the order given here, so building never recurses through
the chain; only one step's own expression (whose nesting the parser bounds) is recursed into.
"""

from __future__ import annotations

from collections.abc import Container, Iterator, Mapping

from mergelang.block_weights import BlockWeights
from mergelang.check.checked_recipe import (
    InputRef,
    LinearCombination,
    MethodCall,
    ModelExpr,
    Step,
    StepRef,
)

__all__ = ["model_children", "steps_in_dependency_order"]


def model_children(expr: ModelExpr) -> Iterator[ModelExpr]:
    """The model expressions directly inside ``expr`` (method arguments, linear terms)."""
    if isinstance(expr, MethodCall):
        for bound in expr.args:
            value = bound.value
            if isinstance(value, tuple):
                yield from (v for v in value if isinstance(v, _MODEL_EXPRS))
            elif isinstance(value, _MODEL_EXPRS):
                yield value
    elif isinstance(expr, LinearCombination):
        for term in expr.terms:
            yield term.model


_MODEL_EXPRS = (InputRef, StepRef, MethodCall, LinearCombination)


def _step_refs(expr: ModelExpr) -> Iterator[str]:
    """The steps ``expr`` names, without entering them."""
    pending = [expr]
    while pending:
        current = pending.pop()
        if isinstance(current, StepRef):
            yield current.step
        else:
            pending.extend(model_children(current))


def steps_in_dependency_order(
    step: str, steps: Mapping[str, Step], done: Container[str]
) -> list[str]:
    """``step`` and every step it depends on that is not in ``done``, each after the steps
    it uses (a post-order walk with an explicit stack)."""
    order: list[str] = []
    seen: set[str] = set()
    stack: list[tuple[str, bool]] = [(step, False)]
    while stack:
        name, expanded = stack.pop()
        if expanded:
            order.append(name)
            continue
        if name in seen or name in done:
            continue
        seen.add(name)
        stack.append((name, True))
        value = steps[name].value
        if not isinstance(value, BlockWeights):
            stack.extend((ref, False) for ref in _step_refs(value) if ref not in seen)
    return order
