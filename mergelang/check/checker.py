"""The recipe checker: names, arguments, types and weights, every problem in one pass.

:func:`check` walks a parsed :class:`~mergelang.lang.ast.Recipe` top to bottom, expanding ``for``
loops, and produces a :class:`CheckedRecipe`: the input models, the named steps with their
inferred types, every save (one per loop iteration, templates filled), the convention and
the warnings. Later stages (planner, executor) work from that and never see syntax again.

Values have one of three types. *Model*: an input, a method call's result, or model
arithmetic (``a + b``, ``a - b``, ``a * weights``, ``weights * a``, ``a / number``), which
is kept as a :class:`LinearCombination` for the executor to fuse. *Weights*: a number, a
vector, a map, a preset, or arithmetic on those, evaluated here with
:class:`~mergelang.block_weights.BlockWeights`. *String*: a path or an option. Anything else
(``model * model``, ``model + 0.5``) is a type error.

Every error goes to one :class:`~mergelang.errors.DiagnosticSink`; :class:`RecipeError` is
raised once at the end with all of them, warnings included. Checks that need to know the
architecture (a 19-value SDXL vector used with an SD1 model) need the inputs' headers: they are
made by :func:`mergelang.plan.input_checks.check_inputs` from the evaluated :class:`BlockWeights`
and the spans kept here.

This module holds the entry point and the pass over the whole recipe (preset files first,
then each statement, then the unused-name warnings). The result types are in
:mod:`mergelang.check.checked_recipe` (and re-exported here); the checker's parts build on each
other:
:mod:`mergelang.check.scope` (values, bindings, scopes), :mod:`mergelang.check.weights`
(weights literals and arithmetic), :mod:`mergelang.check.calls` (method calls and argument
binding), :mod:`mergelang.check.expressions`, :mod:`mergelang.check.saves` and
:mod:`mergelang.check.statements`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from mergelang.check.checked_recipe import CheckedRecipe
from mergelang.check.scope import TooManyErrors
from mergelang.check.statements import StatementChecker
from mergelang.errors import BIDI_CONTROLS, Diagnostic, RecipeError, Span
from mergelang.lang import ast
from mergelang.lang.syntax_errors import too_many_errors
from mergelang.presets import PresetTable

__all__ = ["check"]

_NO_VARIABLES: Mapping[str, str] = MappingProxyType({})


class _Checker(StatementChecker):
    """One pass over one recipe: :meth:`run` checks it and returns the result."""

    def run(self) -> CheckedRecipe:
        current: ast.Statement | None = None
        try:
            self._prescan()
            for current in self.recipe.statements:
                self._statement(current, top_level=True)
        except TooManyErrors:
            self._stop(current)
        for usage in self.usage.values():
            if not usage.used:
                self.sink.warning(
                    f"model '{usage.name}' is never used"
                    if usage.kind == "model"
                    else f"intermediate '{usage.name}' is neither used nor saved",
                    usage.span,
                    code="unused",
                    hint="save it, use it, or remove it",
                )
        for comment in self.recipe.comments:
            bidi = BIDI_CONTROLS.search(comment.text)
            if bidi is not None:
                self.sink.warning(
                    f"this comment holds the bidirectional control U+{ord(bidi.group()):04X}, "
                    "which makes the text around it show in another order than it has",
                    comment.span,
                    code="bidi-control",
                    hint="remove it; a reviewer may not see what the recipe really says",
                )
        diagnostics = _deduplicate(self.sink.sorted())
        if any(d.severity == "error" for d in diagnostics):
            raise RecipeError(diagnostics)
        return CheckedRecipe(
            recipe=self.recipe,
            models=MappingProxyType(dict(self.models)),
            steps=tuple(self.steps),
            saves=tuple(self.saves),
            convention=self.convention,
            presets=self.presets,
            variables=MappingProxyType(dict(self.variables)),
            warnings=tuple(diagnostics),
            base_dir=self.base_dir,
        )

    def _stop(self, stmt: ast.Statement | None) -> None:
        """Raise the errors found so far, and a note at ``stmt``, where checking stopped."""
        diagnostics = _deduplicate(self.sink.sorted())
        where = stmt.span if stmt is not None else Span(1, 1, 1, 1)
        note = too_many_errors(where, self.sink.path, self.sink.source_line(where))
        raise RecipeError([*diagnostics, note])

    def _prescan(self) -> None:
        """Record where each top-level name is defined (for "used before its definition"),
        number the Merge Board lines, and load preset files (they apply to the whole
        recipe, wherever the statement stands)."""
        for stmt in self.recipe.statements:
            if isinstance(stmt, ast.ModelDecl | ast.Assign):
                self.later.setdefault(stmt.name, stmt.span.line)
            elif isinstance(stmt, ast.MergeBoard):
                self.merge_board_lines.append(stmt)
                self.merge_board_number[id(stmt)] = len(self.merge_board_lines)
                self.merge_board_first.setdefault(stmt.output, stmt)
                if stmt.output.isidentifier():
                    self.later.setdefault(stmt.output, stmt.span.line)
            elif isinstance(stmt, ast.PresetsImport):
                self._load_presets(stmt)

    def _load_presets(self, stmt: ast.PresetsImport) -> None:
        if stmt.path.placeholders:
            self._unbound_placeholders(stmt.path)
            return
        relative = stmt.path.render()
        path = Path(relative)
        if not path.is_absolute() and self.base_dir is not None:
            path = self.base_dir / path
        try:
            self.presets = self.presets.with_file(path)
        except RecipeError as exc:
            for diag in exc.diagnostics:
                if diag.span is None:
                    self.sink.error(
                        f"cannot load presets from '{relative}': {diag.message}",
                        stmt.path.span,
                        code="preset-file",
                        hint=diag.hint,
                    )
                else:
                    self.sink.extend([diag])


def _deduplicate(diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    """A problem inside a loop body is found once per iteration: report it once."""
    seen: set[tuple[str, str, Span | None, str]] = set()
    unique: list[Diagnostic] = []
    for diag in diagnostics:
        key = (diag.code, diag.message, diag.span, diag.severity)
        if key not in seen:
            seen.add(key)
            unique.append(diag)
    return unique


def check(
    recipe: ast.Recipe,
    *,
    variables: Mapping[str, str] = _NO_VARIABLES,
    base_dir: Path | None = None,
    presets: PresetTable | None = None,
) -> CheckedRecipe:
    """Check a parsed recipe; raise :class:`RecipeError` with every problem found.

    ``variables`` binds ``$NAME`` and ``__NAME__`` (``--set NAME=VALUE``). ``base_dir`` is the
    folder relative paths start from (default: the recipe file's folder, else the current
    one); preset files are read from there. ``presets`` replaces the built-in preset table.
    """
    if base_dir is None and recipe.path not in (None, "-", "<stdin>"):
        base_dir = Path(recipe.path).parent
    return _Checker(recipe, variables, base_dir, presets or PresetTable()).run()
