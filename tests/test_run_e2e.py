"""``mergelang.run`` end to end: recipes on synthetic SD1, SD2 and SDXL checkpoints, every
output key compared bit for bit with the merge formula computed independently in the test
(see ``run_helpers``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from run_helpers import (
    FIXTURES,
    GRAD_A,
    INPUT_CONV,
    POSITION_IDS,
    SCALE,
    TIME_EMBED,
    VAE_PREFIX,
    add_difference,
    assert_same_tensors,
    blocks_of,
    declare,
    expected_output,
    files_under,
    linear,
    load,
    load_ckpt,
    merged_float32,
    recipe_list,
    save_tensors,
    saved,
    shared_models,
    uniform,
    vector,
    weighted_sum,
    write_recipe,
    write_vae,
)

import mergelang.api as api
from mergelang.arch import get_architecture
from mergelang.errors import RecipeError
from mergelang.plan.graph import LoadNode
from mergelang.run.executor import RunResult
from mergelang.testing import make_checkpoint

V25 = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 0.35, 0.5]
V25 += [0.65, 1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05]
V19 = [0.0, 0.15, 0.3, 0.45, 0.6, 0.75, 0.9, 1.0, 0.55, 0.5]
V19 += [0.45, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MERGELANG_CACHE", str(tmp_path / "env-cache"))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_models(tmp_path_factory, FIXTURES)


def model(models: Path, name: str) -> dict[str, torch.Tensor]:
    return load(models / f"{name}.safetensors")


def run(recipe: Path, tmp_path: Path, **kwargs: Any) -> RunResult:
    return api.run(recipe, cache_dir=tmp_path / "cache", **kwargs)


# ---- native recipes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "values", "save_as"),
    [
        ("a", "b", V25, "fp16"),
        ("sd2a", "sd2b", V25, "bf16"),
        ("xla", "xlb", V19, "fp32"),
    ],
    ids=["sd1-fp16", "sd2-bf16", "sdxl-fp32"],
)
def test_weighted_sum_with_a_block_vector_and_base(
    tmp_path: Path, models: Path, a: str, b: str, values: list[float], save_as: str
) -> None:
    recipe = write_recipe(
        tmp_path,
        declare(models, a, b)
        + f"mix = weighted_sum({a}, {b}, alpha={recipe_list(values)}, base=0.3)\n"
        + f'save mix to "out/mix.safetensors" as {save_as}\n',
    )
    result = run(recipe, tmp_path)

    arch = "sdxl" if a.startswith("xl") else ("sd2" if a.startswith("sd2") else "sd1")
    (output,) = result.outputs
    assert output.status == "written"
    assert output.path == tmp_path / "out" / "mix.safetensors"
    first, second = model(models, a), model(models, b)
    if arch == "sdxl":  # xla leaves out the optional text-encoder keys: copied from xlb
        assert len(set(second) - set(first)) == 35
    expected = expected_output(
        arch, [first, second], weighted_sum(vector(arch, values, 0.3)), save_as
    )
    assert output.keys == len(expected)
    assert_same_tensors(load(tmp_path / "out" / "mix.safetensors"), expected)


def test_add_difference_of_three_models_with_a_block_map(tmp_path: Path, models: Path) -> None:
    recipe = write_recipe(
        tmp_path,
        declare(models, "a", "b", "c")
        + "d = add_difference(a, b, c, alpha={IN: 0.5, IN00..IN05: 0.8, M00: 1, OUT: 0.25, "
        "BASE: 0.1})\n"
        'save d to "d.safetensors"\n',
    )
    run(recipe, tmp_path)

    alpha = {"BASE": 0.1, "M00": 1.0}
    alpha |= {f"IN{i:02d}": 0.8 if i <= 5 else 0.5 for i in range(12)}
    alpha |= {f"OUT{i:02d}": 0.25 for i in range(12)}
    expected = expected_output(
        "sd1", [model(models, n) for n in ("a", "b", "c")], add_difference(alpha), None
    )
    assert_same_tensors(load(tmp_path / "d.safetensors"), expected)


def test_model_arithmetic_with_block_maps_sums_the_terms_in_order(
    tmp_path: Path, models: Path
) -> None:
    recipe = write_recipe(
        tmp_path,
        declare(models, "a", "b")
        + "each = a * {IN00: 0.75, OUT: 0.5, default: 1} + b * {IN00: 0.25, OUT: 0.5, "
        "default: 0}\n"
        "half = a + (b - a) * 0.5\n"
        'save each to "out/each.safetensors" as bf16\n'
        'save half to "out/half.safetensors" as fp32\n',
    )
    run(recipe, tmp_path)

    blocks = blocks_of("sd1")
    wa = {b: 0.75 if b == "IN00" else (0.5 if b.startswith("OUT") else 1.0) for b in blocks}
    wb = {b: 0.25 if b == "IN00" else (0.5 if b.startswith("OUT") else 0.0) for b in blocks}
    a, b = model(models, "a"), model(models, "b")
    each = expected_output(
        "sd1", [a, b], linear([{"BASE": 1.0, **wa}, {"BASE": 0.0, **wb}]), "bf16"
    )
    assert_same_tensors(load(tmp_path / "out" / "each.safetensors"), each)
    # a + (b - a) * 0.5 is the sum a * 1 + b * 0.5 + a * -0.5, in that order.
    terms = [uniform("sd1", 1.0), uniform("sd1", 0.5), uniform("sd1", -0.5)]
    half = expected_output("sd1", [a, b, a], linear(terms), "fp32")
    assert_same_tensors(load(tmp_path / "out" / "half.safetensors"), half)


def test_a_chain_of_named_steps_is_fused_into_the_one_saved_file(
    tmp_path: Path, models: Path
) -> None:
    recipe = write_recipe(
        tmp_path,
        declare(models, "a", "b", "c") + "ab = weighted_sum(a, b, alpha=0.25)\n"
        "abc = add_difference(ab, c, a, alpha={IN: 0.5, M00: 0.5, OUT: 1, BASE: 0})\n"
        'save abc to "out/abc.safetensors" as fp16\n',
    )
    result = run(recipe, tmp_path)

    assert result.cache_stores == ()
    assert files_under(tmp_path / "out") == ["abc.safetensors"]
    assert files_under(tmp_path) == ["cache/hashes.json", "out/abc.safetensors", "recipe.merge"]
    a, b, c = (model(models, n) for n in ("a", "b", "c"))
    ab = merged_float32("sd1", [a, b], weighted_sum(uniform("sd1", 0.25)))
    alpha = {blk: 1.0 if blk.startswith("OUT") else 0.5 for blk in blocks_of("sd1")}
    abc = merged_float32("sd1", [ab, c, a], add_difference({"BASE": 0.0, **alpha}))
    expected = saved(abc, {k: t.dtype for k, t in a.items()}, "fp16")
    assert_same_tensors(load(tmp_path / "out" / "abc.safetensors"), expected)


def test_without_as_each_key_keeps_model_a_dtype(tmp_path: Path, models: Path) -> None:
    recipe = write_recipe(
        tmp_path,
        declare(models, "a32", "b")
        + 'save weighted_sum(a32, b, alpha=0.4) to "out/a32-first.safetensors"\n'
        'save weighted_sum(b, a32, alpha=0.4) to "out/b-first.safetensors"\n',
    )
    run(recipe, tmp_path)

    a32, b = model(models, "a32"), model(models, "b")
    assert a32[TIME_EMBED].dtype == torch.float32 and b[TIME_EMBED].dtype == torch.float16
    first = load(tmp_path / "out" / "a32-first.safetensors")
    second = load(tmp_path / "out" / "b-first.safetensors")
    assert first[TIME_EMBED].dtype == torch.float32
    assert second[TIME_EMBED].dtype == torch.float16
    assert first[POSITION_IDS].dtype == torch.int64
    alpha = uniform("sd1", 0.4)
    assert_same_tensors(first, expected_output("sd1", [a32, b], weighted_sum(alpha), None))
    assert_same_tensors(second, expected_output("sd1", [b, a32], weighted_sum(alpha), None))


# ---- Merge Board -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def board_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("board")
    for name, seed in (("sd15-base", 21), ("sd15-anime", 22), ("sd15-photo", 23)):
        make_checkpoint(root / "sub" / f"{name}.safetensors", "sd1", scale=SCALE, seed=seed)
    return root


def test_merge_board_recipe_with_literal_names_chaining_and_add_difference(
    tmp_path: Path, board_models: Path
) -> None:
    recipe = write_recipe(
        tmp_path / "recipes",
        "# Merge Board lines, models found by name\n"
        "a15 = sd15-base + sd15-anime, 0.5\n"
        "photo = sd15-base + sd15-photo, 0.3, fp16, safetensors\n"
        "mix15 = __O1__ + sd15-photo + sd15-base, 1, fp16, safetensors\n"
        "Merge1 = sd15-base + sd15-anime, GRAD_A, 0.5, safetensors\n",
    )
    out = tmp_path / "out"
    result = run(recipe, tmp_path, models_dir=[board_models], out_dir=out)

    assert [o.status for o in result.outputs] == ["written"] * 4
    assert files_under(out) == [
        "Merge1.safetensors",
        "a15.ckpt",
        "mix15.safetensors",
        "photo.safetensors",
    ]
    base, anime, photo = (
        load(board_models / "sub" / f"{n}.safetensors")
        for n in ("sd15-base", "sd15-anime", "sd15-photo")
    )
    dtypes = {k: t.dtype for k, t in base.items()}
    # No precision flag: the inputs' precision (as Merge Board), and no safetensors flag: .ckpt.
    a15 = merged_float32("sd1", [base, anime], weighted_sum(uniform("sd1", 0.5)))
    assert_same_tensors(load_ckpt(out / "a15.ckpt"), saved(a15, dtypes, None))
    expected_photo = expected_output(
        "sd1", [base, photo], weighted_sum(uniform("sd1", 0.3)), "fp16"
    )
    assert_same_tensors(load(out / "photo.safetensors"), expected_photo)
    # __O1__ is a15: A + 1 * (B - C) with the fp32 result of the first line as A.
    mix = merged_float32("sd1", [a15, photo, base], add_difference(uniform("sd1", 1.0)))
    assert_same_tensors(load(out / "mix15.safetensors"), saved(mix, dtypes, "fp16"))
    grad_a = vector("sd1", [float(v) for v in GRAD_A.split(",")], 0.5)
    expected_merge1 = expected_output("sd1", [base, anime], weighted_sum(grad_a), None)
    assert_same_tensors(load(out / "Merge1.safetensors"), expected_merge1)


# ---- sharing -----------------------------------------------------------------------------------


def test_layer_sweep_reads_its_input_once_and_makes_25_exact_outputs(
    tmp_path: Path, models: Path
) -> None:
    recipe = write_recipe(
        tmp_path,
        declare(models, "a") + "for blk in IN00..OUT11:\n"
        '    save a * {blk: 0.75, default: 1} to "out/{blk}.safetensors" as fp16\n',
    )
    plan = api.plan(recipe, cache_dir=tmp_path / "cache")
    loads = [n for n in plan.needed() if isinstance(n, LoadNode)]
    assert len(loads) == 1
    assert len(plan.outputs) == 25

    result = run(recipe, tmp_path)

    a = model(models, "a")
    assert result.bytes_read == sum(t.numel() * t.element_size() for t in a.values())
    blocks = blocks_of("sd1")
    assert files_under(tmp_path / "out") == sorted(f"{blk}.safetensors" for blk in blocks)
    # a * 1 is a itself (fp16 -> fp32 -> fp16 is exact): only the swept block's keys change.
    arch = get_architecture("sd1")
    keys_of: dict[str | None, list[str]] = {}
    for key in a:
        keys_of.setdefault(arch.block_of(key), []).append(key)
    first = expected_output("sd1", [a], linear([uniform("sd1", 1.0) | {"IN00": 0.75}]), "fp16")
    for blk in blocks:
        expected = dict(a)
        for key in keys_of[blk]:
            expected[key] = (a[key].to(torch.float32) * 0.75).to(torch.float16)
        assert keys_of[blk], blk
        if blk == "IN00":
            assert_same_tensors(expected, first)
        assert_same_tensors(load(tmp_path / "out" / f"{blk}.safetensors"), expected)


# ---- save options ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def option_models(models: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """e1 with float ``position_ids`` (as some merges leave them) and a VAE-only file."""
    root = tmp_path_factory.mktemp("options")
    e1 = load(models / "e1.safetensors")
    broken = torch.arange(77, dtype=torch.float32)[None].clone()
    broken[0, -1] = 75.999
    e1[POSITION_IDS] = broken
    save_tensors(root / "e1f.safetensors", e1)
    write_vae(root / "vae.safetensors", models / "c.safetensors", scale=1.5)
    return root


def test_ema_schedule_vae_and_position_ids_options(
    tmp_path: Path, models: Path, option_models: Path
) -> None:
    vae_path = option_models / "vae.safetensors"
    recipe = write_recipe(
        tmp_path,
        f'model a = "{option_models / "e1f.safetensors"}"\n'
        + declare(models, "e2")
        + f'model vae = "{vae_path}"\n'
        + "mix = weighted_sum(a, e2, alpha=0.5)\n"
        'save mix to "out/default.safetensors"\n'
        f'save mix to "out/keep.safetensors" with ema=keep, schedule=drop, vae="{vae_path}"\n'
        'save mix to "out/reset.safetensors" as fp16 with vae=vae, position_ids=reset\n',
    )
    run(recipe, tmp_path)

    a, e2, vae = load(option_models / "e1f.safetensors"), model(models, "e2"), load(vae_path)
    assert any(k.startswith("model_ema.") for k in a) and "betas" in a
    merged = merged_float32("sd1", [a, e2], weighted_sum(uniform("sd1", 0.5)))
    dtypes = {k: t.dtype for k, t in a.items()}
    vae_keys = [k for k in merged if k.startswith(VAE_PREFIX)]
    assert vae_keys and set(vae) == {k[len(VAE_PREFIX) :] for k in vae_keys}

    default = load(tmp_path / "out" / "default.safetensors")
    assert not any(k.startswith("model_ema.") for k in default)
    assert torch.equal(default["betas"], a["betas"])
    assert default[POSITION_IDS].dtype == torch.float32
    assert_same_tensors(default, saved(merged, dtypes, None))

    keep = load(tmp_path / "out" / "keep.safetensors")
    assert "model_ema.num_updates" in keep and keep["model_ema.num_updates"].dtype == torch.int32
    assert "betas" not in keep
    expected = saved(merged, dtypes, None, ema="keep", schedule="drop")
    for key in vae_keys:  # the VAE file's float32 values in the model's own dtype (fp16)
        expected[key] = vae[key[len(VAE_PREFIX) :]].to(dtypes[key])
    assert_same_tensors(keep, expected)

    reset = load(tmp_path / "out" / "reset.safetensors")
    expected = saved(merged, dtypes, "fp16")
    for key in vae_keys:
        expected[key] = vae[key[len(VAE_PREFIX) :]].to(torch.float16)
    expected[POSITION_IDS] = torch.arange(77, dtype=torch.int64)[None]
    assert_same_tensors(reset, expected)


# ---- inpainting ------------------------------------------------------------------------------


def test_inpainting_model_merged_with_a_normal_one_merges_the_first_four_channels(
    tmp_path: Path, models: Path
) -> None:
    recipe = write_recipe(
        tmp_path,
        declare(models, "inpaint", "a", "b")
        + 'save weighted_sum(inpaint, a, alpha=0.3) to "out/ia.safetensors" as fp16\n'
        'save weighted_sum(a, inpaint, alpha=0.3) to "out/ai.safetensors" as fp16\n'
        'save add_difference(inpaint, a, b, alpha=0.5) to "out/iab.safetensors" as fp16\n',
    )
    run(recipe, tmp_path)

    inpaint, a, b = (model(models, n) for n in ("inpaint", "a", "b"))
    assert inpaint[INPUT_CONV].shape[1] == 9 and a[INPUT_CONV].shape[1] == 4
    ws = weighted_sum(uniform("sd1", 0.3))
    cases = {
        "ia": expected_output("sd1", [inpaint, a], ws, "fp16"),
        "ai": expected_output("sd1", [a, inpaint], ws, "fp16"),
        "iab": expected_output("sd1", [inpaint, a, b], add_difference(uniform("sd1", 0.5)), "fp16"),
    }
    for name, expected in cases.items():
        actual = load(tmp_path / "out" / f"{name}.safetensors")
        conv = actual[INPUT_CONV]
        assert conv.shape[1] == 9, name
        assert torch.equal(conv[:, 4:], inpaint[INPUT_CONV][:, 4:].to(torch.float16)), name
        assert not torch.equal(conv[:, :4], inpaint[INPUT_CONV][:, :4].to(torch.float16)), name
        assert_same_tensors(actual, expected)


def test_without_as_the_channel_merged_input_conv_keeps_model_a_dtype(
    tmp_path: Path, models: Path
) -> None:
    recipe = write_recipe(
        tmp_path,
        declare(models, "a32", "inpaint")
        + 'save weighted_sum(a32, inpaint, alpha=0.5) to "out/x.safetensors"\n',
    )
    run(recipe, tmp_path)

    a32, inpaint = model(models, "a32"), model(models, "inpaint")
    expected = expected_output("sd1", [a32, inpaint], weighted_sum(uniform("sd1", 0.5)), None)
    assert expected[INPUT_CONV].dtype == torch.float32
    assert_same_tensors(load(tmp_path / "out" / "x.safetensors"), expected)


# ---- errors located in the recipe ------------------------------------------------------------


def test_sd1_merged_with_sdxl_is_reported_at_the_call(tmp_path: Path, models: Path) -> None:
    line = 'save weighted_sum(a, xla, alpha=0.3) to "out/x.safetensors"'
    recipe = write_recipe(tmp_path, declare(models, "a", "xla") + line + "\n")
    with pytest.raises(RecipeError) as caught:
        run(recipe, tmp_path)

    (diag,) = caught.value.diagnostics
    assert diag.code == "architecture-mismatch"
    assert "sd1" in diag.message and "sdxl" in diag.message
    assert diag.span is not None
    assert (diag.span.line, diag.span.column) == (3, line.index("weighted_sum") + 1)
    assert diag.headline().startswith(f"{recipe}:3:{line.index('weighted_sum') + 1}: error:")
    assert not (tmp_path / "out").exists()


def test_a_19_value_vector_on_sd1_models_is_reported_at_the_argument(
    tmp_path: Path, models: Path
) -> None:
    line = f"mix = weighted_sum(a, b, alpha={recipe_list(V19)})"
    recipe = write_recipe(
        tmp_path, declare(models, "a", "b") + line + '\nsave mix to "out/m.safetensors"\n'
    )
    with pytest.raises(RecipeError) as caught:
        run(recipe, tmp_path)

    (diag,) = caught.value.diagnostics
    assert diag.code == "weights-architecture"
    assert "19" in diag.message
    assert diag.span is not None
    assert (diag.span.line, diag.span.column) == (3, line.index("[") + 1)
    assert not (tmp_path / "out").exists()
