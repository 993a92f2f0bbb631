"""What the checker produces: the checked recipe and the values it is made of.

A :class:`CheckedRecipe` holds the input models (:class:`ModelSource`), the named steps
(:class:`Step`) and the output files (:class:`SaveTarget`). A model-valued expression
(:data:`ModelExpr`) is an input (:class:`InputRef`), an earlier step (:class:`StepRef`), a
method call with its bound arguments (:class:`MethodCall`, :class:`BoundArg`) or model
arithmetic (:class:`LinearCombination` of :class:`Term`). Later stages (planner, executor)
work from these and never see syntax again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeAlias

from mergelang.block_weights import BlockWeights
from mergelang.errors import Diagnostic, Span
from mergelang.io.save_choices import SaveOptions
from mergelang.lang import ast
from mergelang.presets import PresetTable

__all__ = [
    "ArgValue",
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
]


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
    prediction: str = "auto"
    bindings: tuple[tuple[str, str], ...] = ()
    span: Span = field(default=ast.NO_SPAN, compare=False)

    @property
    def options(self) -> SaveOptions:
        """The save's choices; the VAE, a file found only when the run is planned, is left
        out."""
        return SaveOptions(
            dtype=self.dtype,
            ema=self.ema,
            schedule=self.schedule,
            position_ids=self.position_ids,
            format=self.format,
            prediction=self.prediction,
        )


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
