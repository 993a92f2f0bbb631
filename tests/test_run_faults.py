"""Faults and determinism of ``mergelang.run``: an interrupted or cancelled run leaves no
output and no temporary file, inputs are never written, and neither the number of worker
threads nor the chunk size changes a single byte of the outputs."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from run_helpers import (
    add_difference,
    assert_same_tensors,
    declare,
    expected_output,
    files_under,
    load,
    merged_float32,
    partial_files,
    recipe_list,
    saved,
    sha256,
    shared_models,
    uniform,
    vector,
    weighted_sum,
    write_recipe,
)

import mergelang.api as api
from mergelang.errors import RecipeError
from mergelang.io.locate import ModelLocator
from mergelang.plan.planner import PlanOptions, build_plan
from mergelang.run.executor import RunResult, execute

V25 = [round(0.04 * i, 2) for i in range(25)]
OUTPUTS = ["ab.safetensors", "abc.safetensors"]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MERGELANG_CACHE", str(tmp_path / "env-cache"))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_models(tmp_path_factory, ("a", "b", "c"))


def recipe_text(models: Path) -> str:
    """A cached step and two outputs: an interrupted run has three files open."""
    return (
        declare(models, "a", "b", "c")
        + f"cache ab = weighted_sum(a, b, alpha={recipe_list(V25)}, base=0.5)\n"
        + 'save ab to "out/ab.safetensors" as fp16\n'
        + 'save add_difference(ab, c, a, alpha=0.75) to "out/abc.safetensors" as bf16\n'
    )


def input_state(models: Path) -> dict[str, tuple[str, int]]:
    paths = [models / f"{name}.safetensors" for name in ("a", "b", "c")]
    return {p.name: (sha256(p), p.stat().st_mtime_ns) for p in paths}


def run(recipe: Path, folder: Path, **kwargs: Any) -> RunResult:
    return api.run(recipe, cache_dir=folder / "cache", **kwargs)


class Interrupting:
    """A reporter whose ``advance`` raises ``error`` on its second call."""

    def __init__(self, error: type[BaseException]) -> None:
        self.error = error
        self.advances = 0
        self.finished: list[bool] = []

    def phase(self, name: str, total: int, detail: str = "") -> None:
        return None

    def advance(self, done: int, detail: str = "") -> None:
        self.advances += 1
        if self.advances > 1:
            raise self.error("stop")

    def note(self, text: str) -> None:
        return None

    def finish(self, ok: bool) -> None:
        self.finished.append(ok)


class Recording:
    """A reporter that keeps every call: per phase its name, total and bytes advanced."""

    def __init__(self) -> None:
        self.phases: list[str] = []
        self.totals: list[int] = []
        self.done: list[int] = []
        self.notes: list[str] = []
        self.finished: list[bool] = []

    def phase(self, name: str, total: int, detail: str = "") -> None:
        self.phases.append(name)
        self.totals.append(total)
        self.done.append(0)

    def advance(self, done: int, detail: str = "") -> None:
        self.done[-1] += done

    def note(self, text: str) -> None:
        self.notes.append(text)

    def finish(self, ok: bool) -> None:
        self.finished.append(ok)


def assert_nothing_written(folder: Path) -> None:
    assert files_under(folder / "out") == []
    assert files_under(folder / "cache" / "objects") == []
    assert partial_files(folder) == []


# ---- interruptions -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("workers", "error"),
    [(1, KeyboardInterrupt), (3, KeyboardInterrupt), (2, RuntimeError)],
    ids=["1-worker-interrupt", "3-workers-interrupt", "2-workers-error"],
)
def test_an_interrupted_run_leaves_no_output_and_no_temporary_file(
    tmp_path: Path, models: Path, workers: int, error: type[BaseException]
) -> None:
    recipe = write_recipe(tmp_path, recipe_text(models))
    before = input_state(models)
    reporter = Interrupting(error)

    with pytest.raises(error):
        run(recipe, tmp_path, workers=workers, reporter=reporter)

    assert reporter.advances == 2
    assert reporter.finished == [False]
    assert_nothing_written(tmp_path)
    assert input_state(models) == before


def test_a_cancel_event_set_beforehand_stops_the_run_before_any_output(
    tmp_path: Path, models: Path
) -> None:
    recipe = write_recipe(tmp_path, recipe_text(models))
    before = input_state(models)
    cancel = threading.Event()
    cancel.set()

    with pytest.raises(KeyboardInterrupt):
        run(recipe, tmp_path, cancel=cancel)

    assert_nothing_written(tmp_path)
    assert input_state(models) == before


# ---- inputs are never written ------------------------------------------------------------------


@pytest.mark.parametrize("through", ["its path", "a symlink", "a hard link"])
def test_an_output_path_that_is_an_input_is_refused_even_with_force(
    tmp_path: Path, models: Path, through: str
) -> None:
    target = models / "b.safetensors"
    if through == "a symlink":
        target = tmp_path / "link.safetensors"
        target.symlink_to(models / "b.safetensors")
    elif through == "a hard link":
        target = tmp_path / "hard.safetensors"
        os.link(models / "b.safetensors", target)
    before = input_state(models)
    save_line = f'save weighted_sum(a, b, alpha=0.5) to "{target}"'
    recipe = write_recipe(tmp_path, declare(models, "a", "b") + save_line + "\n")

    with pytest.raises(RecipeError) as caught:
        run(recipe, tmp_path, force=True)

    (diag,) = caught.value.diagnostics
    assert diag.code == "overwrite-input"
    assert diag.span is not None and (diag.span.line, diag.span.column) == (3, 1)
    assert diag.source_line == save_line
    assert input_state(models) == before
    assert partial_files(tmp_path) == [] and partial_files(models) == []


# ---- determinism -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReferenceRun:
    out: Path
    result: RunResult
    reporter: Recording


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory: pytest.TempPathFactory, models: Path) -> ReferenceRun:
    """A complete run with one worker and the default chunk size, made in the folder of an
    interrupted one."""
    folder = tmp_path_factory.mktemp("reference")
    recipe = write_recipe(folder, recipe_text(models))
    with pytest.raises(KeyboardInterrupt):
        run(recipe, folder, workers=1, reporter=Interrupting(KeyboardInterrupt))
    reporter = Recording()
    result = run(recipe, folder, workers=1, reporter=reporter)
    return ReferenceRun(folder / "out", result, reporter)


def test_a_run_after_an_interrupted_one_writes_every_output(
    reference_run: ReferenceRun, models: Path
) -> None:
    result, reporter, out = reference_run.result, reference_run.reporter, reference_run.out

    assert [o.status for o in result.outputs] == ["written", "written"]
    assert result.cache_stores == ("ab",)
    # The hashing (a cached step draws on new inputs) and the one pass reach their totals
    # exactly; the run ends well.
    assert reporter.phases == ["hashing", "merging"]
    assert reporter.done == reporter.totals and reporter.totals[1] > 0
    assert reporter.finished == [True]
    written = [n for n in reporter.notes if n.startswith("written")]
    assert written == [f"written {out / name}" for name in OUTPUTS]
    assert files_under(out) == OUTPUTS
    assert partial_files(out.parent) == []
    a, b, c = (load(models / f"{n}.safetensors") for n in ("a", "b", "c"))
    ab = expected_output("sd1", [a, b], weighted_sum(vector("sd1", V25, 0.5)), "fp16")
    assert_same_tensors(load(out / "ab.safetensors"), ab)
    merged = merged_float32("sd1", [a, b], weighted_sum(vector("sd1", V25, 0.5)))
    abc = merged_float32("sd1", [merged, c, a], add_difference(uniform("sd1", 0.75)))
    expected = saved(abc, {k: t.dtype for k, t in a.items()}, "bf16")
    assert_same_tensors(load(out / "abc.safetensors"), expected)


def test_three_workers_write_the_same_bytes_as_one(
    tmp_path: Path, models: Path, reference_run: ReferenceRun
) -> None:
    recipe = write_recipe(tmp_path, recipe_text(models))

    run(recipe, tmp_path, workers=3, use_cache=False)

    assert files_under(tmp_path / "out") == OUTPUTS
    assert files_under(tmp_path / "cache" / "objects") == []
    for name in OUTPUTS:
        assert sha256(tmp_path / "out" / name) == sha256(reference_run.out / name), name


def test_a_small_chunk_does_not_change_a_byte(
    tmp_path: Path, models: Path, reference_run: ReferenceRun
) -> None:
    recipe = write_recipe(tmp_path, recipe_text(models))
    checked = api.load(recipe)
    options = PlanOptions(cache_dir=tmp_path / "cache", use_cache=False, chunk=1000, workers=2)
    plan = build_plan(checked, ModelLocator([], env={}), options)
    assert plan.chunk == 1000
    split = [k for k, s in plan.outputs[1].node.keys.items() if s.numel > 2 * plan.chunk]
    assert len(split) > 50

    execute(plan)

    assert files_under(tmp_path / "out") == OUTPUTS
    for name in OUTPUTS:
        assert sha256(tmp_path / "out" / name) == sha256(reference_run.out / name), name
