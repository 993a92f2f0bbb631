"""A plan is finished when planning returns it: frozen, and never changed by a run."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from run_helpers import declare, shared_models, write_recipe

from mergelang import api
from mergelang.io.locate import ModelLocator
from mergelang.plan.plan import FileOutput, MemoryOutput
from mergelang.plan.planner import PlanOptions, build_plan
from mergelang.run.executor import execute


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_models(tmp_path_factory, ("a", "b"))


def recipe(folder: Path, models: Path) -> Path:
    text = declare(models, "a", "b") + (
        "cache slerped = slerp(a, b, alpha=0.4)\n"
        'save slerped to "out/slerp.safetensors"\n'
        'save weighted_sum(a, b, alpha=0.5) to "out/ws.ckpt"\n'
    )
    return write_recipe(folder, text)


def test_a_plan_its_outputs_and_cache_entries_are_frozen(tmp_path: Path, models: Path) -> None:
    plan = api.plan(recipe(tmp_path, models), cache_dir=tmp_path / "cache", hash_inputs=True)
    plan.close()
    assert isinstance(plan.outputs, tuple) and isinstance(plan.cache, tuple)
    assert isinstance(plan.inputs, tuple)
    first, second = plan.outputs
    assert isinstance(first, FileOutput) and isinstance(second, FileOutput)
    assert isinstance(first.layout, tuple)
    assert [o.file_format.name for o in plan.outputs] == ["safetensors", "ckpt"]
    assert plan.hashed and plan.cache_dir == tmp_path / "cache"
    assert [h.name for h in plan.inputs] == ["a", "b"]
    assert all(plan.hashes_of(h) is not None for h in plan.inputs)
    assert [e.status for e in plan.cache] == ["store"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.outputs = ()  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.status = "up-to-date"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.cache[0].status = "hit"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.inputs[0].architecture = "sdxl"  # type: ignore[misc]
    with pytest.raises(TypeError):
        first.metadata["title"] = "changed"  # type: ignore[index]
    node = first.node
    assert node.sealed and node.names == ("slerped",)
    assert all(n.sealed for n in plan.all_nodes())
    with pytest.raises(dataclasses.FrozenInstanceError):
        node.cache_marked = False
    with pytest.raises(dataclasses.FrozenInstanceError):
        node.add_name("another")
    with pytest.raises(TypeError):
        node.keys["x"] = node.keys[next(iter(node.keys))]  # type: ignore[index]


def test_a_run_reports_what_happened_and_leaves_its_plan_as_it_was(
    tmp_path: Path, models: Path
) -> None:
    path = recipe(tmp_path, models)
    plan = api.plan(path, cache_dir=tmp_path / "cache", hash_inputs=True)
    before = [(o.status, o.key, dict(o.metadata)) for o in plan.outputs]
    cache_before = [(e.status, e.key) for e in plan.cache]

    result = execute(plan)

    assert [o.status for o in result.outputs] == ["written", "written"]
    assert result.cache_stores == ("slerped",)
    assert [(o.status, o.key, dict(o.metadata)) for o in plan.outputs] == before
    assert [(e.status, e.key) for e in plan.cache] == cache_before
    again = api.plan(path, cache_dir=tmp_path / "cache", hash_inputs=True)
    again.close()
    assert [o.status for o in again.outputs] == ["up-to-date", "up-to-date"]
    assert [o.key for o in again.outputs] == [key for _, key, _ in before]


def test_results_kept_in_memory_are_their_own_type(tmp_path: Path, models: Path) -> None:
    checked = api.load(recipe(tmp_path, models))
    options = PlanOptions(targets=("slerped", 1), use_cache=False)
    plan = build_plan(checked, ModelLocator([], env={}), options, hash_inputs=False)
    try:
        step, save = plan.outputs
        assert isinstance(step, MemoryOutput) and isinstance(save, MemoryOutput)
        assert (step.status, step.path, step.key, step.name) == ("memory", None, None, "slerped")
        assert save.save is checked.saves[1] and save.options.format == "ckpt"
        assert plan.pending == [step, save]
    finally:
        plan.close()
