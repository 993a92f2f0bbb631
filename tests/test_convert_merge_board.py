"""``mergelang.convert.merge_board``: Merge Board recipes to native statements."""

from __future__ import annotations

from pathlib import Path

import pytest

from mergelang.check import check
from mergelang.convert import convert, detect_format
from mergelang.convert.merge_board import convert_merge_board
from mergelang.errors import RecipeError, format_diagnostic
from mergelang.lang.formatter import format_text
from mergelang.lang.parser import parse

SAMPLE = """\
# Sample Recipe
a14 = __SD14__ + __F222__, 0.5
a15 = __SD15__ + __F222__, 0.5, fp16
mix14 = __O1__ + __WD13__ + __SD14__, 1.0, safetensors

mix15 = __O2__ + __WD13__ + __SD14__, 1.0, fp16, safetensors
SD-WD Fix = __SD15__ + __WD13__, 0.05
test06 = __O2__ + __O5__, 0.3, fp16, safetensors  # chained
# variables
__F222__ # You can use F111 instead.
Merge1 = SD1.5 + a14, GRAD_A, 0.5
"""

EXPECTED = """\
# run with: --set F222=PATH --set SD14=PATH --set SD15=PATH --set WD13=PATH
model f222 = $F222  # You can use F111 instead.
model sd14 = $SD14
model sd15 = $SD15
model wd13 = $WD13
model sd1_5 = "SD1.5"

# Sample Recipe
a14 = weighted_sum(sd14, f222, alpha=0.5)
save a14 to "a14.ckpt"
a15 = weighted_sum(sd15, f222, alpha=0.5)
save a15 to "a15.ckpt" as fp16
mix14 = add_difference(a14, wd13, sd14, alpha=1)
save mix14 to "mix14.safetensors"

mix15 = add_difference(a15, wd13, sd14, alpha=1)
save mix15 to "mix15.safetensors" as fp16
# Merge Board output: SD-WD Fix
sd_wd_fix = weighted_sum(sd15, wd13, alpha=0.05)
save sd_wd_fix to "SD-WD Fix.ckpt"
test06 = weighted_sum(a15, sd_wd_fix, alpha=0.3)  # chained
save test06 to "test06.safetensors" as fp16
# variables
Merge1 = weighted_sum(sd1_5, a14, alpha=GRAD_A, base=0.5)
save Merge1 to "Merge1.ckpt"
"""


def test_sample_recipe_converts_to_native_statements() -> None:
    out = convert_merge_board(SAMPLE)
    assert out == EXPECTED
    assert format_text(out) == out
    assert detect_format(SAMPLE) == "merge-board"
    assert convert(SAMPLE) == out


def test_converted_recipe_checks_with_the_same_saves() -> None:
    variables = {"SD14": "a", "SD15": "b", "F222": "c", "WD13": "d"}
    original = check(parse(SAMPLE), set=variables)
    converted = check(parse(convert_merge_board(SAMPLE)), set=variables)
    assert [(s.path, s.dtype) for s in converted.saves] == [
        (s.path, s.dtype) for s in original.saves
    ]
    assert converted.warnings == ()


def test_native_statements_are_kept_and_output_refs_replaced() -> None:
    text = (
        'model x = "x.safetensors"\n'
        "first = x + __B__, 0.25, fp16\n"
        "for v in [0.5, 1]:\n"
        '    save weighted_sum(__O1__, x, alpha=v) to "out-{v}.safetensors"\n'
    )
    assert convert_merge_board(text) == (
        "# run with: --set B=PATH\n"
        "model b = $B\n"
        "\n"
        'model x = "x.safetensors"\n'
        "first = weighted_sum(x, b, alpha=0.25)\n"
        'save first to "first.ckpt" as fp16\n'
        "for v in [0.5, 1]:\n"
        '    save weighted_sum(first, x, alpha=v) to "out-{v}.safetensors"\n'
    )


@pytest.mark.parametrize(
    ("text", "message", "place"),
    [
        (
            "a = __A__ + __B__, 0.5\nb = __O2__ + __A__, 0.5\n",
            "__O2__ refers to its own line",
            "2:5",
        ),
        (
            "a = __O2__ + __A__, 0.5\nb = __A__ + __B__, 0.5\n",
            "__O2__ refers to a later line",
            "1:5",
        ),
        ("a = __A__ + __B__ + __C__ + __D__, 0.5\n", "not 4", "1:29"),
    ],
)
def test_bad_lines_are_reported_with_line_and_column(text: str, message: str, place: str) -> None:
    with pytest.raises(RecipeError) as caught:
        convert_merge_board(text, "in.txt")
    rendered = format_diagnostic(caught.value.diagnostics[0])
    assert rendered.startswith(f"in.txt:{place}: error: ")
    assert message in rendered


@pytest.mark.parametrize(
    ("text", "message", "place"),
    [
        (
            "a = __A__ + __B__, 0.5\na = __A__ + __B__, 0.3\n",
            "the output 'a' is already made on line 1",
            "2:1",
        ),
        ("../a = __A__ + __B__, 0.5\n", "the output name '../a' makes no usable file name", "1:1"),
        (
            "for v in [1]:\n    a = __A__ + __B__, v\n",
            "Merge Board lines belong at the top level, not inside a for loop",
            "2:5",
        ),
        (
            'save __O1__ to "x"\na = __A__ + __B__, 0.5\n',
            "__O1__ refers to a later line (2)",
            "1:6",
        ),
    ],
)
def test_what_the_checker_refuses_is_not_converted(text: str, message: str, place: str) -> None:
    """The converter lowers lines as the checker does, so it refuses what the checker would."""
    with pytest.raises(RecipeError) as caught:
        convert_merge_board(text, "in.txt")
    rendered = format_diagnostic(caught.value.diagnostics[0])
    assert rendered.startswith(f"in.txt:{place}: error: {message}")


def test_an_output_with_braces_is_saved_to_its_name() -> None:
    out = convert_merge_board("a{b} = __A__ + __B__, 0.5\n")
    assert 'save a_b to "a{{b}}.ckpt"\n' in out
    result = check(parse(out), set={"A": "a", "B": "b"})
    assert [s.path for s in result.saves] == ["a{b}.ckpt"]


def test_syntax_error_keeps_the_parsers_location() -> None:
    with pytest.raises(RecipeError) as caught:
        convert_merge_board("a = __A__ + __B__, 0.5\nb = (\n", "in.txt")
    assert caught.value.diagnostics[0].span is not None
    assert caught.value.diagnostics[0].span.line == 2


def test_same_outputs_same_tensors(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    from mergelang import run
    from mergelang.testing import make_checkpoint

    models = {
        name: str(make_checkpoint(tmp_path / f"{name}.safetensors", "sd1", scale=0.0625, seed=i))
        for i, name in enumerate(("M1", "M2", "M3"))
    }
    recipe = (
        "first = __M1__ + __M2__, 0.3, fp16, safetensors\n"
        "sub/second = __O1__ + __M3__ + __M1__, 0.5, safetensors\n"
        "third = __O2__ + __M2__, GRAD_V, 0.2, bf16, safetensors\n"
    )
    results = {}
    for label, text in (("original", recipe), ("converted", convert_merge_board(recipe))):
        out = tmp_path / label
        run(text, set=models, out_dir=out, cache_dir=tmp_path / f"cache-{label}")
        results[label] = {
            str(p.relative_to(out)): load_file(p) for p in sorted(out.rglob("*.safetensors"))
        }
    assert sorted(results["original"]) == [
        "first.safetensors",
        "sub/second.safetensors",
        "third.safetensors",
    ]
    assert sorted(results["converted"]) == sorted(results["original"])
    for name, tensors in results["original"].items():
        other = results["converted"][name]
        assert sorted(other) == sorted(tensors)
        for key, tensor in tensors.items():
            assert other[key].dtype == tensor.dtype
            assert torch.equal(other[key], tensor), (name, key)


@pytest.mark.parametrize("dtype", ["F16", "F32"])
def test_a_line_without_fp16_keeps_the_input_precision(tmp_path: Path, dtype: str) -> None:
    # Merge Board merges the loaded tensors as they are and halves them only for `fp16`:
    # fp16 inputs give an fp16 file, fp32 inputs an fp32 one.
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    from mergelang import run
    from mergelang.testing import make_checkpoint

    models = {
        name: str(
            make_checkpoint(
                tmp_path / f"{name}.safetensors", "sd1", scale=1 / 16, seed=i, dtype=dtype
            )
        )
        for i, name in enumerate(("M1", "M2"))
    }
    out = tmp_path / "out"
    run(
        "plain = __M1__ + __M2__, 0.3, safetensors\n",
        set=models,
        out_dir=out,
        cache_dir=tmp_path / "c",
    )
    merged = load_file(out / "plain.safetensors")
    a, b = load_file(models["M1"]), load_file(models["M2"])
    want = torch.float16 if dtype == "F16" else torch.float32
    key = "model.diffusion_model.input_blocks.1.0.in_layers.2.weight"
    assert merged[key].dtype == want
    expected = ((1 - 0.3) * a[key].double() + 0.3 * b[key].double()).to(want)
    assert torch.allclose(merged[key].double(), expected.double(), rtol=0, atol=1e-3)
    assert all(t.dtype == want for k, t in merged.items() if t.is_floating_point())
