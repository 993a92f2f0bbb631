"""``mergelang.evaluate``: one result of a recipe computed in memory, from files or from
tensors handed over by the caller, compared bit for bit with the merge formula."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from run_helpers import (
    assert_same_tensors,
    declare,
    expected_output,
    files_under,
    load,
    merged_float32,
    recipe_list,
    saved,
    shared_models,
    uniform,
    vector,
    weighted_sum,
    write_recipe,
)

import mergelang.api as api
from mergelang.errors import UsageError

V25 = [0.1 * (i % 11) for i in range(25)]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MERGELANG_CACHE", str(tmp_path / "env-cache"))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_models(tmp_path_factory, ("a", "b", "c", "e1", "e2"))


def state(models: Path, name: str) -> dict[str, torch.Tensor]:
    return load(models / f"{name}.safetensors")


def test_evaluate_returns_the_tensors_run_saves(tmp_path: Path, models: Path) -> None:
    recipe = write_recipe(
        tmp_path,
        declare(models, "a", "b")
        + f"mix = weighted_sum(a, b, alpha={recipe_list(V25)}, base=0.3)\n"
        + 'save mix to "out/mix.safetensors" as bf16\n',
    )

    found = api.evaluate(recipe)

    assert files_under(tmp_path) == ["recipe.merge"]
    api.run(recipe, cache_dir=tmp_path / "cache")
    written = load(tmp_path / "out" / "mix.safetensors")
    assert_same_tensors(found, written)
    expected = expected_output(
        "sd1",
        [state(models, "a"), state(models, "b")],
        weighted_sum(vector("sd1", V25, 0.3)),
        "bf16",
    )
    assert_same_tensors(found, expected)


def test_evaluate_follows_the_save_options_of_the_recipe(tmp_path: Path, models: Path) -> None:
    recipe = write_recipe(
        tmp_path,
        declare(models, "e1", "e2")
        + "mix = weighted_sum(e1, e2, alpha=0.5)\n"
        + 'save mix to "out/mix.safetensors" as fp16 with schedule=drop\n',
    )

    found = api.evaluate(recipe)

    e1, e2 = state(models, "e1"), state(models, "e2")
    assert any(k.startswith("model_ema.") for k in e1) and "betas" in e1
    expected = expected_output(
        "sd1", [e1, e2], weighted_sum(uniform("sd1", 0.5)), "fp16", schedule="drop"
    )
    assert not any(k.startswith("model_ema.") or k == "betas" for k in expected)
    assert_same_tensors(found, expected)


def test_inputs_in_memory_need_no_file(models: Path) -> None:
    a = state(models, "a")
    untouched = {k: t.clone() for k, t in a.items()}
    text = (
        'model a = "no-such-file.safetensors"\n'
        + declare(models, "b")
        + "mix = weighted_sum(a, b, alpha={IN: 0.25, M00: 0.5, OUT: 0.75}, base=0.1)\n"
    )

    found = api.evaluate(text, inputs={"a": a}, dtype="fp32")

    weights = {"BASE": 0.1, "M00": 0.5}
    weights |= {f"IN{i:02d}": 0.25 for i in range(12)} | {f"OUT{i:02d}": 0.75 for i in range(12)}
    expected = expected_output(
        "sd1", [a, state(models, "b")], weighted_sum(weights), "fp32", ema="keep"
    )
    assert_same_tensors(found, expected)
    assert_same_tensors(a, untouched)


def test_target_picks_a_step_or_an_input(models: Path) -> None:
    text = (
        declare(models, "a", "b", "c")
        + "ab = weighted_sum(a, b, alpha=0.25)\n"
        + "abc = add_difference(ab, c, a, alpha=0.5)\n"
        + 'save abc to "abc.safetensors" as fp16\n'
    )
    a, b = state(models, "a"), state(models, "b")
    merged = merged_float32("sd1", [a, b], weighted_sum(uniform("sd1", 0.25)))
    dtypes = {k: t.dtype for k, t in a.items()}

    natural = api.evaluate(text, target="ab")
    exact = api.evaluate(text, target="ab", dtype="fp32")
    model_a = api.evaluate(text, target="a")

    assert_same_tensors(natural, saved(merged, dtypes, None))
    assert_same_tensors(exact, saved(merged, dtypes, "fp32"))
    assert_same_tensors(model_a, a)


def test_an_unknown_target_is_a_usage_error(models: Path) -> None:
    text = declare(models, "a", "b") + "ab = weighted_sum(a, b, alpha=0.25)\n"

    with pytest.raises(UsageError) as caught:
        api.evaluate(text, target="abc")

    (diag,) = caught.value.diagnostics
    assert "'abc'" in diag.message
    assert diag.hint is not None and "ab" in diag.hint
    assert caught.value.exit_code == 2


def test_a_loop_over_alpha_values_gives_one_exact_result_each(models: Path) -> None:
    a, b = state(models, "a"), state(models, "b")
    text = (
        'model a = "a.safetensors"\nmodel b = "b.safetensors"\n'
        "mix = weighted_sum(a, b, alpha=$ALPHA)\n"
    )

    results = {
        alpha: api.evaluate(text, set={"ALPHA": alpha}, inputs={"a": a, "b": b})
        for alpha in (0.2, 0.5, 0.8)
    }

    for alpha, found in results.items():
        expected = expected_output(
            "sd1", [a, b], weighted_sum(uniform("sd1", alpha)), None, ema="keep"
        )
        assert_same_tensors(found, expected)
    key = "model.diffusion_model.out.2.weight"
    values = [found[key] for found in results.values()]
    assert not torch.equal(values[0], values[1]) and not torch.equal(values[1], values[2])
