"""The checker: names, arguments, types, weights, loops, saves; every error at once.

Golden files: tests/golden/errors/<fixture>.txt for tests/recipes/errors/*.merge (those not
named syntax_*), checked with the variables in VARIABLES. Regenerate with
MERGELANG_UPDATE_GOLDEN=1.
"""

from __future__ import annotations

import ast as python_ast
import os
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from weights_helpers import in_sd_terms, sd_slots, sd_weights

from mergelang.arch.sd1 import SD_BLOCKS
from mergelang.block_weights import BlockWeights
from mergelang.check import (
    BoundArg,
    CheckedRecipe,
    InputRef,
    LinearCombination,
    MethodCall,
    ModelSource,
    StepRef,
    check,
)
from mergelang.errors import RecipeError, Span, format_diagnostic
from mergelang.lang.parser import parse
from mergelang.methods import REGISTRY, Param, method
from mergelang.presets import BUILTIN_PRESETS

TESTS = Path(__file__).parent
ROOT = TESTS.parent
RECIPES = TESTS / "recipes"
GOLDEN = TESTS / "golden"
UPDATE = os.environ.get("MERGELANG_UPDATE_GOLDEN") == "1"

VARIABLES = {
    "SD14": "sd14.ckpt",
    "SD15": "sd15.safetensors",
    "F222": "f222.ckpt",
    "WD13": "wd13.ckpt",
    "A": "0.25",
    "P": "models/p.safetensors",
}
CHECK_ERRORS = sorted(
    p for p in (RECIPES / "errors").glob("*.merge") if not p.name.startswith("syntax_")
)


def assert_golden(path: Path, actual: str) -> None:
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual, encoding="utf-8")
        return
    assert path.is_file(), f"missing golden file {path}: run with MERGELANG_UPDATE_GOLDEN=1"
    assert actual == path.read_text(encoding="utf-8")


def checked(text: str, **variables: str) -> CheckedRecipe:
    return check(parse(text, path="r.merge"), set=variables, base_dir=TESTS)


def errors(text: str, **variables: str) -> list[tuple[str, int, int, str]]:
    """(code, line, column, message) of every error the checker reports."""
    with pytest.raises(RecipeError) as info:
        checked(text, **variables)
    return [
        (d.code, d.line or 0, d.column or 0, d.message)
        for d in info.value.diagnostics
        if d.severity == "error"
    ]


def codes(text: str, **variables: str) -> list[str]:
    return [code for code, *_ in errors(text, **variables)]


MODELS = 'model a = "a.safetensors"\nmodel b = "b.safetensors"\nmodel c = "c.safetensors"\n'


# ---- golden diagnostics ----------------------------------------------------------------------


@pytest.mark.parametrize("recipe", CHECK_ERRORS, ids=lambda p: p.stem)
def test_check_errors_match_golden(recipe: Path) -> None:
    tree = parse(recipe.read_text(encoding="utf-8"), path=recipe.name)
    with pytest.raises(RecipeError) as info:
        check(tree, set=VARIABLES, base_dir=recipe.parent)
    text = "".join(f"{format_diagnostic(d)}\n  code: {d.code}\n" for d in info.value.diagnostics)
    assert_golden(GOLDEN / "errors" / f"{recipe.stem}.txt", text)


def test_every_error_is_reported_in_one_pass() -> None:
    found = errors(
        MODELS + 'x = weighted_sum(a, zz)\ny = a * b\nsave a to "o" as fp4\nz = GRAD_Q * a\n'
    )
    assert found == [
        ("undefined-name", 4, 21, "undefined name 'zz'"),
        ("type", 5, 5, "cannot multiply two models"),
        ("unknown-dtype", 6, 18, "unknown dtype 'fp4'"),
        ("undefined-name", 7, 5, "undefined name 'GRAD_Q'"),
    ]


# ---- the issue's recipes -----------------------------------------------------------------------


def test_issue_recipe() -> None:
    result = check(
        parse((RECIPES / "issue_example.merge").read_text(), path="issue_example.merge"),
        set={"WD13": "wd-1-3.safetensors"},
    )
    assert result.models == {
        "sd15": ModelSource("sd15", "path", "models/v1-5-pruned-emaonly.safetensors"),
        "wd": ModelSource("wd", "variable", "wd-1-3.safetensors", "WD13"),
    }
    assert [s.name for s in result.steps] == ["mix", "mix2", "mix3", "diff", "each"]
    mix = result.step("mix").value
    assert isinstance(mix, MethodCall)
    assert mix.method == "weighted_sum"
    assert mix.args == (
        BoundArg("a", InputRef("sd15")),
        BoundArg("b", InputRef("wd")),
        BoundArg("alpha", BUILTIN_PRESETS["GRAD_V"]),
        BoundArg("base", 0.3),
    )
    alpha = mix.arg("alpha")
    assert isinstance(alpha, BlockWeights)
    assert sd_slots(alpha)[0] == 1 and sd_slots(alpha)[12] == 0 and alpha.base is None
    assert mix.args[2].span == Span(4, 37, 4, 43)

    mix2 = result.step("mix2").value
    assert isinstance(mix2, MethodCall)
    assert in_sd_terms(mix2.arg("alpha")) == in_sd_terms(
        sd_weights(0.3, (1.0,) * 12 + (0.5,) + (0.0,) * 12)
    )

    mix3 = result.step("mix3").value
    assert isinstance(mix3, MethodCall)
    expected = (1.0,) * 6 + (0.5,) * 6 + (0.5,) + (0.0,) * 12
    assert in_sd_terms(mix3.arg("alpha")) == in_sd_terms(sd_weights(0.3, expected))

    diff = result.step("diff").value
    assert isinstance(diff, MethodCall)
    assert diff.method == "add_difference"
    assert [diff.arg(n) for n in "abc"] == [StepRef("mix"), InputRef("wd"), InputRef("sd15")]
    assert diff.arg("alpha") == BlockWeights.scalar(0.5)
    assert diff.arg("base") is None

    each = result.step("each").value
    assert isinstance(each, LinearCombination)
    (sd15_term, wd_term) = each.terms
    assert sd15_term.model == InputRef("sd15")
    assert in_sd_terms(sd15_term.weight) == in_sd_terms(sd_weights(1.0, (0.75,) + (1.0,) * 24))
    assert wd_term.model == InputRef("wd")
    assert wd_term.weight == BlockWeights.scalar(0.0)

    assert len(result.saves) == 26
    first = result.saves[0]
    assert (first.path, first.dtype, first.model) == ("out/mix.safetensors", "fp16", StepRef("mix"))
    layers = result.saves[1:]
    assert [s.path for s in layers] == [f"out/layers/sd15-{b}-075.safetensors" for b in SD_BLOCKS]
    for index, save in enumerate(layers):
        assert save.bindings == (("blk", SD_BLOCKS[index]),)
        assert save.dtype is None
        assert isinstance(save.model, LinearCombination)
        (term,) = save.model.terms
        assert term.model == InputRef("sd15")
        assert term.weight.base == 1.0
        assert sd_slots(term.weight) == tuple(
            0.75 if i == index else 1.0 for i in range(len(SD_BLOCKS))
        )
    assert [w.code for w in result.warnings] == ["unused"] * 4


def test_merge_board_sample() -> None:
    result = check(
        parse((RECIPES / "merge_board_sample.merge").read_text(), path="sample.merge"),
        set=VARIABLES,
    )
    assert list(result.models) == ["__SD14__", "__F222__", "__SD15__", "__WD13__"]
    assert result.models["__F222__"] == ModelSource("__F222__", "variable", "f222.ckpt", "F222")
    assert [(s.name, s.origin) for s in result.steps] == [
        ("a14", "merge_board"),
        ("a15", "merge_board"),
        ("mix14", "merge_board"),
        ("mix15", "merge_board"),
        ("SD-WD Fix", "merge_board"),
        ("test06", "merge_board"),
    ]
    mix14 = result.step("mix14").value
    assert isinstance(mix14, MethodCall)
    assert mix14.method == "add_difference"
    assert [mix14.arg(n) for n in "abc"] == [
        StepRef("a14"),
        InputRef("__WD13__"),
        InputRef("__SD14__"),
    ]
    assert mix14.arg("alpha") == BlockWeights.scalar(1.0)
    test06 = result.step("test06").value
    assert isinstance(test06, MethodCall)
    assert (test06.arg("a"), test06.arg("b")) == (StepRef("a15"), StepRef("SD-WD Fix"))
    assert test06.arg("alpha") == BlockWeights.scalar(0.3)
    assert [(s.path, s.dtype, s.format) for s in result.saves] == [
        ("a14.ckpt", None, "ckpt"),
        ("a15.ckpt", "fp16", "ckpt"),
        ("mix14.safetensors", None, "safetensors"),
        ("mix15.safetensors", "fp16", "safetensors"),
        ("SD-WD Fix.ckpt", None, "ckpt"),
        ("test06.safetensors", "fp16", "safetensors"),
    ]
    assert result.warnings == ()


def test_merge_board_sample_needs_its_variables() -> None:
    text = (RECIPES / "merge_board_sample.merge").read_text()
    found = errors(text)
    assert [(c, line, col) for c, line, col, _ in found] == [
        ("unbound-variable", 2, 7),
        ("unbound-variable", 2, 18),
        ("unbound-variable", 3, 7),
        ("unbound-variable", 4, 18),
    ]
    assert found[0][3] == "the variable __SD14__ is not bound"


def test_mixed_recipe_with_preset_multiplier_and_literal_models() -> None:
    result = check(parse((RECIPES / "mixed.merge").read_text()), set=VARIABLES)
    merge1 = result.step("Merge1").value
    assert isinstance(merge1, MethodCall)
    assert merge1.arg("alpha") == BUILTIN_PRESETS["GRAD_A"]
    assert merge1.arg("base") == 0.5
    assert (merge1.arg("a"), merge1.arg("b")) == (InputRef("SD1.5"), InputRef("WD1.3"))
    assert result.models["SD1.5"] == ModelSource("SD1.5", "literal", "SD1.5")
    soft = result.step("soft").value
    assert isinstance(soft, MethodCall)
    grad_v = BUILTIN_PRESETS["GRAD_V"]
    alpha = soft.arg("alpha")
    assert isinstance(alpha, BlockWeights)
    assert sd_slots(alpha) == tuple(1 - v for v in sd_slots(grad_v) if v is not None)
    half = result.saves[-1]
    assert half.path == "out/half-half.safetensors"
    assert isinstance(half.model, LinearCombination)
    assert [t.model for t in half.model.terms] == [StepRef("test06"), StepRef("Merge1")]
    assert all(t.weight == BlockWeights.scalar(0.5) for t in half.model.terms)
    soft_save = result.saves[-2]
    assert (soft_save.dtype, soft_save.ema, soft_save.position_ids) == ("bf16", "keep", "reset")


@pytest.mark.parametrize(
    "recipe",
    sorted(RECIPES.glob("*.merge")),
    ids=lambda p: p.stem,
)
def test_every_fixture_checks(recipe: Path) -> None:
    result = check(parse(recipe.read_text(), path=recipe.name), set=VARIABLES)
    assert result.saves


# ---- weights ------------------------------------------------------------------------------------


def test_weights_arithmetic_is_evaluated() -> None:
    result = checked(
        MODELS + "w = (1 - GRAD_V) * 0.5 + -0.25 * FLAT_25\nsave weighted_sum(a, b, alpha=w)"
        ' to "o.safetensors"\n'
    )
    w = result.step("w")
    assert w.kind == "weights"
    grad_v = sd_slots(BUILTIN_PRESETS["GRAD_V"])
    assert isinstance(w.value, BlockWeights)
    assert sd_slots(w.value) == tuple((1 - g) * 0.5 + -0.25 * 0.25 for g in grad_v if g is not None)
    assert w.value.base is None


def test_numbers_stay_exact() -> None:
    result = checked(MODELS + 'save weighted_sum(a, b, alpha=0.1 + 0.2, base=1 / 3) to "o"\n')
    call = result.saves[0].model
    assert isinstance(call, MethodCall)
    assert call.arg("alpha") == BlockWeights.scalar(0.1 + 0.2)
    assert call.arg("base") == 1 / 3


def test_model_arithmetic_makes_linear_combinations() -> None:
    result = checked(MODELS + 'd = a + (b - c) * 0.5\nsave -d / 4 to "o"\n')
    d = result.step("d").value
    assert isinstance(d, LinearCombination)
    assert [(t.model, t.weight.is_scalar) for t in d.terms] == [
        (InputRef("a"), 1.0),
        (InputRef("b"), 0.5),
        (InputRef("c"), -0.5),
    ]
    saved = result.saves[0].model
    assert isinstance(saved, LinearCombination)
    assert [(t.model, t.weight.is_scalar) for t in saved.terms] == [(StepRef("d"), -0.25)]


def test_variables_as_numbers_and_presets() -> None:
    result = checked(
        MODELS + 'save weighted_sum(a, b, alpha=$W, base=$A) to "o"\n', W="FLAT_75", A="0.25"
    )
    call = result.saves[0].model
    assert isinstance(call, MethodCall)
    assert call.arg("alpha") == BUILTIN_PRESETS["FLAT_75"]
    assert call.arg("base") == 0.25


def test_a_variable_model_is_one_input_whatever_its_spelling() -> None:
    result = checked('save weighted_sum($X, __X__, alpha=0.5) to "o"\n', X="x.safetensors")
    assert result.models == {"$X": ModelSource("$X", "variable", "x.safetensors", "X")}


# ---- loops --------------------------------------------------------------------------------------


def test_number_loops_bind_numbers_and_templates() -> None:
    result = checked(
        MODELS
        + "for v in [0.25, 0.5, 1]:\n"
        + "    m = weighted_sum(a, b, alpha=v)\n"
        + '    save m to "out/m-{v}.safetensors"\n'
    )
    assert [s.path for s in result.saves] == [
        "out/m-0.25.safetensors",
        "out/m-0.5.safetensors",
        "out/m-1.safetensors",
    ]
    assert [s.name for s in result.steps] == ["m@v=0.25", "m@v=0.5", "m@v=1"]
    alphas = []
    for step in result.steps:
        assert isinstance(step.value, MethodCall)
        alphas.append(step.value.arg("alpha"))
    assert alphas == [BlockWeights.scalar(v) for v in (0.25, 0.5, 1.0)]
    assert [s.model for s in result.saves] == [StepRef(s.name) for s in result.steps]


def test_nested_loops_groups_and_strings() -> None:
    result = checked(
        MODELS
        + "for blk in M:\n"
        + '    for tag in ["x", "y"]:\n'
        + '        save a * {blk: 0, default: 1} to "{tag}/{blk}-{{raw}}.safetensors"\n'
    )
    assert [s.path for s in result.saves] == [
        "x/M00-{raw}.safetensors",
        "y/M00-{raw}.safetensors",
    ]
    assert result.saves[1].bindings == (("blk", "M00"), ("tag", "y"))


def test_an_error_in_a_loop_body_is_reported_once() -> None:
    found = errors(MODELS + 'for blk in IN:\n    save zz to "{blk}"\n')
    assert found == [("undefined-name", 5, 10, "undefined name 'zz'")]


def test_loop_local_names_do_not_leak() -> None:
    found = errors(MODELS + 'for v in [1]:\n    m = a * v\nsave m to "o"\n')
    assert found == [("undefined-name", 6, 6, "undefined name 'm'")]


# ---- registry-driven argument checks -----------------------------------------------------------


@pytest.fixture
def probe_methods() -> Iterator[None]:
    @method(
        "range_probe",
        params=[
            Param("a", "model"),
            Param("t", "number", default=0.5, minimum=0.0, maximum=1.0),
            Param("k", "int", default=1, minimum=1),
            Param("w", "weights", default=1.0, minimum=0.0, maximum=2.0),
            Param("label", "string", default="x"),
        ],
    )
    def range_probe(a: object, *, t: float, k: int, w: float, label: str) -> object:
        """a * t (a test method)"""
        return a

    @method("mean_probe", params=[Param("models", "model", variadic=True)])
    def mean_probe(*models: object) -> object:
        """mean(models) (a test method)"""
        return models[0]

    try:
        yield
    finally:
        REGISTRY.unregister("range_probe")
        REGISTRY.unregister("mean_probe")


@pytest.mark.usefixtures("probe_methods")
def test_parameter_ranges_and_kinds() -> None:
    found = errors(
        MODELS
        + "x1 = range_probe(a, t=1.5)\n"
        + "x2 = range_probe(a, k=0)\n"
        + "x3 = range_probe(a, k=1.5)\n"
        + "x4 = range_probe(a, w={IN00: 3, default: 1})\n"
        + "x5 = range_probe(a, label=0.5)\n"
        + "x6 = range_probe(a, t=-0.5, k=2, w=[2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,"
        + ' 1, 1, 1, 1, 1, 1, 1, 1], label="y")\n'
    )
    assert found == [
        ("out-of-range", 4, 23, "out of range: t is at most 1.0, not 1.5"),
        ("out-of-range", 5, 23, "out of range: k is at least 1, not 0"),
        ("type", 6, 23, "argument 'k' of range_probe must be a whole number"),
        ("out-of-range", 7, 23, "out of range: w is at most 2.0, not 3.0 (at IN00)"),
        ("type", 8, 27, "argument 'label' of range_probe must be a string, not a number"),
        ("out-of-range", 9, 23, "out of range: t is at least 0.0, not -0.5"),
    ]


@pytest.mark.usefixtures("probe_methods")
def test_registry_argument_errors_match_golden() -> None:
    text = (
        MODELS
        + "x1 = range_probe(a, t=1.5, k=0)\n"
        + "x2 = range_probe(a, w={IN00: 3, default: 1}, label=GRAD_V)\n"
        + "x3 = mean_probe(a, b, label=1)\n"
        + 'x4 = range_probe(a, 0.5, 1, 1, "s", 2)\n'
    )
    with pytest.raises(RecipeError) as info:
        check(parse(text, path="registry.merge"))
    golden = "".join(f"{format_diagnostic(d)}\n  code: {d.code}\n" for d in info.value.diagnostics)
    assert_golden(GOLDEN / "errors" / "registry_arguments.txt", golden)


@pytest.mark.usefixtures("probe_methods")
def test_bound_values_by_kind_and_variadic_models() -> None:
    result = checked(
        MODELS
        + 'save range_probe(a, 0.25, 3, w=2, label="tag") to "o1"\n'
        + 'save mean_probe(a, b, c) to "o2"\n'
        + 'save range_probe(a) to "o3"\n'
    )
    first, second, third = (s.model for s in result.saves)
    assert isinstance(first, MethodCall)
    assert [(b.param, b.value) for b in first.args] == [
        ("a", InputRef("a")),
        ("t", 0.25),
        ("k", 3),
        ("w", BlockWeights.scalar(2.0)),
        ("label", "tag"),
    ]
    assert isinstance(first.arg("k"), int)
    assert isinstance(second, MethodCall)
    assert second.arg("models") == (InputRef("a"), InputRef("b"), InputRef("c"))
    assert second.args[0].span == Span(5, 17, 5, 24)
    assert isinstance(third, MethodCall)
    assert [(b.param, b.value) for b in third.args[1:]] == [
        ("t", 0.5),
        ("k", 1),
        ("w", BlockWeights.scalar(1.0)),
        ("label", "x"),
    ]


@pytest.mark.usefixtures("probe_methods")
def test_variadic_needs_a_model() -> None:
    assert codes(MODELS + 'save mean_probe() to "o"\n') == ["missing-argument"]
    assert codes(MODELS + 'save mean_probe(a, 0.5) to "o"\n') == ["type"]


# ---- statements -------------------------------------------------------------------------------


def test_save_options_and_defaults() -> None:
    result = check(parse((RECIPES / "save_options.merge").read_text()))
    assert result.convention == "supermerger"
    first, second, third = result.saves
    assert (first.ema, first.schedule, first.position_ids, first.format) == (
        "keep",
        "keep",
        "reset",
        "safetensors",
    )
    assert first.vae == ModelSource("vae", "path", "models/vae-ft-mse-840000.safetensors")
    assert (second.format, second.schedule, second.ema, second.dtype) == (
        "ckpt",
        "drop",
        "drop",
        "fp32",
    )
    assert third.format == "ckpt"
    assert third.vae == ModelSource(
        "models/other-vae.safetensors", "path", "models/other-vae.safetensors"
    )
    assert result.step("mix").cached


def test_default_convention() -> None:
    assert checked(MODELS + 'save a to "o"\n').convention == "mbw"


def test_unknown_convention_lists_the_valid_ones() -> None:
    with pytest.raises(RecipeError) as info:
        checked("convention mechanical\n")
    (diag,) = info.value.diagnostics
    assert diag.code == "unknown-convention"
    assert (
        diag.hint is not None and "mbw, kohya, supermerger, supermerger_2023, sd_mecha" in diag.hint
    )


def test_user_presets_file(tmp_path: Path) -> None:
    (tmp_path / "mine.tsv").write_text("MINE\t" + ",".join(["0.25"] * 25) + "\n")
    recipe = parse(MODELS + 'presets "mine.tsv"\nsave weighted_sum(a, b, alpha=MINE) to "o"\n')
    result = check(recipe, base_dir=tmp_path)
    call = result.saves[0].model
    assert isinstance(call, MethodCall)
    assert call.arg("alpha") == sd_weights(None, (0.25,) * 25)


def test_preset_file_errors_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "bad.tsv").write_text("BAD\t1,2,3\n")
    recipe = parse('presets "bad.tsv"\n', path="r.merge")
    with pytest.raises(RecipeError) as info:
        check(recipe, base_dir=tmp_path)
    (diag,) = info.value.diagnostics
    assert diag.path == str(tmp_path / "bad.tsv")
    assert diag.line == 1


def test_recipe_folder_is_the_default_base_dir(tmp_path: Path) -> None:
    (tmp_path / "mine.tsv").write_text("MINE: " + ", ".join(["1"] * 25) + "\n")
    recipe = parse(
        MODELS + 'presets "mine.tsv"\nsave a * MINE to "o"\n', path=str(tmp_path / "r.merge")
    )
    assert check(recipe).base_dir == tmp_path


def test_warnings_do_not_fail() -> None:
    result = checked(MODELS + 'x = weighted_sum(a, b)\nsave a to "o.safetensors"\n')
    assert [(w.code, w.severity, w.line, w.column) for w in result.warnings] == [
        ("unused", "warning", 3, 7),
        ("unused", "warning", 4, 1),
    ]
    assert result.warnings[0].message == "model 'c' is never used"
    assert result.warnings[1].message == "intermediate 'x' is neither used nor saved"


def test_literal_close_to_a_defined_name_warns() -> None:
    result = checked('model sd15 = "x"\nm = sd51 + sd15, 0.5\n')
    (warning,) = result.warnings
    assert warning.code == "literal-model"
    assert warning.hint == "did you mean 'sd15'?"
    assert result.models["sd51"].kind == "literal"


def test_merge_board_operand_may_name_a_declared_model() -> None:
    result = checked('model sd15 = "x"\nmodel wd = "y"\nm = sd15 + wd, 0.25\nsave m to "m2"\n')
    call = result.step("m").value
    assert isinstance(call, MethodCall)
    assert (call.arg("a"), call.arg("b")) == (InputRef("sd15"), InputRef("wd"))
    assert [s.path for s in result.saves] == ["m.ckpt", "m2"]


def test_merge_board_lines_do_not_go_in_loops() -> None:
    assert codes("for b in IN:\n    x = __A__ + __B__, 0.5\n", A="a", B="b") == ["not-in-loop"]


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ('x = 1 - GRAD_V\nsave x to "o"\n', "type"),
        ('save a * b to "o"\n', "type"),
        ('save a + 1 to "o"\n', "type"),
        ('save weighted_sum(a, b, alpha=a) to "o"\n', "type"),
        ('save weighted_sum(a, b, alpha=[1, 2]) to "o"\n', "vector-length"),
        ('save weighted_sum(a, b, alpha=["x"]) to "o"\n', "not-a-number"),
        ('save weighted_sum(a, b, alpha=GRAD_X) to "o"\n', "unknown-preset"),
        ('save weighted_sum(a, b, alpha=$NOPE) to "o"\n', "unbound-variable"),
        ('save a to "o" with vae=b2\n', "bad-save-option"),
        ('save a to "{x}"\n', "unbound-placeholder"),
        ('model d = "{x}"\n', "unbound-placeholder"),
        ('for v in [1]:\n    save a * {v: 1} to "{v}"\n', "loop-variable"),
        ('for v in IN00..M0:\n    save a to "{v}"\n', "unknown-block"),
        ('save a * {OUT02..OUT01: 1} to "o"\n', "block-range"),
        ('save a to "o"\nsave b to "./o"\n', "duplicate-save"),
        ("x = b\nx = c\n", "duplicate-name"),
        ("default = a\n", "reserved-name"),
        ('model z = ""\n', "empty-path"),
        ('save __O1__ to "o"\n', "output-ref"),
    ],
)
def test_error_codes(text: str, code: str) -> None:
    assert code in codes(MODELS + text)


# ---- lines as the parser counts them -------------------------------------------------------

# Line and paragraph separators, and the information separators U+001C..U+001E that
# str.splitlines also cuts at (those are refused as control characters before any check).
SEPARATORS = ["\u2028", "\u2029"]


@pytest.mark.parametrize("separator", SEPARATORS, ids=lambda s: f"U+{ord(s):04X}")
def test_a_separator_in_a_comment_keeps_later_lines_in_place(separator: str) -> None:
    text = f"# notes{separator}more notes\n" + MODELS + "x = weighted_sum(a, zz)\n"
    with pytest.raises(RecipeError) as info:
        checked(text)
    (diag,) = info.value.errors
    assert (diag.line, diag.column) == (5, 21)
    assert diag.source_line == "x = weighted_sum(a, zz)"
    assert format_diagnostic(diag).split("\n")[1:3] == [
        "   5 | x = weighted_sum(a, zz)",
        "     |                     ^^",
    ]


@pytest.mark.parametrize("separator", SEPARATORS, ids=lambda s: f"U+{ord(s):04X}")
def test_a_separator_in_a_string_keeps_the_quoted_line_whole(separator: str) -> None:
    text = MODELS + f'save a to "out{separator}name.safetensors" as fp4\n'
    with pytest.raises(RecipeError) as info:
        checked(text)
    (diag,) = info.value.errors
    assert (diag.code, diag.line, diag.column) == ("unknown-dtype", 4, 37)
    assert diag.source_line == f'save a to "out{separator}name.safetensors" as fp4'


def test_a_separator_before_a_syntax_error_keeps_its_line() -> None:
    with pytest.raises(RecipeError) as info:
        parse("# a\u2028b\nx = weighted_sum(a b)\n")
    (diag,) = info.value.diagnostics
    assert (diag.code, diag.line, diag.column) == ("missing-comma", 2, 20)
    assert diag.source_line == "x = weighted_sum(a b)"


# ---- the checker's parts ---------------------------------------------------------------------


def test_checker_parts_are_composed_not_inherited() -> None:
    """No class of the checker extends a class defined in another of its modules."""
    package = ROOT / "mergelang" / "check"
    defined: dict[str, str] = {}
    bases: list[tuple[str, str, str]] = []
    for path in sorted(package.glob("*.py")):
        tree = python_ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, python_ast.ClassDef):
                defined[node.name] = path.stem
                bases += [(path.stem, node.name, python_ast.unparse(b)) for b in node.bases]
    across = [
        f"{module}.{name}({base})"
        for module, name, base in bases
        if base in defined and defined[base] != module
    ]
    assert not across


# ---- documentation and examples ------------------------------------------------------------


def _doc_blocks() -> list[tuple[int, str]]:
    text = (ROOT / "docs" / "language.md").read_text(encoding="utf-8")
    return [
        (text[: m.start()].count("\n") + 1, m.group(1))
        for m in re.finditer(r"```merge\n(.*?)```", text, re.S)
    ]


def _run_with(block: str) -> dict[str, str]:
    first = block.splitlines()[0] if block else ""
    if not first.startswith("# run with:"):
        return {}
    words = shlex.split(first.removeprefix("# run with:"))
    return dict(w.split("=", 1) for w in words if w != "--set")


@pytest.mark.parametrize(("line", "block"), _doc_blocks(), ids=lambda v: str(v)[:12])
def test_language_doc_examples_check(line: int, block: str) -> None:
    result = check(parse(block, path=f"language.md:{line}"), set=_run_with(block))
    assert result.saves
    assert result.warnings == ()


@pytest.mark.parametrize("example", sorted((ROOT / "examples").glob("*.merge")), ids=str)
def test_examples_check_cleanly(example: Path) -> None:
    result = check(parse(example.read_text(encoding="utf-8"), path=str(example)))
    assert result.saves
    assert result.warnings == ()


def test_there_are_examples() -> None:
    assert len(list((ROOT / "examples").glob("*.merge"))) >= 3
    assert len(_doc_blocks()) >= 8


# ---- robustness ---------------------------------------------------------------------------------

LINES = [
    'model a = "a.safetensors"',
    "model b = $B",
    "model a = __A__",
    "m = weighted_sum(a, b, alpha=GRAD_V, base=0.3)",
    "m = add_difference(a, b, m, alpha=[1, 2])",
    "w = 1 - GRAD_V",
    "w = {IN00..OUT11: 0.5, default: 1}",
    "x = a * w + b * (1 - w)",
    "x = a * b",
    "cache c = weighted_sum(m, x, alpha=w)",
    'save m to "m.safetensors" as fp16 with ema=keep',
    'save x to "{blk}.safetensors"',
    "o1 = __A__ + __B__, 0.5, fp16",
    "o2 = __O1__ + b + __O3__, GRAD_A, 0.5, safetensors",
    "__A__",
    "for blk in IN00..IN02:",
    '    save a * {blk: 0.5, default: 1} to "l-{blk}.safetensors"',
    "    y = weighted_sum(a, b, alpha={blk: 1, default: 0})",
    "for v in [0.25, w, a]:",
    '    save weighted_sum(a, b, alpha=v) to "v-{v}.safetensors"',
    "convention sd_mecha",
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.sampled_from(LINES), max_size=10),
    st.dictionaries(st.sampled_from(["A", "B"]), st.sampled_from(["0.5", "x.ckpt", "GRAD_V"])),
)
def test_checker_reports_problems_at_real_places(
    lines: list[str], variables: dict[str, str]
) -> None:
    text = "\n".join(lines) + "\n"
    try:
        tree = parse(text)
    except RecipeError:
        return  # an indented line without its for: a syntax error, tested elsewhere
    try:
        result = check(tree, set=variables)
    except RecipeError as error:
        diagnostics = list(error.diagnostics)
    else:
        diagnostics = list(result.warnings)
        assert len({s.path for s in result.saves}) == len(result.saves)
    source = text.splitlines()
    for diag in diagnostics:
        assert diag.span is not None
        assert 1 <= diag.span.line <= len(source)
        assert 1 <= diag.span.column <= len(source[diag.span.line - 1]) + 1
        assert diag.source_line == source[diag.span.line - 1]
