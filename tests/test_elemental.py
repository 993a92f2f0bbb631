"""Elemental (per-key) weights: syntax, checking, semantics, runs and the no-match warning."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import mergelang
from mergelang.arch import get_architecture
from mergelang.block_weights import BlockWeights, KeySelector, WeightsError
from mergelang.check import check
from mergelang.cli import main
from mergelang.errors import RecipeError
from mergelang.io.locate import ModelLocator
from mergelang.lang import ast
from mergelang.lang.formatter import format_text
from mergelang.lang.parser import parse
from mergelang.plan.input_checks import check_inputs
from mergelang.plan.inputs import resolve_inputs
from mergelang.plan.text import render_plan
from mergelang.testing import make_checkpoint

SCALE = 0.0625
HEAD = 'model a = "a.safetensors"\nmodel b = "b.safetensors"\n'
SD1 = get_architecture("sd1")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("elemental")
    make_checkpoint(folder / "a.safetensors", "sd1", scale=SCALE, seed=11, dtype="F32")
    make_checkpoint(folder / "b.safetensors", "sd1", scale=SCALE, seed=12, dtype="F32")
    return folder


def weights_of(text: str) -> BlockWeights:
    """The value of ``w = TEXT`` as the checker computes it."""
    checked = check(parse(f"w = {text}\n"))
    value = checked.steps[0].value
    assert isinstance(value, BlockWeights)
    return value


def errors_of(text: str) -> list[tuple[int, int, str, str | None]]:
    with pytest.raises(RecipeError) as info:
        check(parse(text, path="r.merge"))
    return [(d.line or 0, d.column or 0, d.message, d.hint) for d in info.value.errors]


# ---- syntax ---------------------------------------------------------------------------------


def test_parse_gives_the_parts_with_exact_spans() -> None:
    recipe = parse(
        HEAD + 'x = weighted_sum(a, b, alpha={default: 0.5, not "norm" not in [IN, M00]: 1})\n'
    )
    call = recipe.statements[2].value  # type: ignore[union-attr]
    assert isinstance(call, ast.Call)
    weights = call.keywords[0].value
    assert isinstance(weights, ast.WeightMap)
    entry = weights.entries[1]
    key = entry.key
    assert isinstance(key, ast.KeyPattern)
    assert (key.negated, key.exclude, key.pattern.value) == (True, True, "norm")
    assert key.blocks == (ast.Name("IN"), ast.Name("M00"))
    assert (entry.span.line, entry.span.column) == (3, 45)
    assert (key.pattern.span.line, key.pattern.span.column, key.pattern.span.end_column) == (
        3,
        49,
        55,
    )
    assert key.blocks is not None
    assert (key.blocks[1].span.column, key.blocks[1].span.end_column) == (68, 71)


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        ('{default:1,"attn2":0.5}', '{default: 1, "attn2": 0.5}'),
        ('{default: 1, "attn2" in [ OUT03 ]: 0.5}', '{default: 1, "attn2" in OUT03: 0.5}'),
        (
            '{default: 1, "a" in [OUT03,OUT04,BASE,]: .5}',
            '{default: 1, "a" in [OUT03, OUT04, BASE]: 0.5}',
        ),
        (
            '{default: 1, not  "a"  not  in  IN00..IN05: 2}',
            '{default: 1, not "a" not in IN00..IN05: 2}',
        ),
        ('{default: 1, "*.to_[kv].*" in M: 0}', '{default: 1, "*.to_[kv].*" in M: 0}'),
    ],
)
def test_format_is_canonical_and_idempotent(written: str, canonical: str) -> None:
    text = HEAD + f'save weighted_sum(a, b, alpha={written}) to "o.safetensors"\n'
    formatted = format_text(text)
    assert formatted == HEAD + f'save weighted_sum(a, b, alpha={canonical}) to "o.safetensors"\n'
    assert format_text(formatted) == formatted
    assert parse(formatted) == parse(text)


def test_not_stays_a_name_outside_weight_maps() -> None:
    recipe = parse(HEAD + 'not = a\nsave not to "o.safetensors"\n')
    assert isinstance(recipe.statements[2], ast.Assign)
    assert recipe.statements[2].name == "not"


# ---- checking -------------------------------------------------------------------------------


def test_an_empty_pattern_is_an_error_at_the_string() -> None:
    problems = errors_of(
        HEAD + 'save weighted_sum(a, b, alpha={default: 0.5, "": 1}) to "o.safetensors"\n'
    )
    assert [(p[0], p[1], p[2]) for p in problems] == [(3, 46, "an elemental key pattern is empty")]


def test_an_unknown_block_in_the_list_suggests_the_name() -> None:
    problems = errors_of(
        HEAD + 'save weighted_sum(a, b, alpha={default: 0.5, "attn2" in [OUT03, OUT4]: 1}) to "o"\n'
    )
    assert len(problems) == 1
    line, column, message, hint = problems[0]
    assert (line, column, message) == (3, 65, "unknown block name 'OUT4'")
    assert hint is not None and hint.startswith("did you mean OUT04?")


def test_default_is_not_a_block_of_a_block_set() -> None:
    problems = errors_of(
        HEAD + 'save weighted_sum(a, b, alpha={default: 0.5, "x" in default: 1}) to "o"\n'
    )
    assert [(p[0], p[1]) for p in problems] == [(3, 53)]
    assert "default is not a block" in problems[0][2]


def test_a_backwards_range_in_a_block_set_is_an_error() -> None:
    problems = errors_of(
        HEAD + 'save weighted_sum(a, b, alpha={default: 0.5, "x" in OUT05..OUT01: 1}) to "o"\n'
    )
    assert [(p[0], p[1], p[2]) for p in problems] == [
        (3, 53, "the block range OUT05..OUT01 runs backwards")
    ]


def test_pattern_placeholders_take_the_loop_value() -> None:
    text = (
        HEAD
        + "for blk in [OUT03]:\n"
        + '    save a * {default: 1, "{blk}x" in blk: 0.5} to "o_{blk}.safetensors"\n'
    )
    checked = check(parse(text))
    weight = checked.saves[0].model.terms[0].weight  # type: ignore[union-attr]
    assert weight.elemental[0].selector == KeySelector("OUT03x", blocks=("OUT03",))


# ---- semantics ------------------------------------------------------------------------------


def test_selector_substring_glob_not_and_blocks() -> None:
    key = "model.diffusion_model.output_blocks.3.1.transformer_blocks.0.attn2.to_k.weight"
    assert KeySelector("attn2").matches("OUT03", key)
    assert not KeySelector("ATTN2").matches("OUT03", key)
    assert not KeySelector("attn2.*").matches("OUT03", key)  # a glob matches the whole name
    assert KeySelector("*attn2.to_[kv]*").matches("OUT03", key)
    assert KeySelector("attn2", negated=True).matches("OUT03", key) is False
    assert KeySelector("attn2", blocks=("OUT03",)).matches("OUT03", key)
    assert not KeySelector("attn2", blocks=("OUT04",)).matches("OUT03", key)
    assert KeySelector("attn2", blocks=("OUT04",), exclude=True).matches("OUT03", key)
    assert KeySelector("x", blocks=("OUT04",), exclude=True).matches("BASE", "x.weight")
    with pytest.raises(WeightsError):
        KeySelector("")


def test_later_entries_win_and_apply_after_block_entries() -> None:
    w = weights_of(
        '{"attn": 0.1, default: 0.5, "attn2" in OUT: 0.2, OUT03: 0.9, not "norm" in OUT03: 0.7}'
    )
    resolved = w.resolve(SD1.scheme)
    k = "model.diffusion_model.output_blocks.3.1.transformer_blocks.0.attn2.to_k.weight"
    n = "model.diffusion_model.output_blocks.3.1.norm.weight"
    assert resolved.value("OUT03", k) == 0.7  # the last matching entry
    assert resolved.value("OUT03", n) == 0.9  # no entry selects it: the block's value
    assert resolved.value("OUT04", k.replace("blocks.3", "blocks.4")) == 0.2
    assert resolved.value("IN01", "model.diffusion_model.input_blocks.1.0.x") == 0.5
    assert resolved["OUT03"] == 0.9


def test_arithmetic_with_a_number_applies_to_the_entries() -> None:
    w = weights_of('1 - {default: 0.25, "attn2" in OUT03: 0.5} * 0.5')
    assert w.base == 0.875
    assert [e.value for e in w.elemental] == [0.75]
    assert w.elemental[0].selector == KeySelector("attn2", blocks=("OUT03",))
    assert [e.value for e in (-w).elemental] == [-0.75]


def test_arithmetic_between_keyed_values_is_refused_with_a_clear_error() -> None:
    problems = errors_of('w = {default: 1, "a": 2} + {default: 1, "b": 3}\n')
    assert [(p[0], p[1]) for p in problems] == [(1, 5)]
    assert "both have elemental" in problems[0][2]
    problems = errors_of('w = {default: 1, "a": 2} * {IN: 1, OUT: 2, M: 0, BASE: 1}\n')
    assert "combine only with a number" in problems[0][2]
    problems = errors_of('w = 1 / {default: 1, "a": 0}\n')
    assert "division by zero" in problems[0][2]


def test_to_text_reads_back_equal() -> None:
    w = weights_of(
        '{BASE: 0.3, default: 0.5, "at\\"t{{n}}" not in [OUT03..OUT05, BASE]: 0.2, not "*x*": 1}'
    )
    text = w.to_text()
    assert text == (
        '{BASE: 0.3, default: 0.5, "at\\"t{{n}}" not in [BASE, OUT03..OUT05]: 0.2, not "*x*": 1}'
    )
    assert weights_of(text) == w
    assert weights_of(text).elemental[0].selector.pattern == 'at"t{n}'


def test_values_with_different_entries_differ_and_hash() -> None:
    one = weights_of('{default: 1, "attn2": 0.5}')
    two = weights_of('{default: 1, "attn1": 0.5}')
    assert one != two and one.is_scalar is None
    assert len({one, two, weights_of('{default: 1, "attn2": 0.5}')}) == 2
    assert len({one.resolve(SD1.scheme), two.resolve(SD1.scheme)}) == 2


# ---- runs: exact values ---------------------------------------------------------------------


def selector(
    pattern: str, blocks: set[str] | None = None, negated: bool = False, exclude: bool = False
) -> Callable[[str, str], bool]:
    """The selection rule, written out: substring or (with * ? [) a whole-name glob."""

    def picks(block: str, key: str) -> bool:
        glob = any(c in pattern for c in "*?[")
        hit = fnmatch.fnmatchcase(key, pattern) if glob else pattern in key
        if negated:
            hit = not hit
        if blocks is not None:
            inside = block in blocks
            if inside == exclude:
                return False
        return hit

    return picks


def run(models: Path, tmp_path: Path, body: str) -> dict[str, torch.Tensor]:
    recipe = tmp_path / "r.merge"
    recipe.write_text(HEAD + body)
    mergelang.run(recipe, models_dir=[models], out_dir=tmp_path, cache_dir=tmp_path / "cache")
    return load_file(tmp_path / "o.safetensors")


def test_weighted_sum_per_key_matches_the_formula(models: Path, tmp_path: Path) -> None:
    got = run(
        models,
        tmp_path,
        'save weighted_sum(a, b, alpha={default: 0.5, OUT: 0.4, "attn2" in [OUT03, OUT04]: 0.2, '
        'not "norm" in IN: 0.7, "*.proj_?n.*" not in [IN, M]: 0.9, "emb_layers" in OUT03: 0.3}) '
        'to "o.safetensors" as fp32\n',
    )
    a = load_file(models / "a.safetensors")
    b = load_file(models / "b.safetensors")
    rules = [
        (selector("attn2", {"OUT03", "OUT04"}), 0.2),
        (selector("norm", set(SD1.blocks) & {f"IN{i:02d}" for i in range(12)}, negated=True), 0.7),
        (selector("*.proj_?n.*", {f"IN{i:02d}" for i in range(12)} | {"M00"}, exclude=True), 0.9),
        (selector("emb_layers", {"OUT03"}), 0.3),
    ]
    counts = dict.fromkeys(range(len(rules)), 0)
    merged = 0
    for key, value in got.items():
        block = SD1.block_of(key)
        if block is None:
            assert torch.equal(value, a[key])
            continue
        alpha = 0.4 if block.startswith("OUT") else 0.5
        for index, (picks, weight) in enumerate(rules):
            if picks(block, key):
                alpha = weight
                counts[index] += 1
        expected = (a[key] * (1 - alpha) + b[key] * alpha).to(torch.float32)
        assert torch.allclose(value, expected, rtol=1e-6, atol=1e-6), key
        merged += 1
    assert merged > 1000
    assert all(count > 0 for count in counts.values()), counts


def test_arithmetic_terms_and_the_identity_pass_through(models: Path, tmp_path: Path) -> None:
    got = run(
        models,
        tmp_path,
        'w = {default: 1, "attn1" in M00: 0.25, "*.weight" in BASE: 0.5}\n'
        'save a * w + b * (1 - w) to "o.safetensors" as fp32\n',
    )
    a = load_file(models / "a.safetensors")
    b = load_file(models / "b.safetensors")
    picks_m = selector("attn1", {"M00"})
    picks_base = selector("*.weight", {"BASE"})
    changed = 0
    for key, value in got.items():
        block = SD1.block_of(key)
        if block is None:
            continue
        weight = 1.0
        if picks_m(block, key):
            weight = 0.25
        if picks_base(block, key):
            weight = 0.5
        if weight == 1.0:
            assert torch.equal(value, a[key]), key  # 1 * a + 0 * b is a exactly
        else:
            changed += 1
            expected = a[key] * weight + b[key] * (1 - weight)
            assert torch.allclose(value, expected, rtol=1e-6, atol=1e-6), key
    assert changed > 50


def test_a_scaled_model_passes_unselected_keys_through_bit_for_bit(
    models: Path, tmp_path: Path
) -> None:
    got = run(models, tmp_path, 'save a * {default: 1, "attn2" in OUT: 0.5} to "o.safetensors"\n')
    a = load_file(models / "a.safetensors")
    for key, value in got.items():
        block = SD1.block_of(key)
        if block is not None and block.startswith("OUT") and "attn2" in key:
            assert torch.allclose(value, a[key] * 0.5)
        else:
            assert torch.equal(value, a[key]), key


def test_entries_take_part_in_the_cache_address_and_the_plan(models: Path, tmp_path: Path) -> None:
    text = (
        HEAD
        + 'cache m = weighted_sum(a, b, alpha={default: 0.5, "attn2": 0.2})\n'
        + 'save m to "o.safetensors"\n'
    )
    recipe = tmp_path / "r.merge"
    recipe.write_text(text)
    plan = mergelang.plan(recipe, models_dir=[models], cache_dir=tmp_path / "cache")
    try:
        assert 'alpha=0.5 {"attn2": 0.2}' in render_plan(plan)
    finally:
        plan.close()
    first = mergelang.run(
        recipe, models_dir=[models], out_dir=tmp_path, cache_dir=tmp_path / "cache"
    )
    assert first.cache_stores == ("m",)
    recipe.write_text(text.replace('"attn2": 0.2', '"attn2": 0.3'))
    second = mergelang.run(
        recipe, models_dir=[models], out_dir=tmp_path, cache_dir=tmp_path / "cache", force=True
    )
    assert second.cache_hits == ()


# ---- the no-match warning -------------------------------------------------------------------


def test_a_pattern_matching_no_key_is_a_warning_at_the_entry(models: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "r.merge"
    recipe.write_text(
        HEAD + 'save weighted_sum(a, b, alpha={default: 0.5, "attn2": 0.1, "attn2" in BASE: 0.2, '
        '"nothing_like_this": 0.3}) to "o.safetensors"\n'
    )
    checked = check(parse(recipe.read_text(), path=str(recipe)), base_dir=tmp_path)
    with resolve_inputs(checked, ModelLocator([models])) as inputs:
        report = check_inputs(checked, inputs)
    found = [(d.line, d.column, d.severity, d.code, d.message) for d in report.warnings]
    assert found == [
        (
            3,
            60,
            "warning",
            "elemental-no-match",
            'the elemental entry "attn2" in BASE matches no key of sd1 models',
        ),
        (
            3,
            82,
            "warning",
            "elemental-no-match",
            'the elemental entry "nothing_like_this" matches no key of sd1 models',
        ),
    ]
    plan = mergelang.plan(recipe, models_dir=[models])
    plan.close()
    assert plan.warnings == report.warnings
    result = mergelang.run(recipe, models_dir=[models], cache_dir=tmp_path / "cache")
    assert result.warnings == report.warnings


def test_cli_check_inputs_prints_the_warning(
    models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = tmp_path / "r.merge"
    recipe.write_text(
        HEAD + 'save a * {default: 1, "attn2" in IN10: 0.5} + b * 0 to "o.safetensors"\n'
    )
    code = main(["check", "--inputs", "--models-dir", str(models), str(recipe)])
    captured = capsys.readouterr()
    assert code == 0
    assert "1 warning" in captured.out
    assert f"{recipe}:3:23: warning:" in captured.err.replace("\n", "")
    assert "matches no key of sd1 models" in captured.err
