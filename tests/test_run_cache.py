"""The content-addressed cache and up-to-date outputs, through ``mergelang.run``: what a
first run stores, what a re-run reuses, what an edit or a changed input invalidates, and
what an existing file at an output path does.

Most tests start from a copy of the folder one first run left behind (recipe, outputs and
cache), so each of them pays for its own second run only.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from run_helpers import (
    SCALE,
    TIME_EMBED,
    add_difference,
    assert_same_tensors,
    declare,
    expected_output,
    files_under,
    load,
    merged_float32,
    saved,
    sha256,
    shared_models,
    uniform,
    weighted_sum,
    write_recipe,
)

import mergelang.api as api
from mergelang.errors import RecipeError
from mergelang.run.executor import RunResult
from mergelang.testing import make_checkpoint

X_ALPHA = "{IN: 0.2, M00: 0.5, OUT: 0.8, BASE: 0.4}"


def x_weights() -> dict[str, float]:
    found = {"BASE": 0.4, "M00": 0.5}
    found |= {f"IN{i:02d}": 0.2 for i in range(12)}
    found |= {f"OUT{i:02d}": 0.8 for i in range(12)}
    return found


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MERGELANG_CACHE", str(tmp_path / "env-cache"))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_models(tmp_path_factory, ("a", "b", "c", "a32", "b32"))


def run(recipe: Path, folder: Path, **kwargs: Any) -> RunResult:
    return api.run(recipe, cache_dir=folder / "cache", **kwargs)


def recipe_text(models: Path, alpha: float = 0.5) -> str:
    """``cache x`` (a weighted sum) saved, and a step computed from it saved."""
    return (
        declare(models, "a", "b", "c")
        + f"cache x = weighted_sum(a, b, alpha={X_ALPHA})\n"
        + 'save x to "out/x.safetensors" as fp16\n'
        + f'save add_difference(x, c, a, alpha={alpha}) to "out/y.safetensors" as fp16\n'
    )


def expected_x(models: Path) -> dict[str, torch.Tensor]:
    a, b = (load(models / f"{n}.safetensors") for n in ("a", "b"))
    return merged_float32("sd1", [a, b], weighted_sum(x_weights()))


def expected_y(models: Path, alpha: float = 0.5) -> dict[str, torch.Tensor]:
    a, c = (load(models / f"{n}.safetensors") for n in ("a", "c"))
    y = merged_float32("sd1", [expected_x(models), c, a], add_difference(uniform("sd1", alpha)))
    return saved(y, {k: t.dtype for k, t in a.items()}, "fp16")


def tensor_bytes(path: Path) -> int:
    return sum(t.numel() * t.element_size() for t in load(path).values())


@dataclass(frozen=True)
class FirstRun:
    folder: Path
    result: RunResult


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory, models: Path) -> FirstRun:
    folder = tmp_path_factory.mktemp("first-run")
    recipe = write_recipe(folder, recipe_text(models))
    return FirstRun(folder, run(recipe, folder))


@pytest.fixture
def state(tmp_path: Path, first_run: FirstRun) -> Path:
    """A private copy of the folder after the first run: recipe.merge, out/, cache/."""
    folder = tmp_path / "state"
    shutil.copytree(first_run.folder, folder)
    return folder


def stat(path: Path) -> tuple[int, int, str]:
    info = path.stat()
    return info.st_mtime_ns, info.st_ino, sha256(path)


# ---- stores and hits ---------------------------------------------------------------------------


def test_the_first_run_stores_the_cache_step_exactly(first_run: FirstRun, models: Path) -> None:
    result, folder = first_run.result, first_run.folder

    assert result.cache_stores == ("x",)
    assert result.cache_hits == ()
    assert [o.status for o in result.outputs] == ["written", "written"]
    objects = files_under(folder / "cache" / "objects")
    assert len(objects) == 1
    prefix, name = objects[0].split("/")
    assert len(prefix) == 2 and name.startswith(prefix) and name.endswith(".safetensors")
    # Computed keys are stored in float32, keys passed through unchanged in their own dtype.
    stored = load(folder / "cache" / "objects" / objects[0])
    assert_same_tensors(stored, expected_x(models))
    assert stored[TIME_EMBED].dtype == torch.float32
    dtypes = {k: t.dtype for k, t in load(models / "a.safetensors").items()}
    assert_same_tensors(
        load(folder / "out" / "x.safetensors"), saved(expected_x(models), dtypes, "fp16")
    )
    assert_same_tensors(load(folder / "out" / "y.safetensors"), expected_y(models))


def test_a_deleted_output_is_remade_from_the_cache_identically(state: Path, models: Path) -> None:
    output = state / "out" / "y.safetensors"
    written = output.read_bytes()
    objects = files_under(state / "cache" / "objects")
    output.unlink()

    result = run(state / "recipe.merge", state)

    assert result.cache_hits == ("x",)
    assert result.cache_stores == ()
    assert [o.status for o in result.outputs] == ["up-to-date", "written"]
    assert output.read_bytes() == written
    # b is not read: the cached x, c and a are.
    sources = [state / "cache" / "objects" / objects[0]]
    sources += [models / "c.safetensors", models / "a.safetensors"]
    assert result.bytes_read == sum(tensor_bytes(p) for p in sources)
    assert files_under(state / "cache" / "objects") == objects


def test_a_rerun_with_every_output_present_writes_nothing(state: Path) -> None:
    outputs = [state / "out" / "x.safetensors", state / "out" / "y.safetensors"]
    before = [stat(p) for p in outputs]
    listing = files_under(state)

    again = run(state / "recipe.merge", state)

    assert [o.status for o in again.outputs] == ["up-to-date", "up-to-date"]
    assert again.bytes_written == 0
    assert again.cache_stores == () and again.cache_hits == ()
    assert [stat(p) for p in outputs] == before
    assert files_under(state) == listing


def test_editing_one_step_reruns_only_what_depends_on_it(state: Path, models: Path) -> None:
    x_out, y_out = state / "out" / "x.safetensors", state / "out" / "y.safetensors"
    x_before = stat(x_out)
    recipe = write_recipe(state, recipe_text(models, alpha=0.7))
    y_out.unlink()

    result = run(recipe, state)

    assert [o.status for o in result.outputs] == ["up-to-date", "written"]
    assert result.cache_hits == ("x",)
    assert result.cache_stores == ()
    assert stat(x_out) == x_before
    assert_same_tensors(load(y_out), expected_y(models, 0.7))


def test_force_replaces_the_edited_output_and_leaves_up_to_date_ones_alone(
    state: Path, models: Path
) -> None:
    x_out = state / "out" / "x.safetensors"
    x_before = stat(x_out)
    recipe = write_recipe(state, recipe_text(models, alpha=0.7))

    result = run(recipe, state, force=True)

    assert_same_tensors(load(state / "out" / "y.safetensors"), expected_y(models, 0.7))
    assert [o.status for o in result.outputs] == ["up-to-date", "written"]
    assert stat(x_out) == x_before


def test_editing_one_step_remakes_its_own_outputs_without_force(state: Path, models: Path) -> None:
    x_out, y_out = state / "out" / "x.safetensors", state / "out" / "y.safetensors"
    x_before = stat(x_out)
    recipe = write_recipe(state, recipe_text(models, alpha=0.7))

    result = run(recipe, state)

    assert [o.status for o in result.outputs] == ["up-to-date", "written"]
    # y is an unnamed save of a step computed from x: the saved expression changed.
    assert result.outputs[0].changes == ()
    assert result.outputs[1].changes == ("the saved expression changed",)
    assert stat(x_out) == x_before
    assert_same_tensors(load(y_out), expected_y(models, 0.7))


def test_the_edited_step_is_named_not_the_ones_after_it(tmp_path: Path, models: Path) -> None:
    def text(alpha: float) -> str:
        return (
            declare(models, "a", "b", "c")
            + f"x = weighted_sum(a, b, alpha={alpha})\n"
            + "y = add_difference(x, c, a, alpha=0.5)\n"
            + 'save y to "out/y.safetensors"\n'
        )

    recipe = write_recipe(tmp_path, text(0.3))
    run(recipe, tmp_path)
    write_recipe(tmp_path, text(0.6))

    result = run(recipe, tmp_path)

    assert [(o.status, o.changes) for o in result.outputs] == [("written", ("step 'x' changed",))]


def test_rebuild_remakes_an_up_to_date_output(state: Path) -> None:
    y_out = state / "out" / "y.safetensors"
    before = y_out.read_bytes()

    result = run(state / "recipe.merge", state, rebuild=True)

    assert [o.status for o in result.outputs] == ["written", "written"]
    assert [o.changes for o in result.outputs] == [("remade on request (--rebuild)",)] * 2
    assert y_out.read_bytes() == before


def test_a_copied_project_folder_still_knows_its_own_outputs(state: Path, models: Path) -> None:
    # ``state`` is a copy of the first run's folder: the recorded recipe path is relative.
    import json

    from mergelang.plan.cache import existing_metadata

    metadata = existing_metadata(state / "out" / "y.safetensors")
    assert metadata is not None
    assert json.loads(metadata["mergelang.save"]) == {
        "recipe": "../recipe.merge",
        "output": "y.safetensors",
    }
    assert json.loads(metadata["mergelang.steps"]).keys() == {"", "x"}


def test_a_sweep_refused_at_one_save_is_told_once(tmp_path: Path, models: Path) -> None:
    recipe = write_recipe(
        tmp_path,
        declare(models, "a", "b")
        + "for i in 1..25:\n"
        + '    save weighted_sum(a, b, alpha=i / 25) to "out/l{i}.safetensors"\n',
        "sweep.merge",
    )
    (tmp_path / "out").mkdir()
    for i in range(1, 26):
        (tmp_path / "out" / f"l{i}.safetensors").write_bytes(b"not mine")

    with pytest.raises(RecipeError) as caught:
        run(recipe, tmp_path)

    (diag,) = caught.value.diagnostics
    assert diag.code == "exists"
    assert diag.message == (
        "25 outputs of this save: the output file already exists "
        f"(the first {tmp_path / 'out' / 'l1.safetensors'}, "
        f"the last {tmp_path / 'out' / 'l25.safetensors'})"
    )
    assert diag.hint == "pass --force to replace it"


# ---- invalidation ------------------------------------------------------------------------------


def test_changing_an_input_file_invalidates_the_cache_and_the_output(
    state: Path, models: Path
) -> None:
    inputs = state / "models"
    inputs.mkdir()
    for name in ("a", "b", "c"):
        shutil.copy2(models / f"{name}.safetensors", inputs)
    recipe = write_recipe(state, recipe_text(inputs))
    # The same content under another path: still up to date.
    same = run(recipe, state)
    assert [o.status for o in same.outputs] == ["up-to-date", "up-to-date"]
    output = state / "out" / "y.safetensors"
    old = sha256(output)

    make_checkpoint(inputs / "b.safetensors", "sd1", scale=SCALE, seed=99)

    # The files are this recipe's own outputs: remade without --force, saying why.
    result = run(recipe, state)

    assert sha256(output) != old
    assert result.cache_hits == ()
    assert result.cache_stores == ("x",)
    assert [o.status for o in result.outputs] == ["written", "written"]
    assert [o.changes for o in result.outputs] == [("input 'b' changed",)] * 2
    assert_same_tensors(load(output), expected_y(inputs))
    assert len(files_under(state / "cache" / "objects")) == 2


SAVE_LINE = 'save weighted_sum(a, b, alpha=0.2) to "out/y.safetensors"'


def refused_at_the_save(state: Path, models: Path) -> Path:
    """Run a recipe whose only save targets out/y.safetensors; check it is refused there."""
    output = state / "out" / "y.safetensors"
    before = sha256(output)
    recipe = write_recipe(state, declare(models, "a", "b") + "\n" + SAVE_LINE + "\n", "new.merge")

    with pytest.raises(RecipeError) as caught:
        run(recipe, state)

    (diag,) = caught.value.diagnostics
    assert diag.code == "exists"
    assert diag.path == str(recipe)
    assert diag.span is not None and (diag.span.line, diag.span.column) == (4, 1)
    assert diag.source_line == SAVE_LINE
    assert diag.hint is not None and "force" in diag.hint
    assert sha256(output) == before
    return recipe


def test_an_output_made_by_another_recipe_is_refused(state: Path, models: Path) -> None:
    refused_at_the_save(state, models)


def test_a_foreign_file_at_an_output_path_is_refused_unless_forced(
    state: Path, models: Path
) -> None:
    output = state / "out" / "y.safetensors"
    output.write_bytes(b"not a model")
    recipe = refused_at_the_save(state, models)

    result = run(recipe, state, force=True)

    assert [o.status for o in result.outputs] == ["written"]
    a, b = load(models / "a.safetensors"), load(models / "b.safetensors")
    expected = expected_output("sd1", [a, b], weighted_sum(uniform("sd1", 0.2)), None)
    assert_same_tensors(load(output), expected)


def test_dry_run_writes_nothing(tmp_path: Path, state: Path, models: Path) -> None:
    fresh = tmp_path / "fresh"
    recipe = write_recipe(fresh, recipe_text(models))

    result = run(recipe, fresh, dry_run=True)

    assert [o.status for o in result.outputs] == ["dry-run", "dry-run"]
    assert result.outputs[1].path == fresh / "out" / "y.safetensors"
    assert result.bytes_written == 0
    assert result.cache_stores == () and result.cache_hits == ()
    assert not (fresh / "out").exists()
    assert not (fresh / "cache" / "objects").exists()

    (state / "out" / "y.safetensors").unlink()
    listing = files_under(state)

    again = run(state / "recipe.merge", state, dry_run=True)

    assert [o.status for o in again.outputs] == ["up-to-date", "dry-run"]
    assert again.cache_hits == ("x",)
    assert files_under(state) == listing


# ---- the block convention is part of what a step computes --------------------------------------


def convention_recipe(folder: Path, models: Path, convention: str) -> Path:
    return write_recipe(
        folder,
        f"convention {convention}\n"
        + declare(models, "a32", "b32")
        + "cache x = weighted_sum(a32, b32, alpha={IN00: 1, default: 0})\n"
        + 'save x to "out/x.safetensors"\n',
    )


@pytest.fixture(scope="module")
def mbw_run(tmp_path_factory: pytest.TempPathFactory, models: Path) -> Path:
    folder = tmp_path_factory.mktemp("mbw-run")
    run(convention_recipe(folder, models, "mbw"), folder)
    return folder


@pytest.fixture
def mbw_state(tmp_path: Path, mbw_run: Path) -> Path:
    folder = tmp_path / "mbw"
    shutil.copytree(mbw_run, folder)
    return folder


def test_changing_the_convention_makes_the_existing_output_stale(
    mbw_state: Path, models: Path
) -> None:
    result = run(convention_recipe(mbw_state, models, "supermerger_2023"), mbw_state)

    assert [o.status for o in result.outputs] == ["written"]
    assert result.outputs[0].changes == ("step 'x' changed",)


def test_a_step_cached_under_one_convention_is_not_reused_under_another(
    mbw_state: Path, models: Path
) -> None:
    output = mbw_state / "out" / "x.safetensors"
    output.unlink()

    result = run(convention_recipe(mbw_state, models, "supermerger_2023"), mbw_state)

    a, b = load(models / "a32.safetensors"), load(models / "b32.safetensors")
    weights = {blk: 1.0 if blk == "IN00" else 0.0 for blk in uniform("sd1", 0)}
    merged = merged_float32("sd1", [a, b], weighted_sum(weights), convention="supermerger_2023")
    expected = saved(merged, {k: t.dtype for k, t in a.items()}, None)
    # supermerger_2023 merges SD1 time_embed with OUT11 (A's values here); mbw with IN00 (B's).
    assert torch.equal(expected[TIME_EMBED], a[TIME_EMBED])
    assert_same_tensors(load(output), expected)
    assert result.cache_hits == ()
