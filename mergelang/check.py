"""The recipe checker: names, arguments, types and weights, every problem in one pass.

:func:`check` walks a parsed :class:`~mergelang.ast.Recipe` top to bottom, expanding ``for``
loops, and produces a :class:`CheckedRecipe`: the input models, the named steps with their
inferred types, every save (one per loop iteration, templates filled), the convention and
the warnings. Later stages (planner, executor) work from that and never see syntax again.

Values have one of three types. *Model*: an input, a method call's result, or model
arithmetic (``a + b``, ``a - b``, ``a * weights``, ``weights * a``, ``a / number``), which
is kept as a :class:`LinearCombination` for the executor to fuse. *Weights*: a number, a
vector, a map, a preset, or arithmetic on those, evaluated here with
:class:`~mergelang.weights.BlockWeights`. *String*: a path or an option. Anything else
(``model * model``, ``model + 0.5``) is a type error.

Every error goes to one :class:`~mergelang.errors.DiagnosticSink`; :class:`RecipeError` is
raised once at the end with all of them, warnings included. Checks that need to know the
architecture (a 19-value SDXL vector used with an SD1 model) are the planner's: the evaluated
:class:`BlockWeights` and their spans are kept for it.
"""

from __future__ import annotations

import difflib
import posixpath
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal, TypeAlias

from mergelang import ast
from mergelang.arch.blocks import BASE, GROUPS, SD_BLOCKS, block_range
from mergelang.errors import Diagnostic, DiagnosticSink, RecipeError, Span
from mergelang.methods import MethodSpec, Param, get_method, method_names
from mergelang.presets import PresetTable
from mergelang.weights import BlockWeights, MapKey, WeightsError, format_number, suggest_block

try:
    from mergelang.arch.conventions import CONVENTION_NAMES, DEFAULT_CONVENTION
except ImportError:  # pragma: no cover - the architectures package ships with mergelang
    CONVENTION_NAMES = ("mbw", "supermerger", "sd_mecha", "kohya")
    DEFAULT_CONVENTION = "mbw"

__all__ = [
    "SAVE_DTYPES",
    "SAVE_OPTIONS",
    "BoundArg",
    "CheckedRecipe",
    "InputRef",
    "LinearCombination",
    "MethodCall",
    "ModelExpr",
    "ModelSource",
    "SaveTarget",
    "Step",
    "StepRef",
    "Term",
    "check",
    "merge_board_output_path",
]

SAVE_DTYPES: tuple[str, ...] = ("fp16", "bf16", "fp32")
"""What ``save ... as DTYPE`` accepts."""

SAVE_OPTIONS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "ema": ("keep", "drop"),
        "schedule": ("keep", "drop"),
        "position_ids": ("keep", "reset"),
        "format": ("safetensors", "ckpt"),
        "vae": (),
    }
)
"""``save ... with KEY=VALUE``: the keys and their allowed values (``vae`` takes a path in
quotes or a declared model's name). The first value listed is not always the default: see
:class:`SaveTarget`."""

_CKPT_SUFFIXES = (".ckpt", ".pt", ".pth")
_MB_UNSAFE = re.compile(r'[\\|:?"<>*]')
_NO_VARIABLES: Mapping[str, str] = MappingProxyType({})


# ---- what the checker produces ---------------------------------------------------------------


@dataclass(frozen=True)
class ModelSource:
    """An input checkpoint.

    ``kind`` is ``path`` (a quoted path, relative to the recipe's folder), ``variable`` (bound
    on the command line: ``ref`` is the value, ``variable`` its name) or ``literal`` (a
    checkpoint named in a Merge Board line, looked up by name later).
    """

    name: str
    kind: Literal["path", "variable", "literal"]
    ref: str
    variable: str | None = None
    span: Span = field(default=ast.NO_SPAN, compare=False)


@dataclass(frozen=True)
class InputRef:
    """An input model, by its key in :attr:`CheckedRecipe.models`."""

    model: str


@dataclass(frozen=True)
class StepRef:
    """The model an earlier :class:`Step` computes, by the step's name."""

    step: str


@dataclass(frozen=True)
class BoundArg:
    """One parameter of a method call after binding. ``value`` by the parameter's kind:
    a model expression (a tuple of them for a variadic parameter), :class:`BlockWeights`,
    a float (``number``), an int, a string, or ``None`` (an optional parameter left out).

    Weights are kept as written: a ``base_of`` parameter (``base=`` of weighted_sum) is a
    separate argument that :meth:`MethodSpec.resolve_weights` applies per architecture.
    """

    param: str
    value: ArgValue
    span: Span = field(default=ast.NO_SPAN, compare=False)


@dataclass(frozen=True)
class MethodCall:
    """A merge method applied to bound arguments, in the method's parameter order."""

    method: str
    args: tuple[BoundArg, ...]
    span: Span = field(default=ast.NO_SPAN, compare=False)

    def arg(self, name: str) -> ArgValue:
        for bound in self.args:
            if bound.param == name:
                return bound.value
        raise KeyError(f"{self.method} has no argument {name!r}")


@dataclass(frozen=True)
class Term:
    """``weight * model`` inside a :class:`LinearCombination`."""

    weight: BlockWeights
    model: ModelExpr
    span: Span = field(default=ast.NO_SPAN, compare=False)


@dataclass(frozen=True)
class LinearCombination:
    """Model arithmetic: the sum of ``weight_i * model_i`` per block, no normalisation
    (``sd15 * {IN00: 0.75, default: 1} + wd * 0`` is MBW Each's ``wA*A + wB*B``)."""

    terms: tuple[Term, ...]
    span: Span = field(default=ast.NO_SPAN, compare=False)


ModelExpr: TypeAlias = InputRef | StepRef | MethodCall | LinearCombination
"""A model-valued expression: an input, an earlier step, a method call, model arithmetic."""

ArgValue: TypeAlias = ModelExpr | tuple[ModelExpr, ...] | BlockWeights | float | int | str | None


@dataclass(frozen=True)
class Step:
    """A named value, in recipe order. ``kind`` is ``model`` (``value`` a :data:`ModelExpr`)
    or ``weights`` (``value`` the evaluated :class:`BlockWeights`). Names assigned inside a
    ``for`` loop get the iteration appended: ``x@blk=IN00``."""

    name: str
    kind: Literal["model", "weights"]
    value: ModelExpr | BlockWeights
    cached: bool = False
    origin: Literal["assign", "merge_board"] = "assign"
    span: Span = field(default=ast.NO_SPAN, compare=False)


@dataclass(frozen=True)
class SaveTarget:
    """One output file.

    ``path`` is as written (templates filled), relative to the recipe's folder. ``dtype``
    ``None`` keeps each key's input precision. Defaults: ``ema="drop"``, ``schedule="keep"``,
    ``position_ids="keep"`` (model A's), ``format`` from the extension (``.ckpt``, ``.pt``,
    ``.pth``: ckpt; anything else: safetensors). ``bindings`` are the loop variables of the
    iteration that made it.
    """

    model: ModelExpr
    path: str
    dtype: str | None = None
    ema: str = "drop"
    schedule: str = "keep"
    position_ids: str = "keep"
    format: str = "safetensors"
    vae: ModelSource | None = None
    bindings: tuple[tuple[str, str], ...] = ()
    span: Span = field(default=ast.NO_SPAN, compare=False)


@dataclass(frozen=True)
class CheckedRecipe:
    """A recipe that passed the checker: everything later stages need."""

    recipe: ast.Recipe
    models: Mapping[str, ModelSource]
    steps: tuple[Step, ...]
    saves: tuple[SaveTarget, ...]
    convention: str
    presets: PresetTable
    variables: Mapping[str, str]
    warnings: tuple[Diagnostic, ...] = ()
    base_dir: Path | None = None

    @property
    def path(self) -> str | None:
        return self.recipe.path

    def step(self, name: str) -> Step:
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)

    @property
    def model_steps(self) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if s.kind == "model")


def merge_board_output_path(output: str, *, safetensors: bool) -> str:
    """The file a Merge Board line writes: ``\\ | : ? " < > *`` become ``-``, ``/`` makes
    sub-folders, and the extension is ``.safetensors`` or ``.ckpt``."""
    parts = [p.strip() for p in _MB_UNSAFE.sub("-", output).split("/")]
    name = "/".join(p for p in parts if p and p != ".")
    return name + (".safetensors" if safetensors else ".ckpt")


# ---- values while checking -------------------------------------------------------------------


@dataclass(frozen=True)
class _Model:
    expr: ModelExpr
    label: str


@dataclass(frozen=True)
class _Weights:
    weights: BlockWeights
    number: float | None  # set when the value is a plain number


@dataclass(frozen=True)
class _Text:
    value: str


@dataclass(frozen=True)
class _Block:
    name: str


class _Invalid:
    """A value whose error was already reported: using it reports nothing more."""


_INVALID = _Invalid()
_Value: TypeAlias = _Model | _Weights | _Text | _Block | _Invalid
_Want: TypeAlias = Literal["model", "weights", "any"]


def _describe(value: _Value) -> str:
    if isinstance(value, _Model):
        return f"a model ({value.label})"
    if isinstance(value, _Weights):
        return "a number" if value.number is not None else "block weights"
    if isinstance(value, _Text):
        return "a string"
    if isinstance(value, _Block):
        return f"a block name ({value.name})"
    return "an invalid value"


def _template_text(value: _Value) -> str:
    if isinstance(value, _Block):
        return value.name
    if isinstance(value, _Weights) and value.number is not None:
        return format_number(value.number)
    if isinstance(value, _Text):
        return value.value
    if isinstance(value, _Model):
        return value.label
    return "?"


def _terms(model: _Model, span: Span) -> tuple[Term, ...]:
    if isinstance(model.expr, LinearCombination):
        return model.expr.terms
    return (Term(BlockWeights.scalar(1.0), model.expr, span=span),)


def _did_you_mean(name: str, candidates: Sequence[str]) -> str | None:
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    if not close:
        folded = {c.casefold(): c for c in candidates}
        close = [folded[c] for c in difflib.get_close_matches(name.casefold(), list(folded), 1)]
    return f"did you mean '{close[0]}'?" if close else None


def _float(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return number if number == number and abs(number) != float("inf") else None


def _is_block_word(name: str) -> bool:
    return name in SD_BLOCKS or name in GROUPS or name in (BASE, "default")


@dataclass
class _Binding:
    """A name in scope: a model declaration, an intermediate, a Merge Board output."""

    name: str
    value: _Model | _Weights
    kind: Literal["model", "intermediate", "merge_board"]
    line: int
    statement: ast.Node
    failed: bool = False  # the statement had an error: uses of the name report nothing


@dataclass
class _Usage:
    """How often the names a statement defines are used (over every loop iteration)."""

    name: str
    kind: Literal["model", "intermediate"]
    span: Span
    used: bool = False


class _Missing:
    """The result of an argument that could not be converted (already reported)."""


_MISSING = _Missing()


# ---- the checker -----------------------------------------------------------------------------


class _Checker:
    def __init__(
        self,
        recipe: ast.Recipe,
        variables: Mapping[str, str],
        base_dir: Path | None,
        presets: PresetTable,
    ) -> None:
        self.recipe = recipe
        self.variables = dict(variables)
        self.base_dir = base_dir
        self.presets = presets
        self.sink = DiagnosticSink(recipe.path, recipe.source)
        self.models: dict[str, ModelSource] = {}
        self.model_by_variable: dict[str, str] = {}
        self.steps: list[Step] = []
        self.saves: list[SaveTarget] = []
        self.save_paths: dict[str, Span] = {}
        self.convention: str = DEFAULT_CONVENTION
        self.convention_span: Span | None = None
        self.globals: dict[str, _Binding] = {}
        self.locals: list[dict[str, _Binding]] = []
        self.loop: dict[str, _Value] = {}
        self.loop_names: list[str] = []
        self.usage: dict[int, _Usage] = {}
        self.later: dict[str, int] = {}
        self.merge_board_lines: list[ast.MergeBoard] = []
        self.merge_board_steps: dict[int, str | None] = {}
        self.literal_warned: set[str] = set()
        self.unbound_reported: set[str] = set()

    # -- driver

    def run(self) -> CheckedRecipe:
        self._prescan()
        for stmt in self.recipe.statements:
            self._statement(stmt, top_level=True)
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

    def _prescan(self) -> None:
        """Record where each top-level name is defined (for "used before its definition"),
        number the Merge Board lines, and load preset files (they apply to the whole
        recipe, wherever the statement stands)."""
        for stmt in self.recipe.statements:
            if isinstance(stmt, ast.ModelDecl | ast.Assign):
                self.later.setdefault(stmt.name, stmt.span.line)
            elif isinstance(stmt, ast.MergeBoard):
                self.merge_board_lines.append(stmt)
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

    # -- statements

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

    def _define(
        self,
        name: str,
        span: Span,
        value: _Model | _Weights,
        kind: Literal["model", "intermediate", "merge_board"],
        stmt: ast.Node,
    ) -> bool:
        if _is_block_word(name):
            self.sink.error(
                f"'{name}' is a block name and cannot name a value",
                span,
                code="reserved-name",
                hint="block names, groups (IN, M, OUT), BASE and default are reserved",
            )
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
        scope[name] = _Binding(name, value, kind, span.line, stmt)
        return True

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
            stmt.name, stmt.name_span, _Model(InputRef(stmt.name), stmt.name), "model", stmt
        ):
            self.models[stmt.name] = model
            self.usage[id(stmt)] = _Usage(stmt.name, "model", stmt.name_span)

    def _assign(self, stmt: ast.Assign) -> None:
        value = self._eval(stmt.value, "any")
        if isinstance(value, _Invalid):
            self._define_invalid(stmt.name, stmt)
            return
        step_name = self._step_name(stmt.name)
        if isinstance(value, _Model):
            step = Step(step_name, "model", value.expr, stmt.cached, "assign", span=stmt.span)
            bound: _Model | _Weights = _Model(StepRef(step_name), stmt.name)
        elif isinstance(value, _Weights):
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
                f"'{stmt.name}' would hold {_describe(value)}; a name holds a model or weights",
                stmt.value.span,
                code="type",
            )
            self._define_invalid(stmt.name, stmt)
            return
        if self._define(stmt.name, stmt.name_span, bound, "intermediate", stmt):
            self.steps.append(step)
            self.usage.setdefault(id(stmt), _Usage(stmt.name, "intermediate", stmt.name_span))

    def _define_invalid(self, name: str, stmt: ast.Node) -> None:
        """Keep the name of a statement that failed defined, so its uses report nothing
        more (the statement's own error says what is wrong)."""
        scope = self.locals[-1] if self.locals else self.globals
        if name.isidentifier() and name not in scope:
            placeholder = _Model(StepRef(name), name)
            scope[name] = _Binding(name, placeholder, "intermediate", stmt.span.line, stmt, True)
            self.usage.pop(id(stmt), None)

    def _step_name(self, name: str) -> str:
        if not self.loop_names:
            return name
        bindings = ",".join(f"{v}={_template_text(self.loop[v])}" for v in self.loop_names)
        return f"{name}@{bindings}"

    def _save(self, stmt: ast.Save) -> None:
        value = self._eval(stmt.value, "model")
        model: _Model | None = None
        if isinstance(value, _Model):
            model = value
        elif not isinstance(value, _Invalid):
            self.sink.error(
                f"save needs a model, but this is {_describe(value)}",
                stmt.value.span,
                code="type",
            )
        path = self._render(stmt.path)
        dtype: str | None = None
        if stmt.dtype is not None:
            dtype = stmt.dtype.name
            if dtype not in SAVE_DTYPES:
                hint = _did_you_mean(dtype, SAVE_DTYPES) or ""
                self.sink.error(
                    f"unknown dtype '{dtype}'",
                    stmt.dtype.span,
                    code="unknown-dtype",
                    hint=(hint + " " if hint else "") + "choose fp16, bf16 or fp32",
                )
        options = self._save_options(stmt, path)
        if model is None or path is None or options is None:
            return
        chosen, vae = options
        self._add_save(
            SaveTarget(
                model.expr,
                path,
                dtype,
                ema=chosen.get("ema", "drop"),
                schedule=chosen.get("schedule", "keep"),
                position_ids=chosen.get("position_ids", "keep"),
                format=chosen["format"],
                vae=vae,
                bindings=tuple((v, _template_text(self.loop[v])) for v in self.loop_names),
                span=stmt.span,
            ),
            stmt.path.span,
        )

    def _add_save(self, target: SaveTarget, span: Span) -> None:
        key = posixpath.normpath(target.path.replace("\\", "/"))
        previous = self.save_paths.get(key)
        if previous is not None:
            where = (
                f"line {previous.line}"
                if previous.line != span.line
                else "an earlier iteration of this loop"
            )
            self.sink.error(
                f"'{target.path}' is already saved by {where}",
                span,
                code="duplicate-save",
                hint="each output needs its own path; in a loop, use {name} templates",
            )
            return
        self.save_paths[key] = span
        self.saves.append(target)

    def _save_options(
        self, stmt: ast.Save, path: str | None
    ) -> tuple[dict[str, str], ModelSource | None] | None:
        """The ``with`` options by key (``format`` always set), and the VAE to bake in."""
        chosen: dict[str, str] = {}
        vae: ModelSource | None = None
        seen: dict[str, ast.SaveOption] = {}
        ok = True
        for option in stmt.options:
            key = option.key
            if key not in SAVE_OPTIONS:
                hint = _did_you_mean(key, list(SAVE_OPTIONS))
                self.sink.error(
                    f"unknown save option '{key}'",
                    option.key_span,
                    code="unknown-save-option",
                    hint=(hint + " " if hint else "") + "options: " + ", ".join(SAVE_OPTIONS),
                )
                ok = False
                continue
            if key in seen:
                self.sink.error(
                    f"save option '{key}' is given twice",
                    option.key_span,
                    code="duplicate-save-option",
                )
                ok = False
                continue
            seen[key] = option
            if key == "vae":
                vae = self._vae(option)
                ok = ok and vae is not None
                continue
            allowed = SAVE_OPTIONS[key]
            value = option.value
            if not isinstance(value, ast.Name) or value.name not in allowed:
                shown = value.name if isinstance(value, ast.Name) else _source_text(value)
                self.sink.error(
                    f"save option {key} is {' or '.join(allowed)}, not {shown}",
                    value.span,
                    code="bad-save-option",
                    hint=f"write {key}={allowed[0]}",
                )
                ok = False
                continue
            chosen[key] = value.name
        if path is not None:
            implied = "ckpt" if path.lower().endswith(_CKPT_SUFFIXES) else "safetensors"
            given = chosen.get("format")
            if (
                given is not None
                and given != implied
                and path.lower().endswith((".safetensors", *_CKPT_SUFFIXES))
            ):
                self.sink.error(
                    f"format={given} does not match the file extension of '{path}'",
                    seen["format"].span,
                    code="format-conflict",
                    hint="change the extension or drop the format option",
                )
                ok = False
            chosen.setdefault("format", implied)
        return (chosen, vae) if ok else None

    def _vae(self, option: ast.SaveOption) -> ModelSource | None:
        value = option.value
        if isinstance(value, ast.String):
            path = self._render(value)
            if path is None:
                return None
            return ModelSource(path, "path", path, span=value.span)
        if isinstance(value, ast.Name):
            binding = self._lookup(value.name)
            if binding is not None and binding.kind == "model":
                self._mark_used(binding)
                return self.models.get(value.name)
            hint = _did_you_mean(
                value.name, [n for n, b in self.globals.items() if b.kind == "model"]
            )
            self.sink.error(
                f"vae= takes a path in quotes or a declared model, and '{value.name}' is not a "
                "declared model",
                value.span,
                code="bad-save-option",
                hint=hint or 'write vae="path/to/vae.safetensors"',
            )
            return None
        self.sink.error(
            "vae= takes a path in quotes or a declared model",
            value.span,
            code="bad-save-option",
        )
        return None

    def _for(self, stmt: ast.For) -> None:
        values = self._iterable(stmt.iterable)
        var = stmt.var
        problem = None
        if _is_block_word(var):
            problem = f"'{var}' is a block name and cannot be a loop variable"
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
        if values is None:
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

    def _iterable(self, iterable: ast.Iterable) -> list[_Value] | None:
        if isinstance(iterable, ast.BlockRange):
            blocks = self._block_range(iterable)
            return None if blocks is None else [_Block(b) for b in blocks]
        if isinstance(iterable, ast.Name):
            if iterable.name in GROUPS:
                return [_Block(b) for b in GROUPS[iterable.name]]
            self.sink.error(
                f"a for loop iterates a block range, a group or a list, not '{iterable.name}'",
                iterable.span,
                code="bad-iterable",
                hint="for blk in IN00..OUT11:  /  for blk in OUT:  /  for v in [0.25, 0.5]:",
            )
            return None
        if not iterable.items:
            self.sink.error("the list is empty", iterable.span, code="bad-iterable")
            return None
        values: list[_Value] = []
        for item in iterable.items:
            if isinstance(item, ast.Name) and item.name in SD_BLOCKS:
                values.append(_Block(item.name))
                continue
            value = self._eval(item, "any")
            if isinstance(value, _Invalid):
                return None
            values.append(value)
        return values

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
            hint = _did_you_mean(name, CONVENTION_NAMES)
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
        index = self.merge_board_lines.index(stmt) + 1
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
            if isinstance(converted, _Missing):
                ok = False
                continue
            args.append(BoundArg(param_name, converted, span=node.span))
        output = stmt.output
        duplicate = next(
            (mb for mb in self.merge_board_lines[: index - 1] if mb.output == output), None
        )
        if duplicate is not None:
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
        binding = _Model(StepRef(output), output)
        if output.isidentifier() and not self._define(
            output, stmt.output_span, binding, "merge_board", stmt
        ):
            return False
        self.steps.append(Step(step_name, "model", expr, False, "merge_board", span=stmt.span))
        self.merge_board_steps[index] = step_name
        dtype = stmt.dtype.name if stmt.dtype is not None else "fp32"
        file_format = "safetensors" if path.endswith(".safetensors") else "ckpt"
        self._add_save(
            SaveTarget(StepRef(step_name), path, dtype, format=file_format, span=stmt.span),
            stmt.output_span,
        )
        return True

    def _operand(self, operand: ast.MergeBoardOperand, line_index: int) -> _Model | None:
        if isinstance(operand, ast.ModelLiteral):
            name = operand.text
            if name.isidentifier() and (self._lookup(name) is not None or name in self.later):
                value = self._name(ast.Name(name, span=operand.span), "model")
                return self._expect_model(value, operand.span, "a Merge Board operand")
            key = name
            if key not in self.models:
                self.models[key] = ModelSource(name, "literal", name, span=operand.span)
                defined = [n for n, b in self.globals.items() if b.kind != "merge_board"]
                hint = _did_you_mean(name, defined)
                if hint is not None and name not in self.literal_warned:
                    self.literal_warned.add(name)
                    self.sink.warning(
                        f"'{name}' is not a defined name, so it is read as a checkpoint file name",
                        operand.span,
                        code="literal-model",
                        hint=hint,
                    )
            return _Model(InputRef(key), name)
        if isinstance(operand, ast.OutputRef):
            return self._output_ref(operand, line_index)
        value = self._eval(operand, "model")
        return self._expect_model(value, operand.span, "a Merge Board operand")

    def _output_ref(self, ref: ast.OutputRef, line_index: int | None) -> _Model | None:
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
        return _Model(StepRef(step), ref.text)

    # -- expressions

    def _eval(self, expr: ast.Expr, want: _Want) -> _Value:
        if isinstance(expr, ast.Number):
            return _Weights(BlockWeights.scalar(expr.value), expr.value)
        if isinstance(expr, ast.String):
            text = self._render(expr)
            return _INVALID if text is None else _Text(text)
        if isinstance(expr, ast.Name):
            return self._name(expr, want)
        if isinstance(expr, ast.Variable):
            return self._variable(expr, want)
        if isinstance(expr, ast.OutputRef):
            found = self._output_ref(expr, None)
            return _INVALID if found is None else found
        if isinstance(expr, ast.ModelLiteral):
            return self._operand(expr, 0) or _INVALID
        if isinstance(expr, ast.Call):
            return self._call(expr)
        if isinstance(expr, ast.BinaryOp):
            return self._binary(expr)
        if isinstance(expr, ast.Negate):
            return self._negate(expr)
        if isinstance(expr, ast.Vector):
            return self._vector(expr)
        return self._map(expr)

    def _lookup(self, name: str) -> _Binding | None:
        for scope in reversed(self.locals):
            if name in scope:
                return scope[name]
        return self.globals.get(name)

    def _mark_used(self, binding: _Binding) -> None:
        usage = self.usage.get(id(binding.statement))
        if usage is not None:
            usage.used = True

    def _name(self, node: ast.Name, want: _Want) -> _Value:
        name = node.name
        if name in self.loop:
            return self.loop[name]
        binding = self._lookup(name)
        if binding is not None:
            self._mark_used(binding)
            if binding.failed:
                return _INVALID
            return binding.value
        preset = self.presets.get(name)
        if preset is not None:
            return _Weights(preset, None)
        if _is_block_word(name):
            self.sink.error(
                f"'{name}' is a block name; blocks are used as weight map keys",
                node.span,
                code="block-as-value",
                hint=f"write {{{name}: 0.5, default: 0}}",
            )
            return _INVALID
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
            return _INVALID
        candidates = [
            *self.globals,
            *(n for scope in self.locals for n in scope),
            *self.loop,
            *self.presets.names(),
        ]
        hint = _did_you_mean(name, candidates)
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
        return _INVALID

    def _variable_value(self, node: ast.Variable) -> str | None:
        value = self.variables.get(node.name)
        if value is None and node.name not in self.unbound_reported:
            # Reported once, where it is first used: the fix is one --set for every use.
            self.unbound_reported.add(node.name)
            self.sink.error(
                f"the variable {node.text} is not bound",
                node.span,
                code="unbound-variable",
                hint=f"bind it on the command line: --set {node.name}=path/to/model.safetensors",
            )
        return value

    def _variable(self, node: ast.Variable, want: _Want) -> _Value:
        value = self._variable_value(node)
        if value is None:
            return _INVALID
        number = _float(value)
        if want == "weights" or (want == "any" and number is not None):
            if number is not None:
                return _Weights(BlockWeights.scalar(number), number)
            preset = self.presets.get(value)
            if preset is not None:
                return _Weights(preset, None)
            self.sink.error(
                f"{node.text} is '{value}', which is neither a number nor a preset name",
                node.span,
                code="variable-not-number",
                hint=f"--set {node.name}=0.5",
            )
            return _INVALID
        key = self.model_by_variable.get(node.name)
        if key is None:
            key = node.text
            self.model_by_variable[node.name] = key
            self.models[key] = ModelSource(key, "variable", value, node.name, span=node.span)
        return _Model(InputRef(key), node.text)

    def _render(self, node: ast.String) -> str | None:
        missing = [p for p in node.placeholders if p.name not in self.loop]
        if missing:
            self._unbound_placeholders(node)
            return None
        return node.render({n: _template_text(v) for n, v in self.loop.items()})

    def _unbound_placeholders(self, node: ast.String) -> None:
        for placeholder in node.placeholders:
            if placeholder.name in self.loop:
                continue
            hint = _did_you_mean(placeholder.name, list(self.loop))
            self.sink.error(
                f"the template placeholder {{{placeholder.name}}} is not a loop variable here",
                placeholder.span,
                code="unbound-placeholder",
                hint=hint
                or "placeholders are filled from for-loop variables; write {{ for a literal brace",
            )

    def _expect_model(self, value: _Value, span: Span, what: str) -> _Model | None:
        if isinstance(value, _Model):
            return value
        if not isinstance(value, _Invalid):
            self.sink.error(f"{what} must be a model, not {_describe(value)}", span, code="type")
        return None

    # -- calls

    def _call(self, call: ast.Call) -> _Value:
        spec = get_method(call.func)
        if spec is None:
            binding = self._lookup(call.func)
            hint = _did_you_mean(call.func, method_names())
            if binding is not None:
                hint = f"'{call.func}' is a model or intermediate, not a method"
            self.sink.error(
                f"unknown merge method '{call.func}'",
                call.func_span,
                code="unknown-method",
                hint=hint or "methods: " + ", ".join(method_names()),
            )
            for arg in call.args:
                self._eval(arg.value if isinstance(arg, ast.Keyword) else arg, "any")
            return _INVALID
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
                hint = _did_you_mean(keyword.name, [p.name for p in spec.params])
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
                models = [self._model_arg(spec, param, n) for n in nodes]
                if any(m is None for m in models):
                    ok = False
                    continue
                exprs = tuple(m.expr for m in models if m is not None)
                args.append(BoundArg(param.name, exprs, span=span))
                continue
            node = nodes[0]
            if param.kind == "model":
                model = self._model_arg(spec, param, node)
                if model is None:
                    ok = False
                    continue
                args.append(BoundArg(param.name, model.expr, span=node.span))
                continue
            want: _Want = "any" if param.kind == "string" else "weights"
            converted = self._convert(spec, param, self._eval(node, want), node.span)
            if isinstance(converted, _Missing):
                ok = False
                continue
            args.append(BoundArg(param.name, converted, span=node.span))
        if not ok:
            return _INVALID
        return _Model(MethodCall(spec.name, tuple(args), span=call.span), f"{spec.name}(...)")

    def _model_arg(self, spec: MethodSpec, param: Param, node: ast.Expr) -> _Model | None:
        value = self._eval(node, "model")
        if isinstance(value, _Model):
            return value
        if isinstance(value, _Invalid):
            return None
        self.sink.error(
            f"argument '{param.name}' of {spec.name} must be a model, not {_describe(value)}",
            node.span,
            code="type",
            hint=spec.signature(),
        )
        return None

    def _convert(
        self, spec: MethodSpec, param: Param, value: _Value, span: Span
    ) -> ArgValue | _Missing:
        """A non-model argument in the form :class:`BoundArg` holds, or ``_MISSING``."""
        if isinstance(value, _Invalid):
            return _MISSING
        what = f"argument '{param.name}' of {spec.name}"
        if param.kind == "string":
            if isinstance(value, _Text):
                return value.value
            self.sink.error(f"{what} must be a string, not {_describe(value)}", span, code="type")
            return _MISSING
        if not isinstance(value, _Weights):
            expected = "weights (a number, a list, a map or a preset)"
            if param.kind != "weights":
                expected = "a number"
            self.sink.error(
                f"{what} must be {expected}, not {_describe(value)}",
                span,
                code="type",
                hint=spec.signature(),
            )
            return _MISSING
        if param.kind == "weights":
            for slot, slot_value in _slots(value.weights):
                problem = param.range_error(slot_value)
                if problem is not None:
                    where = "" if value.number is not None else f" (at {slot})"
                    self.sink.error(f"out of range: {problem}{where}", span, code="out-of-range")
                    return _MISSING
            return value.weights
        if value.number is None:
            self.sink.error(
                f"{what} must be a number, not block weights",
                span,
                code="type",
                hint=spec.signature(),
            )
            return _MISSING
        number: float | int = value.number
        if param.kind == "int":
            if not value.number.is_integer():
                self.sink.error(f"{what} must be a whole number", span, code="type")
                return _MISSING
            number = int(value.number)
        problem = param.range_error(number)
        if problem is not None:
            self.sink.error(f"out of range: {problem}", span, code="out-of-range")
            return _MISSING
        return number

    # -- arithmetic

    def _binary(self, node: ast.BinaryOp) -> _Value:
        left = self._eval(node.left, "any")
        right = self._eval(node.right, "any")
        if isinstance(left, _Invalid) or isinstance(right, _Invalid):
            return _INVALID
        op = node.op
        if isinstance(left, _Weights) and isinstance(right, _Weights):
            return self._weights_arithmetic(node, left, right)
        if isinstance(left, _Model) and isinstance(right, _Model) and op in "+-":
            right_terms = _terms(right, node.right.span)
            if op == "-":
                right_terms = tuple(Term(-t.weight, t.model, span=t.span) for t in right_terms)
            terms = _terms(left, node.left.span) + right_terms
            return _Model(LinearCombination(terms, span=node.span), "model arithmetic")
        if op == "*" and isinstance(left, _Model) and isinstance(right, _Weights):
            return _scale(left, right.weights, node)
        if op == "*" and isinstance(left, _Weights) and isinstance(right, _Model):
            return _scale(right, left.weights, node)
        if op == "/" and isinstance(left, _Model) and isinstance(right, _Weights):
            try:
                return _scale(left, 1.0 / right.weights, node)
            except WeightsError as exc:
                self.sink.error(exc.message, node.right.span, code="weights", hint=exc.hint)
                return _INVALID
        self.sink.error(
            _type_error_message(op, left, right),
            node.span,
            code="type",
            hint=_type_error_hint(op, left, right),
        )
        return _INVALID

    def _weights_arithmetic(self, node: ast.BinaryOp, left: _Weights, right: _Weights) -> _Value:
        op = node.op
        if left.number is not None and right.number is not None:
            a, b = left.number, right.number
            if op == "/" and b == 0:
                self.sink.error("division by zero", node.right.span, code="weights")
                return _INVALID
            number = {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else 0.0}[op]
            if _float(repr(number)) is None:
                self.sink.error("the result is not a finite number", node.span, code="weights")
                return _INVALID
            return _Weights(BlockWeights.scalar(number), number)
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
            return _INVALID
        assert isinstance(result, BlockWeights)
        return _Weights(result, None)

    def _negate(self, node: ast.Negate) -> _Value:
        value = self._eval(node.operand, "any")
        if isinstance(value, _Invalid):
            return value
        if isinstance(value, _Weights):
            number = None if value.number is None else -value.number
            return _Weights(-value.weights, number)
        if isinstance(value, _Model):
            terms = tuple(Term(-t.weight, t.model, span=t.span) for t in _terms(value, node.span))
            return _Model(LinearCombination(terms, span=node.span), "model arithmetic")
        self.sink.error(f"cannot negate {_describe(value)}", node.span, code="type")
        return _INVALID

    # -- weights literals

    def _vector(self, node: ast.Vector) -> _Value:
        numbers: list[float] = []
        ok = True
        for item in node.items:
            value = self._eval(item, "weights")
            if isinstance(value, _Weights) and value.number is not None:
                numbers.append(value.number)
                continue
            ok = False
            if not isinstance(value, _Invalid):
                self.sink.error(
                    f"a weight vector holds numbers, not {_describe(value)}",
                    item.span,
                    code="not-a-number",
                    hint="write each block's weight as a number, e.g. [0.5, 0.5, ...]",
                )
        if not ok:
            return _INVALID
        try:
            return _Weights(BlockWeights.from_vector(numbers), None)
        except WeightsError as exc:
            span = node.items[exc.index].span if exc.index is not None else node.span
            self.sink.error(
                exc.message,
                span,
                code="vector-length" if exc.index is None else "weights",
                hint=exc.hint,
            )
            return _INVALID

    def _map(self, node: ast.WeightMap) -> _Value:
        entries: list[tuple[MapKey, float]] = []
        ok = True
        for entry in node.entries:
            key = self._map_key(entry.key)
            value = self._eval(entry.value, "weights")
            if key is None:
                ok = False
            if isinstance(value, _Weights) and value.number is not None:
                if key is not None:
                    entries.append((key, value.number))
                continue
            ok = False
            if not isinstance(value, _Invalid):
                self.sink.error(
                    f"a weight map entry's value is a number, not {_describe(value)}",
                    entry.value.span,
                    code="not-a-number",
                )
        if not ok:
            return _INVALID
        try:
            return _Weights(BlockWeights.from_map(entries), None)
        except WeightsError as exc:
            span = node.entries[exc.index].key.span if exc.index is not None else node.span
            self.sink.error(exc.message, span, code="weights", hint=exc.hint)
            return _INVALID

    def _map_key(self, key: ast.MapKey) -> MapKey | None:
        if isinstance(key, ast.BlockRange):
            blocks = self._block_range(key)
            return None if blocks is None else (key.start, key.end)
        name = key.name
        if name in self.loop:
            bound = self.loop[name]
            if isinstance(bound, _Block):
                return bound.name
            self.sink.error(
                f"the loop variable '{name}' holds {_describe(bound)}, not a block name",
                key.span,
                code="loop-variable",
            )
            return None
        if _is_block_word(name):
            return name
        self._unknown_block(name, key.span)
        return None

    def _block_range(self, node: ast.BlockRange) -> tuple[str, ...] | None:
        ok = True
        for name, span in ((node.start, node.start_span), (node.end, node.end_span)):
            if name not in SD_BLOCKS:
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
                hint=f"write {node.end}..{node.start}; blocks run IN00..IN11, M00, OUT00..OUT11",
            )
            return None

    def _unknown_block(self, name: str, span: Span) -> None:
        suggestion = suggest_block(name)
        hint = f"did you mean {suggestion}? " if suggestion else ""
        self.sink.error(
            f"unknown block name '{name}'",
            span,
            code="unknown-block",
            hint=hint + "blocks are IN00..IN11, M00, OUT00..OUT11 (SDXL: IN00..IN08, M00, "
            "OUT00..OUT08); also IN, M, OUT, BASE and default",
        )


def _default(param: Param) -> ArgValue:
    default = param.default
    if param.kind == "weights" and isinstance(default, int | float):
        return BlockWeights.scalar(float(default))
    if isinstance(default, BlockWeights | int | float | str) or default is None:
        return default
    return None


def _join(first: Span, last: Span) -> Span:
    return Span(first.line, first.column, last.end_line, last.end_column)


def _slots(weights: BlockWeights) -> Iterator[tuple[str, float]]:
    if weights.base is not None:
        yield BASE, weights.base
    for name, value in zip(SD_BLOCKS, weights.blocks, strict=True):
        if value is not None:
            yield name, value


def _scale(model: _Model, weight: BlockWeights, node: ast.BinaryOp) -> _Model:
    terms = tuple(Term(t.weight * weight, t.model, span=t.span) for t in _terms(model, node.span))
    return _Model(LinearCombination(terms, span=node.span), "model arithmetic")


_OP_WORDS = {"+": "add", "-": "subtract", "*": "multiply", "/": "divide"}


def _type_error_message(op: str, left: _Value, right: _Value) -> str:
    if isinstance(left, _Model) and isinstance(right, _Model):
        return f"cannot {_OP_WORDS[op]} two models"
    lhs, rhs = _describe(left), _describe(right)
    if op == "-":
        return f"cannot subtract {rhs} from {lhs}"
    if op == "/":
        return f"cannot divide {lhs} by {rhs}"
    if op == "*":
        return f"cannot multiply {lhs} by {rhs}"
    return f"cannot add {lhs} and {rhs}"


def _type_error_hint(op: str, left: _Value, right: _Value) -> str | None:
    models = isinstance(left, _Model), isinstance(right, _Model)
    if all(models):
        return "models add and subtract; scale one with weights: a * 0.5 + b * 0.5"
    if any(models) and op in "+-":
        return "to scale a model write model * 0.5; to mix two use weighted_sum(a, b, alpha=0.5)"
    if models[1] and op == "/":
        return "divide a model by a number: model / 2"
    return None


def _source_text(node: ast.SaveValue) -> str:
    if isinstance(node, ast.String):
        return f'"{node.value}"'
    if isinstance(node, ast.Number):
        return format_number(node.value)
    return node.name


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
