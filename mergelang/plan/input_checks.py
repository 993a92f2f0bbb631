"""Checking a recipe against its input checkpoints, reading their headers only.

:func:`check_inputs` takes a :class:`~mergelang.check.checked_recipe.CheckedRecipe` and its
inputs, each resolved once by :func:`~mergelang.plan.inputs.resolve_inputs` (found, opened,
its format sniffed, a safetensors header read and validated: a missing, truncated or corrupt
file is reported here, with the locator's or the header reader's error code, at the place
in the recipe that names it). For every input model it detects the architecture from the
key names and shapes (:func:`mergelang.arch.detect`; no fitting architecture is
``unknown-architecture``). A VAE file is only validated: it is not a whole checkpoint.

Pickle files (``.ckpt``, ``.pt``, ``.pth``, ``.bin``) are found but, for ``check --inputs``,
not inspected: reading their key names needs torch and loads the whole file, which is the
run's job. Their architecture is then ``None``, and the checks below leave them out. Inputs
resolved for a run have their pickles loaded, and those are inspected like the rest.

With the architectures known, it checks the model expressions of every step and save:

- ``architecture-mismatch``: one expression (a call, model arithmetic) draws on inputs of more
  than one architecture. It is reported at the innermost expression that mixes them.
- ``weights-architecture``: block weights that cannot be resolved for the architecture of the
  call's inputs, e.g. a 19-value SDXL vector given to a call on SD1 models (at the argument),
  or a weight in model arithmetic that sets no BASE (at the term).
- ``block-not-in-model``: a block name or group written in a weight (a map entry, a range's
  end, an elemental entry's block set) that the architecture's block scheme lacks, at the name
  (``J24`` on SD3 Medium, ``D05`` on SDXL). It is a warning for the names the scheme
  tolerates by convention (SD1's IN09..IN11 and OUT09..OUT11 on SDXL): the weight there sets
  nothing. Names one place writes for several loop iterations are one diagnostic.
- ``elemental-no-match`` (a warning): an elemental entry whose key pattern, within its
  blocks, matches no key the architecture merges (at the entry). Warnings do not stop the
  recipe: they are in :attr:`InputsReport.warnings`.

Every problem is collected and one :class:`~mergelang.errors.RecipeError` is raised with all
of them (and the recipe's warnings), sorted by position. For the inputs of a run, a file that
cannot be opened or an input (a pickle, tensors in memory) that cannot be loaded or detected
is raised first, on its own: the run cannot go on without it. Nothing here reads a tensor or
imports torch.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from mergelang.arch import Architecture, get_architecture
from mergelang.arch.align import relatives_hint
from mergelang.arch.layout import checkpoint_layout
from mergelang.arch.prediction import (
    PREDICTION_HINT,
    Prediction,
    describe_prediction,
    prediction_of,
)
from mergelang.block_weights import (
    BlockWeights,
    ElementalEntry,
    WeightsError,
    blocks_not_in,
    name_runs,
    vocabulary,
)
from mergelang.check.checked_recipe import (
    BoundArg,
    CheckedRecipe,
    InputRef,
    LinearCombination,
    MethodCall,
    ModelExpr,
    ModelSource,
    SaveTarget,
    StepRef,
)
from mergelang.errors import CheckpointError, Diagnostic, RecipeError, Span, source_lines
from mergelang.lang import ast
from mergelang.methods.registry import MethodSpec, get_method
from mergelang.plan.inputs import InputFormat, ResolvedInputs, ResolvedSource

__all__ = ["InputFormat", "InputInfo", "InputsReport", "check_inputs"]


@dataclass(frozen=True)
class InputInfo:
    """One input file: where it is, its format and (safetensors only) its architecture.

    ``architecture`` is the registered name (``sd1``, ``sd2``, ``sdxl``) and ``variant`` the
    U-Net variant (``normal``, ``inpainting``, ``pix2pix``); both are ``None`` for a pickle
    file that is not inspected, and for a VAE file.
    """

    source: ModelSource
    path: Path
    format: InputFormat
    architecture: str | None = None
    variant: str | None = None
    prediction: Prediction | None = None
    """What the file's markers declare (:mod:`mergelang.arch.prediction`), for an
    architecture that marks it."""

    @property
    def inspected(self) -> bool:
        return self.format != "pickle" or self.architecture is not None


@dataclass(frozen=True)
class InputsReport:
    """What :func:`check_inputs` found: the inputs by model name, the VAE files by the path
    written in the recipe, and the model steps, so that the architecture of any model
    expression of the recipe can be asked for."""

    inputs: Mapping[str, InputInfo]
    vaes: Mapping[str, InputInfo] = field(default_factory=lambda: MappingProxyType({}))
    steps: Mapping[str, ModelExpr] = field(
        default_factory=lambda: MappingProxyType({}), compare=False, repr=False
    )
    warnings: tuple[Diagnostic, ...] = field(default=(), compare=False)
    """Warnings that need the architectures (elemental patterns matching no key), by
    position; the recipe's own warnings are in :attr:`CheckedRecipe.warnings`."""

    @property
    def architectures(self) -> tuple[str, ...]:
        """The distinct known architectures of the inputs, in declaration order."""
        found = (info.architecture for info in self.inputs.values())
        return tuple(dict.fromkeys(a for a in found if a is not None))

    @property
    def not_inspected(self) -> tuple[str, ...]:
        """The inputs whose architecture is unknown because they are pickle files not
        loaded."""
        return tuple(name for name, info in self.inputs.items() if not info.inspected)

    def inputs_of(self, expr: ModelExpr) -> tuple[str, ...]:
        """The input models ``expr`` draws on (through earlier steps too), first use first."""
        return tuple(_inputs_of(expr, self.steps, {}))

    def architectures_of(self, expr: ModelExpr) -> tuple[str, ...]:
        """The distinct known architectures of the inputs of ``expr``."""
        found = (self.inputs[n].architecture for n in self.inputs_of(expr) if n in self.inputs)
        return tuple(dict.fromkeys(a for a in found if a is not None))

    def architecture_of(self, expr: ModelExpr) -> str | None:
        """The architecture of ``expr``, or ``None`` if no input of it was inspected.

        A report is only returned when no expression mixes architectures, so there is at
        most one; an expression built afterwards that does raises :class:`ValueError`."""
        found = self.architectures_of(expr)
        if len(found) > 1:
            raise ValueError(f"the expression mixes architectures: {', '.join(found)}")
        return found[0] if found else None


def check_inputs(
    checked: CheckedRecipe, inputs: ResolvedInputs, *, cache_dir: Path | None = None
) -> InputsReport:
    """Check ``checked`` against its resolved ``inputs`` (see the module docstring).

    A model declared with a ``sha256`` pin has its file hashed (through the hash cache in
    ``cache_dir``, by default :func:`~mergelang.io.hashing.default_cache_dir`: a file seen
    before is not read again) and must match. Raises :class:`RecipeError` with every
    problem found (and the recipe's warnings), each at its place in the recipe; returns the
    :class:`InputsReport` otherwise.
    """
    return _InputsChecker(checked, inputs, cache_dir).run()


# ---------------------------------------------------------------------------------------------
# Walking model expressions


def _model_args(call: MethodCall) -> Iterator[ModelExpr]:
    for bound in call.args:
        value = bound.value
        if isinstance(value, tuple):
            yield from value
        elif isinstance(value, InputRef | StepRef | MethodCall | LinearCombination):
            yield value


def _children(expr: ModelExpr) -> Iterator[ModelExpr]:
    if isinstance(expr, MethodCall):
        yield from _model_args(expr)
    elif isinstance(expr, LinearCombination):
        for term in expr.terms:
            yield term.model


def _inputs_of(
    expr: ModelExpr, steps: Mapping[str, ModelExpr], memo: dict[str, dict[str, None]]
) -> dict[str, None]:
    """The input names of ``expr`` as an ordered set; ``memo`` caches each step's."""
    if isinstance(expr, InputRef):
        return {expr.model: None}
    if isinstance(expr, StepRef):
        cached = memo.get(expr.step)
        if cached is None:
            value = steps.get(expr.step)
            cached = {} if value is None else _inputs_of(value, steps, memo)
            memo[expr.step] = cached
        return cached
    found: dict[str, None] = {}
    for child in _children(expr):
        found.update(_inputs_of(child, steps, memo))
    return found


def _expression_name(expr: ModelExpr) -> str:
    return expr.method if isinstance(expr, MethodCall) else "model arithmetic"


# ---------------------------------------------------------------------------------------------
# The pass


class _InputsChecker:
    def __init__(
        self, checked: CheckedRecipe, inputs: ResolvedInputs, cache_dir: Path | None = None
    ) -> None:
        self.checked = checked
        self.resolved = inputs
        self.cache_dir = cache_dir
        self.lines = source_lines(checked.recipe.source or "")
        self.problems: list[Diagnostic] = []
        self.warnings: list[Diagnostic] = []
        self.seen: set[tuple[str, Span, str]] = set()
        self.steps: dict[str, ModelExpr] = {}
        for step in checked.model_steps:
            if not isinstance(step.value, BlockWeights):
                self.steps[step.name] = step.value
        self.inputs: dict[str, InputInfo] = {}
        self.vaes: dict[str, InputInfo] = {}
        self.memo: dict[str, dict[str, None]] = {}
        self.mixed_steps: dict[str, bool] = {}
        self.not_in_model: dict[tuple[Span, str], dict[str, None]] = {}
        """(place, architecture) -> the names written there that its scheme lacks."""

    def run(self) -> InputsReport:
        if self.resolved.for_run:
            self._refuse_unloadable()
        self._inspect_files()
        for name, expr in self.steps.items():
            self._step_mixed(name, expr)
            self._check_weights(expr)
        for save in self.checked.saves:
            if not self._mixed(save.model):
                self._check_prediction(save)
            self._check_weights(save.model)
        self._report_not_in_model()
        warnings = sorted(self.warnings, key=lambda d: (d.line or 0, d.column or 0))
        if self.problems:
            everything = [*self.problems, *self.checked.warnings, *warnings]
            raise RecipeError(sorted(everything, key=lambda d: (d.line or 0, d.column or 0)))
        return InputsReport(
            MappingProxyType(dict(self.inputs)),
            MappingProxyType(dict(self.vaes)),
            MappingProxyType(dict(self.steps)),
            tuple(warnings),
        )

    # -- reporting

    def _line(self, span: Span) -> str | None:
        """The recipe line ``span`` is on, as the parser counts lines."""
        return self.lines[span.line - 1] if 0 < span.line <= len(self.lines) else None

    def _report(
        self,
        message: str,
        code: str,
        span: Span,
        hint: str | None = None,
        key: str | None = None,
        same: str | None = None,
        warning: bool = False,
    ) -> None:
        """Add a diagnostic unless an equal one (same code, place, and ``same``, by default
        the message) was added: loops repeat the same expressions."""
        identity = (code, span, message if same is None else same)
        if identity in self.seen:
            return
        self.seen.add(identity)
        diagnostic = Diagnostic(
            message,
            code,
            self.checked.path,
            span,
            hint,
            source_line=self._line(span),
            key=key,
            severity="warning" if warning else "error",
        )
        (self.warnings if warning else self.problems).append(diagnostic)

    # -- files

    def _whole_models(self) -> set[str]:
        """The models whose architecture is detected: every one but a VAE or text-encoder
        file declared as a model and used only as a file a save bakes in."""
        used = self._models_in_expressions()
        models = self.checked.models
        declared_vaes = {
            vae.name
            for s in self.checked.saves
            for _, vae in s.baked
            if models.get(vae.name) == vae
        }
        return {name for name in models if name in used or name not in declared_vaes}

    def _refuse_unloadable(self) -> None:
        """Raise the problems a run cannot go past (in declaration order, on their own): a
        model file that cannot be opened, and a pickle or tensors in memory that cannot be
        loaded or whose architecture is unknown."""
        whole = self._whole_models()
        found: list[Diagnostic] = []
        for name, resolved in self.resolved.models.items():
            if resolved.stage in ("open", "load"):
                assert resolved.problem is not None
                found += self._file_problem(resolved, resolved.source, resolved.problem)
            elif resolved.format in ("pickle", "memory") and name in whole:
                try:
                    self.resolved.detected(resolved)
                except CheckpointError as exc:
                    found += self._file_problem(resolved, resolved.source, exc)
        if found:
            raise RecipeError(found)

    def _file_problem(
        self, resolved: ResolvedSource, source: ModelSource, exc: CheckpointError
    ) -> list[Diagnostic]:
        """``exc``, a problem of the resolved file (or tensors), at ``source``'s place."""
        label = f"{resolved.role} '{source.name}'"
        found = []
        for diag in exc.diagnostics:
            where = resolved.path if resolved.path is not None else diag.path
            message = f"{label}: {where}: {diag.message}" if where else f"{label}: {diag.message}"
            found.append(
                Diagnostic(
                    message,
                    diag.code,
                    self.checked.path,
                    source.span,
                    diag.hint,
                    source_line=self._line(source.span),
                    key=diag.key,
                )
            )
        return found

    def _inspect_files(self) -> None:
        whole = self._whole_models()
        models = self.checked.models
        for name, source in models.items():
            info = self._inspect(self.resolved.models[name], source, whole=name in whole)
            if info is not None:
                self.inputs[name] = info
        for save in self.checked.saves:
            for _, vae in save.baked:
                if models.get(vae.name) == vae or vae.ref in self.vaes:
                    continue
                info = self._inspect(self.resolved.vaes[vae.ref], vae, whole=False)
                if info is not None:
                    self.vaes[vae.ref] = info

    def _models_in_expressions(self) -> set[str]:
        used: set[str] = set()
        for expr in [*self.steps.values(), *(s.model for s in self.checked.saves)]:
            used.update(_inputs_of(expr, self.steps, self.memo))
        return used

    def _inspect(
        self, resolved: ResolvedSource, source: ModelSource, *, whole: bool
    ) -> InputInfo | None:
        """What resolving ``source`` found and, for a whole model whose keys are known, its
        architecture; a problem is reported at the source's span."""
        problem = resolved.problem
        if problem is not None and resolved.stage == "locate":
            label = f"{resolved.role} '{source.name}'"
            for diag in problem.diagnostics:
                self._report(f"{label}: {diag.message}", diag.code, source.span, diag.hint)
            return None
        if problem is not None:
            self._add(self._file_problem(resolved, source, problem))
            return None
        if source.sha256 is not None and not self._pin_holds(resolved, source):
            return None
        fmt = resolved.format
        assert fmt is not None
        path = resolved.path if resolved.memory is None else resolved.memory.path
        assert path is not None
        if not whole or not resolved.inspectable:
            return InputInfo(source, path, fmt)
        try:
            found = self.resolved.detected(resolved)
        except CheckpointError as exc:
            self._add(self._file_problem(resolved, source, exc))
            return None
        prediction = None
        if found.arch.prediction_markers:
            keys, metadata = _keys_and_metadata(resolved)
            prediction = prediction_of(keys, metadata)
        return InputInfo(source, path, fmt, found.arch.name, found.variant, prediction)

    def _pin_holds(self, resolved: ResolvedSource, source: ModelSource) -> bool:
        """Whether the file found for ``source`` has the sha256 its pin gives (reported at
        the pin when not). Tensors given in memory have no file to hash and pass."""
        from mergelang.io.hashing import default_cache_dir

        pin = source.sha256
        opened = resolved.file
        if pin is None or opened is None:
            return True
        cache_dir = self.cache_dir if self.cache_dir is not None else default_cache_dir()
        try:
            hashes = opened.hashes(cache_dir, compute=True)
        except OSError as exc:
            self._report(
                f"{resolved.role} '{source.name}': {resolved.path}: cannot be hashed: {exc}",
                "pin-mismatch",
                source.sha256_span,
                None,
            )
            return False
        if hashes is not None and hashes.sha256.startswith(pin):
            return True
        found = "unknown" if hashes is None else hashes.sha256
        self._report(
            f"{resolved.role} '{source.name}': {resolved.path} has sha256 {found}, not the "
            f"pinned {pin}",
            "pin-mismatch",
            source.sha256_span,
            "the file found by this name is another file than the recipe was made with: "
            "find the right one (--models-dir), or remove the pin to use this one",
        )
        return False

    def _add(self, diagnostics: list[Diagnostic]) -> None:
        """Add each unless an equal one (same code, place and message) was added."""
        for diag in diagnostics:
            assert diag.span is not None
            identity = (diag.code, diag.span, diag.message)
            if identity not in self.seen:
                self.seen.add(identity)
                self.problems.append(diag)

    # -- architectures of expressions

    def _arch(self, name: str) -> str | None:
        info = self.inputs.get(name)
        return None if info is None else info.architecture

    def _by_architecture(self, expr: ModelExpr) -> dict[str, list[str]]:
        """Architecture -> the input models of ``expr`` that have it, first use first."""
        groups: dict[str, list[str]] = {}
        for name in _inputs_of(expr, self.steps, self.memo):
            arch = self._arch(name)
            if arch is not None:
                groups.setdefault(arch, []).append(name)
        return groups

    def _step_mixed(self, name: str, expr: ModelExpr) -> bool:
        done = self.mixed_steps.get(name)
        if done is None:
            done = self._mixed(expr)
            self.mixed_steps[name] = done
        return done

    def _mixed(self, expr: ModelExpr) -> bool:
        """Whether ``expr`` mixes architectures; reports the innermost expressions that do."""
        if isinstance(expr, InputRef):
            return False
        if isinstance(expr, StepRef):
            value = self.steps.get(expr.step)
            return False if value is None else self._step_mixed(expr.step, value)
        below = [self._mixed(child) for child in _children(expr)]
        groups = self._by_architecture(expr)
        if len(groups) < 2:
            return False
        if not any(below):
            self._report_mismatch(expr, groups)
        return True

    def _report_mismatch(
        self, expr: MethodCall | LinearCombination, groups: dict[str, list[str]]
    ) -> None:
        parts = [f"{arch} ({', '.join(names)})" for arch, names in groups.items()]
        listed = ", ".join(parts[:-1]) + " and " + parts[-1]
        titles = ", ".join(f"{a} is {get_architecture(a).title}" for a in groups)
        first, second, *_ = (get_architecture(a) for a in groups)
        self._report(
            f"{_expression_name(expr)} mixes {listed}",
            "architecture-mismatch",
            expr.span,
            hint=relatives_hint(first, second) or f"merge models of one architecture ({titles})",
        )

    # -- prediction markers

    def _check_prediction(self, save: SaveTarget) -> None:
        """A save whose inputs declare different predictions must say which the output has;
        ``prediction=`` on an architecture without markers is an error."""
        names = [n for n in _inputs_of(save.model, self.steps, self.memo) if n in self.inputs]
        archs = {self.inputs[n].architecture for n in names} - {None}
        if len(archs) != 1:
            return
        arch = get_architecture(archs.pop())  # type: ignore[arg-type]
        if not arch.prediction_markers:
            if save.prediction != "auto":
                self._report(
                    f"prediction={save.prediction}: {arch.title} checkpoints carry no "
                    "prediction marker",
                    "prediction-not-marked",
                    save.span,
                    hint="drop the prediction option",
                )
            return
        if save.prediction != "auto":
            return
        kinds: dict[Prediction, str] = {}
        for name in names:
            found = self.inputs[name].prediction
            if found is not None:
                kinds.setdefault(found, name)
        if len(kinds) < 2:
            return
        parts = [
            f"'{name}' ({self.inputs[name].path.name}) is {describe_prediction(kind)}"
            for kind, name in kinds.items()
        ]
        self._report(
            f"save '{save.path}' merges models of different predictions: " + "; ".join(parts),
            "prediction-mismatch",
            save.span,
            hint=PREDICTION_HINT,
        )

    # -- weights against the architecture

    def _check_weights(self, expr: ModelExpr) -> None:
        """Resolve the weights of every call and term in ``expr`` (not through step
        references: each step is checked on its own) for its inputs' architecture."""
        if isinstance(expr, InputRef | StepRef):
            return
        for child in _children(expr):
            self._check_weights(child)
        groups = self._by_architecture(expr)
        if len(groups) != 1:
            return
        arch = get_architecture(next(iter(groups)))
        if isinstance(expr, MethodCall):
            spec = get_method(expr.method)
            if spec is not None:
                self._call_weights(expr, spec, arch)
        else:
            self._term_weights(expr, arch)

    def _call_weights(self, call: MethodCall, spec: MethodSpec, arch: Architecture) -> None:
        for bound in call.args:
            param = spec.param(bound.param)
            if param is None or param.kind != "weights":
                continue
            weights = _as_weights(bound.value)
            if weights is None:
                continue
            base_param = spec.base_param_for(param.name)
            base = None if base_param is None else _as_number(_argument(call, base_param.name))
            self._elemental_matches(weights, arch, _span_of(bound, call.span))
            self._written_blocks(weights, arch, _span_of(bound, call.span))
            try:
                spec.resolve_weights(param.name, weights, arch.scheme, base=base)
            except WeightsError as exc:
                prefix = f"{param.name} of {spec.name}: "
                reason = exc.message.removeprefix(prefix)
                self._report(
                    f"{param.name} of {spec.name} with {arch.name} models: {reason}",
                    "weights-architecture",
                    _span_of(bound, call.span),
                    hint=exc.hint,
                    same=arch.name,
                )

    def _term_weights(self, expr: LinearCombination, arch: Architecture) -> None:
        for term in expr.terms:
            fallback = term.span if term.span != ast.NO_SPAN else expr.span
            self._elemental_matches(term.weight, arch, fallback)
            self._written_blocks(term.weight, arch, fallback)
            try:
                term.weight.resolve(arch.scheme, base=None)
            except WeightsError as exc:
                hint = exc.hint
                if "sets no BASE" in exc.message:
                    hint = "give 26 values, a BASE: entry or a default: entry"
                self._report(
                    f"model arithmetic with {arch.name} models: {exc.message}",
                    "weights-architecture",
                    term.span if term.span != ast.NO_SPAN else expr.span,
                    hint=hint,
                    same=arch.name,
                )

    def _written_blocks(self, weights: BlockWeights, arch: Architecture, fallback: Span) -> None:
        """Note each block name ``weights`` was written with that ``arch`` lacks."""
        for written in blocks_not_in(weights.written, arch.scheme):
            span = written.span if written.span is not None else fallback
            self.not_in_model.setdefault((span, arch.name), {})[written.name] = None

    def _report_not_in_model(self) -> None:
        vocab = vocabulary()
        for (span, arch_name), found in self.not_in_model.items():
            scheme = get_architecture(arch_name).scheme
            names = vocab.sorted(list(found)) + tuple(n for n in found if n not in vocab.order)
            tolerated = all(n in scheme.tolerated for n in names)
            what = "block" if all(n in vocab.order for n in names) else "block or group"
            verb = f"are not {what}s" if len(names) > 1 else f"is not a {what}"
            effect = "; the weight there sets nothing" if tolerated else ""
            groups = ", ".join(scheme.groups)
            self._report(
                f"{name_runs(names)} {verb} of {arch_name} models{effect}",
                "block-not-in-model",
                span,
                hint=f"{scheme.title} models have the blocks {name_runs(scheme.blocks)}"
                + (
                    f" ({'groups' if len(scheme.groups) > 1 else 'group'} {groups})"
                    if groups
                    else ""
                ),
                same=f"{arch_name} {' '.join(names)}",
                warning=tolerated,
            )

    def _elemental_matches(self, weights: BlockWeights, arch: Architecture, fallback: Span) -> None:
        """Warn about each elemental entry that selects no key of ``arch``."""
        keys = _merged_keys(arch.name, self.checked.convention)
        for entry in weights.elemental:
            selector = entry.selector
            if any(selector.matches(block, key) for key, block in keys):
                continue
            span = selector.span if selector.span is not None else fallback
            self._report(
                f"the elemental entry {selector.to_text()} matches no key of {arch.name} models",
                "elemental-no-match",
                span,
                hint=_no_match_hint(entry),
                same=arch.name,
                warning=True,
            )


@functools.cache
def _keys_and_metadata(resolved: ResolvedSource) -> tuple[Collection[str], Mapping[str, str]]:
    """The key names and metadata of an inspectable input."""
    if resolved.memory is not None:
        return resolved.memory.keys(), resolved.memory.metadata
    assert resolved.file is not None
    return resolved.file.metas().keys(), resolved.file.metadata


def _merged_keys(arch_name: str, convention: str) -> tuple[tuple[str, str], ...]:
    """``(key, block)`` for every key of the architecture that merges compute."""
    arch = get_architecture(arch_name)
    found: list[tuple[str, str]] = []
    for key in checkpoint_layout(arch):
        block = arch.block_of(key, convention)
        if block is not None:
            found.append((key, block))
    return tuple(found)


def _no_match_hint(entry: ElementalEntry) -> str:
    selector = entry.selector
    if selector.is_glob:
        return (
            "a pattern with * ? or [ matches whole key names (case-sensitive), e.g. "
            '"*attn2.to_k*"; without them it matches any part of a key'
        )
    return 'a pattern matches part of a key name, case-sensitive (e.g. "attn2", "norm")'


def _argument(call: MethodCall, name: str) -> object:
    for bound in call.args:
        if bound.param == name:
            return bound.value
    return None


def _span_of(bound: BoundArg, fallback: Span) -> Span:
    return fallback if bound.span == ast.NO_SPAN else bound.span


def _as_weights(value: object) -> BlockWeights | None:
    if isinstance(value, BlockWeights):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return BlockWeights.scalar(float(value))
    return None


def _as_number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None
