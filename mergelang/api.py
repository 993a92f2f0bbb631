"""Running recipes from Python: :func:`plan`, :func:`run` and :func:`evaluate`.

Each takes a recipe as a path (a :class:`~pathlib.Path`, or a string naming an existing file
or ending in ``.merge``), as recipe text, as a parsed :class:`~mergelang.lang.ast.Recipe` or as a
:class:`~mergelang.check.checked_recipe.CheckedRecipe`. ``set`` binds recipe variables like
``--set``.

:func:`evaluate` keeps everything in memory: it returns ``{key: tensor}`` of one result and
writes nothing, and its ``inputs`` may be tensors already in memory (a state dict), so a
program can try many weight vectors on the same models without touching the disk.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mergelang.check import check
from mergelang.check.checked_recipe import CheckedRecipe
from mergelang.errors import UsageError
from mergelang.lang import ast
from mergelang.lang.parser import parse, parse_file

if TYPE_CHECKING:
    import torch

    from mergelang.plan.plan import Plan
    from mergelang.run.executor import RunResult
    from mergelang.run.progress import Reporter

__all__ = ["RecipeSource", "evaluate", "load", "plan", "run"]

RecipeSource = str | os.PathLike[str] | ast.Recipe | CheckedRecipe
PathList = Sequence[str | os.PathLike[str]]


def load(recipe: RecipeSource, *, set: Mapping[str, object] | None = None) -> CheckedRecipe:
    """Parse (if needed) and check ``recipe``; raises :class:`RecipeError` on any problem."""
    if isinstance(recipe, CheckedRecipe):
        return recipe
    variables = {str(k): str(v) for k, v in (set or {}).items()}
    if isinstance(recipe, ast.Recipe):
        return check(recipe, set=variables)
    if isinstance(recipe, os.PathLike) or _looks_like_path(recipe):
        return check(parse_file(os.fspath(recipe)), set=variables)
    return check(parse(recipe), set=variables)


def _looks_like_path(text: str) -> bool:
    if "\n" in text or not text.strip():
        return False
    return text.endswith(".merge") or os.path.isfile(text)


def _locator(models_dir: PathList | str | os.PathLike[str]) -> object:
    from mergelang.io.locate import ModelLocator

    dirs = [models_dir] if isinstance(models_dir, str | os.PathLike) else list(models_dir)
    return ModelLocator(dirs)


def plan(
    recipe: RecipeSource,
    *,
    set: Mapping[str, object] | None = None,
    models_dir: PathList | str | os.PathLike[str] = (),
    out_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
    force: bool = False,
    rebuild: bool = False,
    device: str = "cpu",
    workers: int | None = None,
    hash_inputs: bool = False,
    nan: str = "error",
    reporter: Reporter | None = None,
) -> Plan:
    """The :class:`~mergelang.plan.plan.Plan` of ``recipe``, reading headers only.

    ``hash_inputs=False`` (the default) uses only content hashes already cached, so planning
    never reads a whole file; cache decisions that need an unhashed input show as unknown.
    With ``hash_inputs``, ``reporter`` is told the hashing as a ``hashing`` phase.
    """
    return _plan(
        recipe,
        set=set,
        models_dir=models_dir,
        out_dir=out_dir,
        cache_dir=cache_dir,
        use_cache=use_cache,
        force=force,
        rebuild=rebuild,
        device=device,
        workers=workers,
        hash_inputs=hash_inputs,
        nan=nan,
        reporter=reporter,
    )


def _plan(
    recipe: RecipeSource,
    *,
    set: Mapping[str, object] | None,
    models_dir: PathList | str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None,
    cache_dir: str | os.PathLike[str] | None,
    use_cache: bool,
    force: bool,
    device: str,
    workers: int | None,
    hash_inputs: bool,
    nan: str,
    rebuild: bool = False,
    hash_during_run: bool = False,
    reporter: Reporter | None = None,
) -> Plan:
    from mergelang.io.locate import ModelLocator
    from mergelang.plan.planner import PlanOptions, build_plan

    checked = load(recipe, set=set)
    locator = _locator(models_dir)
    assert isinstance(locator, ModelLocator)
    options = PlanOptions(
        out_dir=None if out_dir is None else Path(out_dir),
        cache_dir=None if cache_dir is None else Path(cache_dir),
        use_cache=use_cache,
        force=force,
        rebuild=rebuild,
        device=device,
        workers=workers,
        nan=nan,
        hash_during_run=hash_during_run,
        progress=reporter,
    )
    return build_plan(checked, locator, options, hash_inputs=hash_inputs)


def run(
    recipe: RecipeSource,
    *,
    set: Mapping[str, object] | None = None,
    models_dir: PathList | str | os.PathLike[str] = (),
    out_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
    force: bool = False,
    rebuild: bool = False,
    device: str = "cpu",
    workers: int | None = None,
    dry_run: bool = False,
    nan: str = "error",
    reporter: Reporter | None = None,
    cancel: threading.Event | None = None,
) -> RunResult:
    """Run ``recipe``: write its outputs; returns a :class:`~mergelang.run.executor.RunResult`.

    Outputs already made by the same steps from the same inputs are left alone (status
    ``up-to-date``) unless ``rebuild``; an earlier output of the same save of this recipe is
    remade when its steps or inputs changed (``OutputResult.changes`` says what changed);
    another existing file is refused unless ``force``. ``dry_run`` plans,
    hashes the inputs and checks everything, then writes nothing (statuses ``dry-run``).
    """
    if device != "cpu":
        from mergelang.run.executor import resolve_device

        resolve_device(device)  # an absent GPU is reported before anything is read
    started = time.monotonic()
    try:
        made = _plan(
            recipe,
            set=set,
            models_dir=models_dir,
            out_dir=out_dir,
            cache_dir=cache_dir,
            use_cache=use_cache,
            force=force,
            rebuild=rebuild,
            device=device,
            workers=workers,
            hash_inputs=True,
            nan=nan,
            hash_during_run=not dry_run,
            reporter=reporter,
        )
    except BaseException:
        # Planning may hash inputs while reporting: the reporter hears the run ended.
        if reporter is not None:
            reporter.finish(False)
        raise
    from mergelang.run.input_hashing import InputHashing

    # New inputs are hashed from now on, while torch is imported and the merge runs.
    hashing = InputHashing(made)
    hashing.start()
    try:
        # torch is imported once the recipe, its inputs and outputs are known to be good.
        from mergelang.run.executor import OutputResult, RunResult, execute
    except BaseException:
        hashing.stop()
        made.close()
        raise
    if dry_run:
        outputs = tuple(
            OutputResult(
                o.name,
                o.path,
                "dry-run" if o.status == "write" else o.status,
                o.nbytes,
                len(o.layout),
            )
            for o in made.outputs
        )
        hits = tuple(e.node.label for e in made.cache if e.status == "hit")
        made.close()
        return RunResult(outputs, hits, (), made.bytes_read, 0, 0.0, made.warnings)
    try:
        result = execute(made, reporter=reporter, cancel=cancel, hashing=hashing)
    except BaseException:
        hashing.stop()  # also where the run failed before its merge began
        raise
    # The run's time includes planning: reading headers and hashing inputs before the merge.
    return dataclasses.replace(result, seconds=time.monotonic() - started)


def evaluate(
    recipe: RecipeSource,
    *,
    target: str | None = None,
    set: Mapping[str, object] | None = None,
    inputs: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
    models_dir: PathList | str | os.PathLike[str] = (),
    device: str = "cpu",
    dtype: str | None = None,
    workers: int | None = None,
    nan: str = "error",
) -> dict[str, torch.Tensor]:
    """One result of ``recipe`` as ``{key: tensor}``, computed in memory; nothing is written.

    ``target`` names a step (or an input model); by default the recipe's only ``save``
    (with its options: dtype, EMA and schedule kept or dropped, VAE, position_ids), else its
    last named model step (every key kept). ``inputs`` gives tensors for some
    model names instead of their files (a name that is no model of the recipe is refused).
    ``dtype`` (``fp16``, ``bf16``, ``fp32``) casts
    floating-point keys; ``None`` keeps each key's natural dtype (model A's).
    """
    from mergelang.io.locate import ModelLocator
    from mergelang.plan.planner import PlanOptions, build_plan
    from mergelang.run.executor import execute

    checked = load(recipe, set=set)
    chosen: str | int
    if target is not None:
        chosen = target
    elif len(checked.saves) == 1:
        chosen = 0
    elif checked.model_steps:
        chosen = checked.model_steps[-1].name
    else:
        raise UsageError(
            "the recipe has no single result to evaluate", hint="name one with target="
        )
    if isinstance(chosen, str) and chosen not in checked.models:
        names = [s.name for s in checked.model_steps]
        if chosen not in names:
            raise UsageError(
                f"the recipe has no model step named {chosen!r}",
                hint="steps: " + (", ".join(names) or "none"),
            )
    unknown = [name for name in inputs or {} if name not in checked.models]
    if unknown:
        import difflib

        close = difflib.get_close_matches(unknown[0], list(checked.models), n=1)
        raise UsageError(
            f"inputs= names {unknown[0]!r}, which is no model of the recipe",
            hint=(f"did you mean {close[0]!r}? " if close else "")
            + "models: "
            + (", ".join(checked.models) or "none"),
        )
    locator = _locator(models_dir)
    assert isinstance(locator, ModelLocator)
    options = PlanOptions(
        inputs=inputs,
        targets=(chosen,),
        dtype=dtype,
        device=device,
        workers=workers,
        use_cache=False,
        nan=nan,
    )
    made = build_plan(checked, locator, options, hash_inputs=False)
    result = execute(made)
    tensors = result.outputs[0].tensors
    assert tensors is not None
    return dict(tensors)
