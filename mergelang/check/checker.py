"""The recipe checker: names, arguments, types and weights, every problem in one pass.

:func:`check` lowers the recipe's Merge Board lines to native statements
(:func:`~mergelang.lang.merge_board.lower_merge_board`), then walks it top to bottom,
expanding ``for`` loops, and produces a :class:`CheckedRecipe`: the input models, the named
steps with their inferred types, every save (one per loop iteration, templates filled), the
convention and the warnings. Later stages (planner, executor) work from that and never see
syntax again.

Values have one of three types. *Model*: an input, a method call's result, or model
arithmetic (``a + b``, ``a - b``, ``a * weights``, ``weights * a``, ``a / number``), which
is kept as a :class:`LinearCombination` for the executor to fuse. *Weights*: a number, a
vector, a map, a preset, or arithmetic on those, evaluated here with
:class:`~mergelang.block_weights.BlockWeights`. *String*: a path or an option. Anything else
(``model * model``, ``model + 0.5``) is a type error.

Every error goes to one :class:`~mergelang.check.sink.CheckerSink`; :class:`RecipeError` is
raised once at the end with all of them, warnings included (at most
:data:`~mergelang.lang.syntax_errors.MAX_ERRORS` distinct errors, then a note where checking
stopped; a loop body's problem is reported once, not per iteration). Checks that need to know
the architecture (a 19-value SDXL vector used with an SD1 model) need the inputs' headers:
they are made by :func:`mergelang.plan.input_checks.check_inputs` from the evaluated
:class:`BlockWeights` and the spans kept here.

:func:`check` wires the checker's parts, each given the scope and the sink:
:class:`~mergelang.check.scope.Scope` (bindings, loop scopes, usage),
:class:`~mergelang.check.expressions.ExpressionChecker` (with its
:class:`~mergelang.check.calls.CallChecker` and :class:`~mergelang.check.weights.WeightsChecker`),
:class:`~mergelang.check.saves.SaveChecker` and
:class:`~mergelang.check.statements.StatementChecker`. This module holds the pass over the
whole recipe: preset files first (they apply wherever the statement stands), then each
statement, then the unused-name warnings. The result types are in
:mod:`mergelang.check.checked_recipe`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from mergelang.check.checked_recipe import CheckedRecipe
from mergelang.check.expressions import ExpressionChecker
from mergelang.check.saves import SaveChecker
from mergelang.check.scope import Scope
from mergelang.check.sink import CheckerSink, TooManyErrors, deduplicate
from mergelang.check.statements import StatementChecker
from mergelang.errors import BIDI_CONTROLS, RecipeError, Span
from mergelang.lang import ast
from mergelang.lang.merge_board import lower_merge_board
from mergelang.lang.syntax_errors import too_many_errors
from mergelang.presets import PresetTable

__all__ = ["check"]

_NO_VARIABLES: Mapping[str, str] = MappingProxyType({})


def check(
    recipe: ast.Recipe,
    *,
    set: Mapping[str, object] | None = None,
    base_dir: Path | None = None,
    presets: PresetTable | None = None,
    variables: Mapping[str, str] | None = None,
) -> CheckedRecipe:
    """Check a parsed recipe; raise :class:`RecipeError` with every problem found.

    ``set`` binds ``$NAME`` and ``__NAME__`` (``--set NAME=VALUE``), as for
    :func:`mergelang.plan`, :func:`mergelang.run` and :func:`mergelang.evaluate`;
    ``variables`` is its old name, still taken with a :class:`DeprecationWarning`.
    ``base_dir`` is the folder relative paths start from (default: the recipe file's folder,
    else the current one); preset files are read from there. ``presets`` replaces the
    built-in preset table.
    """
    if variables is not None:
        warnings.warn(
            "check(variables=...) is now check(set=...), as for plan, run and evaluate",
            DeprecationWarning,
            stacklevel=2,
        )
        if set is None:
            set = variables
    variables = {str(k): str(v) for k, v in set.items()} if set is not None else _NO_VARIABLES
    if base_dir is None and recipe.path not in (None, "-", "<stdin>"):
        base_dir = Path(recipe.path).parent
    statements = lower_merge_board(recipe).statements
    sink = CheckerSink(recipe.path, recipe.source)
    scope = Scope(sink, presets or PresetTable(), _definitions(statements))
    expressions = ExpressionChecker(scope, sink, variables)
    saves = SaveChecker(scope, sink, expressions)
    checker = StatementChecker(scope, sink, expressions, saves)
    current: ast.Statement | None = None
    try:
        for stmt in statements:
            if isinstance(stmt, ast.PresetsImport):
                _load_presets(stmt, scope, expressions, base_dir)
        for current in statements:
            checker.check(current, top_level=True)
    except TooManyErrors:
        diagnostics = deduplicate(sink.sorted())
        where = current.span if current is not None else Span(1, 1, 1, 1)
        note = too_many_errors(where, sink.path, sink.source_line(where))
        raise RecipeError([*diagnostics, note]) from None
    scope.report_unused()
    _warn_bidi_comments(recipe, sink)
    diagnostics = deduplicate(sink.sorted())
    if any(d.severity == "error" for d in diagnostics):
        raise RecipeError(diagnostics)
    return CheckedRecipe(
        recipe=recipe,
        models=MappingProxyType(dict(expressions.models)),
        steps=tuple(checker.steps),
        saves=tuple(saves.saves),
        convention=checker.convention,
        presets=scope.presets,
        variables=MappingProxyType(dict(variables)),
        warnings=tuple(diagnostics),
        base_dir=base_dir,
    )


def _warn_bidi_comments(recipe: ast.Recipe, sink: CheckerSink) -> None:
    """A bidirectional control in a comment makes the text around it show in another order
    than it has (a reviewer may read a different recipe from the one that runs)."""
    for comment in recipe.comments:
        bidi = BIDI_CONTROLS.search(comment.text)
        if bidi is not None:
            sink.warning(
                f"this comment holds the bidirectional control U+{ord(bidi.group()):04X}, "
                "which makes the text around it show in another order than it has",
                comment.span,
                code="bidi-control",
                hint="remove it; a reviewer may not see what the recipe really says",
            )


def _definitions(statements: tuple[ast.Statement, ...]) -> dict[str, int]:
    """Where each top-level name is defined (so a use above it is "used before its
    definition", not "undefined")."""
    later: dict[str, int] = {}
    for stmt in statements:
        if isinstance(stmt, ast.ModelDecl | ast.Assign):
            later.setdefault(stmt.name, stmt.span.line)
    return later


def _load_presets(
    stmt: ast.PresetsImport, scope: Scope, expressions: ExpressionChecker, base_dir: Path | None
) -> None:
    if stmt.path.placeholders:
        expressions.report_unbound_placeholders(stmt.path)
        return
    relative = stmt.path.render()
    path = Path(relative)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    try:
        scope.presets = scope.presets.with_file(path)
    except RecipeError as exc:
        for diag in exc.diagnostics:
            if diag.span is None:
                scope.sink.error(
                    f"cannot load presets from '{relative}': {diag.message}",
                    stmt.path.span,
                    code="preset-file",
                    hint=diag.hint,
                )
            else:
                scope.sink.extend([diag])
