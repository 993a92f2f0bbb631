"""Block names a model lacks: a weight map that names a block of another scheme is reported at
the entry once the inputs' architecture is known (a warning for SD1's extra names on SDXL, an
error for any other name), by ``check``, ``plan`` and ``run`` alike."""

from __future__ import annotations

from pathlib import Path

import pytest

import mergelang
from mergelang.block_weights import BlockWeights, WrittenBlock, name_runs
from mergelang.cli import main
from mergelang.errors import RecipeError
from mergelang.testing import make_checkpoint

SCALE = 1 / 160
SDXL_HINT = "SDXL models have the blocks IN00..IN08, M00, OUT00..OUT08 (groups IN, M, OUT)"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("names")
    for name, arch, seed in (
        ("x1", "sdxl", 1),
        ("x2", "sdxl", 2),
        ("m1", "sd3-medium", 3),
        ("m2", "sd3-medium", 4),
        ("f1", "flux-dev", 5),
        ("f2", "flux-dev", 6),
    ):
        make_checkpoint(folder / f"{name}.safetensors", arch, scale=SCALE, seed=seed)
    return folder


def _recipe(folder: Path, name: str, pair: str, body: str) -> Path:
    path = folder / name
    path.write_text(f'model a = "{pair}1.safetensors"\nmodel b = "{pair}2.safetensors"\n' + body)
    return path


def test_an_sd1_block_on_sdxl_is_a_warning_at_the_entry(models: Path, tmp_path: Path) -> None:
    recipe = _recipe(
        tmp_path,
        "x.merge",
        "x",
        "w = {IN10: 0.3, default: 0.5}\n"
        'save weighted_sum(a, b, alpha=w) to "o.safetensors"\n'
        'save weighted_sum(a, b, alpha={IN00..IN11: 0.2, default: 0}) to "p.safetensors"\n',
    )
    plan = mergelang.plan(recipe, models_dir=[models], cache_dir=tmp_path / "cache")
    plan.close()
    found = [(d.line, d.column, d.severity, d.code, d.message, d.hint) for d in plan.warnings]
    assert found == [
        (
            3,
            6,
            "warning",
            "block-not-in-model",
            "IN10 is not a block of sdxl models; the weight there sets nothing",
            SDXL_HINT,
        ),
        (
            5,
            38,
            "warning",
            "block-not-in-model",
            "IN11 is not a block of sdxl models; the weight there sets nothing",
            SDXL_HINT,
        ),
    ]
    result = mergelang.run(recipe, models_dir=[models], cache_dir=tmp_path / "cache")
    assert result.warnings == plan.warnings
    assert (tmp_path / "o.safetensors").is_file()


def test_cli_check_prints_the_warning_located(
    models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = _recipe(
        tmp_path,
        "x.merge",
        "x",
        'save weighted_sum(a, b, alpha={IN10: 0.3, default: 0.5}) to "o"\n',
    )
    code = main(["check", "--models-dir", str(models), str(recipe)])
    captured = capsys.readouterr()
    err = " ".join(captured.err.split())
    assert code == 0
    assert f"{recipe}:3:32: warning: IN10 is not a block of sdxl models" in err
    assert "hint: " + SDXL_HINT in err


def test_a_loop_over_sd1_blocks_on_sdxl_is_one_warning(models: Path, tmp_path: Path) -> None:
    recipe = _recipe(
        tmp_path,
        "loop.merge",
        "x",
        "for blk in IN00..OUT11:\n"
        '    save weighted_sum(a, b, alpha={blk: 1, default: 0}) to "l-{blk}.safetensors"\n',
    )
    plan = mergelang.plan(recipe, models_dir=[models], cache_dir=tmp_path / "cache")
    plan.close()
    ((line, column, message),) = [(d.line, d.column, d.message) for d in plan.warnings]
    assert (line, column) == (4, 36)
    assert message == (
        "IN09..IN11, OUT09..OUT11 are not blocks of sdxl models; the weight there sets nothing"
    )


@pytest.mark.parametrize(
    ("pair", "text", "column", "message", "hint"),
    [
        (
            "m",
            "{J24: 0.3, default: 0.5}",
            32,
            "J24 is not a block of sd3-medium models",
            "SD3/SD3.5 Medium models have the blocks IN, J00..J23, OUT, CLIP_L, CLIP_G, T5, "
            "VAE (group J)",
        ),
        (
            "m",
            "{J00..J37: 1, default: 0}",
            37,
            "J37 is not a block of sd3-medium models",
            None,
        ),
        (
            "f",
            "{J05: 1, default: 0.5}",
            32,
            "J05 is not a block of flux-dev models",
            "Flux.1 models have the blocks CLIP, T5, IN, D00..D18, S00..S37, OUT (groups D, S)",
        ),
        ("x", "{D: 1, default: 0}", 32, "D is not a block or group of sdxl models", SDXL_HINT),
        (
            "x",
            '{"attn2" in J03: 1, default: 0}',
            43,
            "J03 is not a block of sdxl models",
            SDXL_HINT,
        ),
    ],
)
def test_a_name_of_another_scheme_is_an_error_and_nothing_is_written(
    models: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    pair: str,
    text: str,
    column: int,
    message: str,
    hint: str | None,
) -> None:
    recipe = _recipe(
        tmp_path, "r.merge", pair, f'save weighted_sum(a, b, alpha={text}) to "o.safetensors"\n'
    )
    with pytest.raises(RecipeError) as info:
        mergelang.run(recipe, models_dir=[models], cache_dir=tmp_path / "cache")
    errors = [d for d in info.value.diagnostics if d.severity == "error"]
    assert [(d.line, d.column, d.code, d.message) for d in errors] == [
        (3, column, "block-not-in-model", message)
    ]
    if hint is not None:
        assert errors[0].hint == hint
    code = main(
        ["run", "--models-dir", str(models), "--cache-dir", str(tmp_path / "c"), str(recipe)]
    )
    assert code == 1
    assert f"{recipe}:3:{column}: error: {message}" in " ".join(capsys.readouterr().err.split())
    assert not (tmp_path / "o.safetensors").exists()


def test_model_arithmetic_weights_are_checked_too(models: Path, tmp_path: Path) -> None:
    recipe = _recipe(
        tmp_path, "r.merge", "f", 'save a * {S38: 1, default: 0.5} + b * 0.5 to "o.safetensors"\n'
    )
    # S38 is no block of any scheme: the recipe check itself refuses it.
    with pytest.raises(RecipeError) as info:
        mergelang.check(mergelang.parse(recipe.read_text()))
    assert [d.code for d in info.value.diagnostics] == ["unknown-block"]
    recipe.write_text(recipe.read_text().replace("S38", "OUT11"))
    with pytest.raises(RecipeError) as info:
        mergelang.plan(recipe, models_dir=[models], cache_dir=tmp_path / "cache")
    assert [(d.line, d.column, d.message) for d in info.value.diagnostics] == [
        (3, 11, "OUT11 is not a block of flux-dev models")
    ]


def test_written_names_survive_arithmetic_and_take_no_part_in_equality() -> None:
    first = BlockWeights.from_map([("IN10", 0.5)], written=[WrittenBlock("IN10")])
    second = BlockWeights.from_map([("OUT11", 0.5)], written=[WrittenBlock("OUT11")])
    combined = -(first * 2 + second).with_base(0.1)
    assert [w.name for w in combined.written] == ["IN10", "OUT11"]
    assert BlockWeights.from_map([("IN10", 0.5)]) == first


def test_name_runs_follow_the_numbers_only() -> None:
    assert name_runs(["IN", "J00", "J01", "J02", "OUT", "CLIP_L"]) == "IN, J00..J02, OUT, CLIP_L"
    assert name_runs(["IN09", "IN10", "IN11", "OUT09"]) == "IN09..IN11, OUT09"
    assert name_runs(["D1", "D02"]) == "D1, D02"
