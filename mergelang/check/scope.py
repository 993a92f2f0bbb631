"""The names a recipe defines, where they are visible, and whether they are used.

:class:`Scope` holds the top-level bindings, one scope per ``for`` iteration and the loop
variables' current values; it binds names (refusing block words, reserved words, loop
variables and duplicates, each with its error), looks them up, and tracks per defining
statement whether its name was used, for the unused-name warnings at the end. It also knows
where each top-level name is defined (:attr:`Scope.later`), so a use before the definition
is reported as such rather than as an unknown name.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, TypeAlias

from mergelang.check.checked_recipe import StepRef
from mergelang.check.sink import CheckerSink
from mergelang.check.values import ModelValue, Value, WeightsValue, is_block_word, template_text
from mergelang.errors import Span
from mergelang.lang import ast
from mergelang.lang.syntax_errors import RESERVED_WORDS
from mergelang.presets import PresetTable

__all__ = ["Binding", "BindingKind", "Scope", "Usage"]

BindingKind: TypeAlias = Literal["model", "intermediate", "merge_board"]


@dataclass
class Binding:
    """A name in scope: a model declaration, an intermediate, a Merge Board output."""

    name: str
    value: ModelValue | WeightsValue
    kind: BindingKind
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


class Scope:
    """Bindings and scopes while the checker walks one recipe.

    ``globals`` holds the top-level names; ``locals`` one scope per enclosing ``for``
    iteration; ``loop`` the loop variables' current values (``loop_names`` in nesting order).
    ``later`` maps each top-level name to the line defining it. ``presets`` are the presets
    names may also mean (the recipe's preset files loaded).
    """

    def __init__(self, sink: CheckerSink, presets: PresetTable, later: Mapping[str, int]) -> None:
        self.sink = sink
        self.presets = presets
        self.later = dict(later)
        self.globals: dict[str, Binding] = {}
        self.locals: list[dict[str, Binding]] = []
        self.loop: dict[str, Value] = {}
        self.loop_names: list[str] = []
        self._usage: dict[int, Usage] = {}

    # -- looking names up

    def lookup(self, name: str) -> Binding | None:
        """The binding ``name`` has here: the innermost loop scope first, then the top level."""
        for scope in reversed(self.locals):
            if name in scope:
                return scope[name]
        return self.globals.get(name)

    def names(self) -> list[str]:
        """Every name one could mean here (for "did you mean"): bindings and loop variables."""
        bound = [*self.globals, *(n for scope in self.locals for n in scope)]
        return [*(n for n in bound if n.isidentifier()), *self.loop]

    def declared(self) -> list[str]:
        """The top-level names the recipe declares itself (Merge Board outputs aside)."""
        return [n for n, b in self.globals.items() if b.kind != "merge_board" and n.isidentifier()]

    # -- binding names

    def define(
        self,
        name: str,
        span: Span,
        value: ModelValue | WeightsValue,
        kind: BindingKind,
        stmt: ast.Node,
    ) -> bool:
        """Bind ``name`` in the innermost scope; ``False`` (the reason reported) when it
        cannot be bound.

        A Merge Board output (kind ``merge_board``) is bound under its text whatever it is
        (``to``, ``SD-WD Fix``): reserved words are refused only as names the recipe writes.
        When one cannot be bound, it stays defined as failed, so its uses report nothing more.
        """
        defined = self._bind(name, span, value, kind, stmt)
        if not defined and kind == "merge_board":
            self.define_invalid(name, stmt)
        return defined

    def _bind(
        self,
        name: str,
        span: Span,
        value: ModelValue | WeightsValue,
        kind: BindingKind,
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
        if name in RESERVED_WORDS and kind != "merge_board":
            self.sink.error(
                f"'{name}' is a reserved word and cannot name a value",
                span,
                code="reserved-name",
                hint="reserved words: " + ", ".join(RESERVED_WORDS),
            )
            self.define_invalid(name, stmt)
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

    def define_invalid(self, name: str, stmt: ast.Node) -> None:
        """Keep the name of a statement that failed defined, so its uses report nothing
        more (the statement's own error says what is wrong)."""
        scope = self.locals[-1] if self.locals else self.globals
        if name not in scope:
            placeholder = ModelValue(StepRef(name), name)
            scope[name] = Binding(name, placeholder, "intermediate", stmt.span.line, stmt, True)
            self._usage.pop(id(stmt), None)

    def step_name(self, name: str) -> str:
        """The name of the step ``name`` defines: inside a loop, the iteration appended
        (``x@blk=IN00``)."""
        if not self.loop_names:
            return name
        bindings = ",".join(f"{v}={template_text(self.loop[v])}" for v in self.loop_names)
        return f"{name}@{bindings}"

    @contextmanager
    def iteration(self, var: str, value: Value) -> Iterator[None]:
        """One run of a loop body: ``var`` bound to ``value``, in a scope of its own."""
        self.loop[var] = value
        self.loop_names.append(var)
        self.locals.append({})
        try:
            yield
        finally:
            self.locals.pop()
            self.loop_names.pop()
            del self.loop[var]

    # -- usage

    def track(self, stmt: ast.Node, usage: Usage) -> None:
        """Watch whether the name ``stmt`` defines is used (the first record stays: a loop
        body's statement defines its name once per iteration)."""
        self._usage.setdefault(id(stmt), usage)

    def mark_used(self, binding: Binding) -> None:
        usage = self._usage.get(id(binding.statement))
        if usage is not None:
            usage.used = True

    def report_unused(self) -> None:
        """A warning for every model and intermediate defined but never used."""
        for usage in self._usage.values():
            if not usage.used:
                self.sink.warning(
                    f"model '{usage.name}' is never used"
                    if usage.kind == "model"
                    else f"intermediate '{usage.name}' is neither used nor saved",
                    usage.span,
                    code="unused",
                    hint="save it, use it, or remove it",
                )
