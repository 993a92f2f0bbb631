"""The merge outputs a comparison page shows: each file's hashes, architecture and weights.

mergelang writes into every output the recipe that made it (``mergelang.recipe``), the loop
bindings of its ``save`` (``mergelang.bindings``, ``{"blk": "IN04"}``), the ``--set``
variables (``mergelang.set``) and a record of each input with its hashes
(``mergelang.inputs``). :func:`read_output` reads them back from the safetensors header
(no tensors are loaded), checks the recipe again with the same variables and finds the
``save`` that wrote this file, so the page knows the output's block weights without being
told. The file's own hashes (AutoV2 and legacy, as the web UIs print them in their PNG info)
come from :func:`~mergelang.io.hashing.file_hashes`, through the hash cache.

An output's *weight* is the first block weight of its expression that differs between blocks
(``{blk: 0.75, default: 1}`` in ``sd15 * {blk: 0.75, default: 1}``; ``alpha`` in
``weighted_sum(a, b, alpha={blk: w, default: 0})``). Its *difference from the reference* is
where that weight is not the value that leaves the first model as it is: 1 for a term of
model arithmetic, 0 for a merge method's weight.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from mergelang.arch import Architecture, detect
from mergelang.block_weights import BlockWeights, WeightsError
from mergelang.check import check
from mergelang.check.checked_recipe import (
    CheckedRecipe,
    InputRef,
    LinearCombination,
    MethodCall,
    ModelExpr,
    StepRef,
)
from mergelang.errors import MergelangError
from mergelang.io.hashing import FileHashes, file_hashes
from mergelang.io.metadata import InputRecord, read_provenance
from mergelang.io.safetensors_header import read_safetensors_header
from mergelang.lang.parser import parse
from mergelang.report.charts import resolved_values

__all__ = ["OutputModel", "WeightSource", "read_output", "weights_of"]

BINDINGS_KEY = "mergelang.bindings"
SET_KEY = "mergelang.set"


@dataclass(frozen=True)
class WeightSource:
    """A block weight inside an output's expression: ``label`` names where it is (the
    model it scales, or ``method.param``), ``identity`` is the value that leaves the first
    model unchanged."""

    label: str
    weights: BlockWeights
    identity: float


@dataclass(frozen=True)
class OutputModel:
    """One checkpoint on the page. ``weights`` holds one number per block (and ``BASE``
    when set) or is ``None`` when the file carries no readable mergelang recipe;
    ``changed`` is block -> weight minus the reference's; ``problems`` says what could not
    be read."""

    path: Path
    architecture: Architecture | None
    hashes: FileHashes | None
    bindings: Mapping[str, str] = field(default_factory=dict)
    weights: Mapping[str, float] | None = None
    weight_label: str | None = None
    changed: Mapping[str, float] = field(default_factory=dict)
    inputs: tuple[InputRecord, ...] = ()
    problems: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.path.stem


def weights_of(expr: ModelExpr, checked: CheckedRecipe) -> Iterator[WeightSource]:
    """Every block weight in ``expr``, outermost first, through earlier steps."""
    if isinstance(expr, StepRef):
        step = checked.step(expr.step)
        if step.kind == "model" and not isinstance(step.value, BlockWeights):
            yield from weights_of(step.value, checked)
    elif isinstance(expr, LinearCombination):
        for term in expr.terms:
            yield WeightSource(_model_label(term.model), term.weight, 1.0)
        for term in expr.terms:
            yield from weights_of(term.model, checked)
    elif isinstance(expr, MethodCall):
        for bound in expr.args:
            if isinstance(bound.value, BlockWeights):
                yield WeightSource(f"{expr.method}.{bound.param}", bound.value, 0.0)
        for bound in expr.args:
            values = bound.value if isinstance(bound.value, tuple) else (bound.value,)
            for value in values:
                if isinstance(value, InputRef | StepRef | MethodCall | LinearCombination):
                    yield from weights_of(value, checked)


def _model_label(expr: ModelExpr) -> str:
    if isinstance(expr, InputRef):
        return expr.model
    if isinstance(expr, StepRef):
        return expr.step
    if isinstance(expr, MethodCall):
        return expr.method
    return "model"


def _json_map(text: str | None) -> dict[str, str]:
    if not text:
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): str(v) for k, v in data.items()}


def read_output(path: Path, *, hashes: bool = True, cache_dir: Path | None = None) -> OutputModel:
    """What the page needs of one output file; never raises for a bad file, listing the
    problem in :attr:`OutputModel.problems` instead (an unreadable header raises
    :class:`~mergelang.errors.MergelangError`, which the caller reports)."""
    header = read_safetensors_header(path)
    problems: list[str] = []
    architecture: Architecture | None = None
    try:
        architecture = detect(header.shapes(), path=str(path)).arch
    except MergelangError as exc:
        problems.append(f"{path.name}: architecture unknown ({exc.diagnostics[0].message})")
    found_hashes = file_hashes(path, cache_dir=cache_dir) if hashes else None
    metadata = dict(header.metadata)
    provenance = read_provenance(metadata)
    bindings = _json_map(metadata.get(BINDINGS_KEY))
    output = OutputModel(
        path=path,
        architecture=architecture,
        hashes=found_hashes,
        bindings=bindings,
        inputs=provenance.inputs if provenance is not None else (),
    )
    recipe = provenance.recipe if provenance is not None else None
    if recipe is None or architecture is None:
        if recipe is None:
            problems.append(f"{path.name}: no mergelang recipe in its metadata (weights unknown)")
        return replace(output, problems=tuple(problems))
    source = _save_weights(recipe, _json_map(metadata.get(SET_KEY)), bindings, path, problems)
    if source is None:
        return replace(output, problems=tuple(problems))
    scheme = architecture.scheme
    try:
        values = resolved_values(source.weights, scheme, base=None)
    except WeightsError as exc:
        problems.append(f"{path.name}: its weights do not resolve for {scheme.title} ({exc})")
        return replace(output, problems=tuple(problems))
    changed = {
        name: values[name] - source.identity
        for name in scheme.blocks
        if values[name] != source.identity
    }
    return replace(
        output,
        weights=values,
        weight_label=source.label,
        changed=changed,
        problems=tuple(problems),
    )


def _save_weights(
    recipe: str,
    variables: Mapping[str, str],
    bindings: Mapping[str, str],
    path: Path,
    problems: list[str],
) -> WeightSource | None:
    """The weight of the ``save`` in ``recipe`` that wrote ``path`` (by its bindings, then
    by file name), or ``None`` with the reason added to ``problems``."""
    try:
        checked = check(parse(recipe), set=dict(variables))
    except MergelangError as exc:
        problems.append(f"{path.name}: its recipe no longer checks ({exc.diagnostics[0].message})")
        return None
    wanted = tuple(sorted(bindings.items()))
    saves = [s for s in checked.saves if tuple(sorted(s.bindings)) == wanted]
    if len(saves) > 1:
        saves = [s for s in saves if Path(s.path).stem == path.stem] or saves[:1]
    if not saves:
        problems.append(f"{path.name}: no save in its recipe has its loop values {bindings}")
        return None
    sources = list(weights_of(saves[0].model, checked))
    if not sources:
        problems.append(f"{path.name}: its recipe gives it no block weights")
        return None
    for source in sources:
        if source.weights.is_scalar is None:
            return source
    return sources[0]
