"""``mergelang.convert.mbw_each``: MBW Each command lines to model arithmetic."""

from __future__ import annotations

import pytest
from weights_helpers import in_sd_terms, sd_slots

from mergelang.check import LinearCombination, check
from mergelang.convert import detect_format
from mergelang.convert.mbw_each import convert_mbw_each
from mergelang.errors import RecipeError, format_diagnostic
from mergelang.lang.formatter import format_text
from mergelang.lang.parser import parse

LINES = (
    "O=merge/test04/SD15-75-IN_00, IN_A_00=0.75\n"
    "Preset_Weights=ALL_A, O=merge/test06/x, OUT_A_11=0.2, OUT_B_11=0.8, Model_A=sd-v1-5, "
    "Model_B=wd\n"
    "O=y.ckpt, weight_values=" + " ".join(["0.5"] * 24 + ["1"]) + ", base_alpha=0.3, M_B_00=0.25\n"
)


def test_lines_become_model_arithmetic() -> None:
    out = convert_mbw_each(LINES)
    assert out == (
        "# run with: --set MODEL_A=PATH --set MODEL_B=PATH\n"
        "model model_a = $MODEL_A\n"
        "model model_b = $MODEL_B\n"
        'model sd_v1_5 = "sd-v1-5"\n'
        'model wd = "wd"\n'
        "\n"
        "save model_a * {BASE: 1, IN00: 0.75, default: 0.5} + model_b * {BASE: 0, default: 0.5}"
        ' to "merge/test04/SD15-75-IN_00.safetensors"\n'
        "save sd_v1_5 * {OUT11: 0.2, default: 1} + wd * {OUT11: 0.8, default: 0}"
        ' to "merge/test06/x.safetensors"\n'
        "save model_a * {BASE: 0.7, OUT11: 0, default: 0.5}"
        " + model_b * {BASE: 0.3, M00: 0.25, OUT11: 1, default: 0.5}"
        ' to "y.ckpt"\n'
    )
    assert format_text(out) == out
    assert detect_format(LINES) == "mbw-each"
    checked = check(parse(out), set={"MODEL_A": "a", "MODEL_B": "b"})
    assert len(checked.saves) == 3


def test_preset_gives_b_the_preset_and_a_its_complement() -> None:
    out = convert_mbw_each("O=g, Preset_Weights=GRAD_V, Model_A=a, Model_B=b\n")
    from mergelang.presets import BUILTIN_PRESETS

    grad = sd_slots(BUILTIN_PRESETS["GRAD_V"])
    line = out.splitlines()[-1]
    in01 = grad[1]
    assert in01 is not None
    assert f"IN01: {1 - in01!r}" in line.split(" + ")[0]
    assert f"IN01: {in01!r}" in line.split(" + ")[1]


@pytest.mark.parametrize(
    ("text", "message", "place"),
    [
        ("O=x, IN_A_12=1\n", "unknown block key 'IN_A_12'", "1:6"),
        ("\nO=x, FOO=2\n", "unknown MBW Each key 'FOO'", "2:6"),
        ("O=x, IN_A_00=abc\n", "'abc' is not a number", "1:14"),
        ("IN_A_00=0.5\n", "no output", "1:1"),
        ("O=x, Preset_Weights=NOPE\n", "unknown preset 'NOPE'", "1:21"),
        ("O=x, weight_values=1,2\n", "needs 25 numbers", "1:6"),
        ("O=x\nO=x, IN_B_03=1\n", "already written by line 1", "2:3"),
    ],
)
def test_errors_name_line_and_column(text: str, message: str, place: str) -> None:
    with pytest.raises(RecipeError) as caught:
        convert_mbw_each(text, "lines.txt")
    rendered = format_diagnostic(caught.value.diagnostics[0])
    assert rendered.startswith(f"lines.txt:{place}: error: ")
    assert message in rendered


def mbw_each_weights(line: str) -> tuple[list[float], list[float], float]:
    """MBW Each's ``_run_merge`` parameter loop (ui_mbw_each.py), restated: sliders at their
    source defaults (0.5 for every A and B block, base_alpha 0); items split on commas; an
    item with exactly one ``=``; ``weight_values`` 25 numbers split on single spaces (B gets
    them, A 1 minus each); block keys ``IN|M|OUT _ A|B _ NN`` indexed IN 0-11, M 12, OUT 13-24."""
    weight_a = [0.5] * 25
    weight_b = [0.5] * 25
    base_alpha = 0.0
    for item in [x.strip() for x in line.split(",") if x != ""]:
        if len(item.split("=")) != 2:
            continue
        left, right = (part.strip() for part in item.split("="))
        if left.lower() == "weight_values" and len(right.split(" ")) == 25:
            weight_b = [float(x) for x in right.split(" ")]
            weight_a = [1 - x for x in weight_b]
        elif left.lower() == "base_alpha" and float(right) >= 0:
            base_alpha = float(right)
        elif len(left.split("_")) == 3:
            imo, side, number = left.split("_")
            index = int(number) + {"IN": 0, "M": 12, "OUT": 13}[imo]
            (weight_a if side == "A" else weight_b)[index] = float(right)
    return weight_a, weight_b, base_alpha


def converted_weights(line: str) -> tuple[list[float | None], list[float | None]]:
    """BASE then the 25 blocks of A's and B's weights in the converted recipe's one save."""
    checked = check(parse(convert_mbw_each(line)), set={"MODEL_A": "a", "MODEL_B": "b"})
    (save,) = checked.saves
    assert isinstance(save.model, LinearCombination)
    first, second = save.model.terms
    terms = [in_sd_terms(first.weight), in_sd_terms(second.weight)]
    base_a, slots_a = terms[0]
    base_b, slots_b = terms[1]
    return [base_a, *slots_a], [base_b, *slots_b]


@pytest.mark.parametrize(
    "line",
    [
        "O=merge/test04/SD15-75-IN_00, IN_A_00=0.75",
        "O=x, weight_values=" + " ".join(f"{i / 24:.4f}" for i in range(25)) + ", OUT_B_03=0.9",
        "O=x, IN_B_11=0.1, M_A_00=0.2, base_alpha=0.4, OUT_A_00=1",
    ],
)
def test_lines_give_the_weights_mbw_each_computes(line: str) -> None:
    weight_a, weight_b, base_alpha = mbw_each_weights(line)
    got_a, got_b = converted_weights(line)
    assert got_a == pytest.approx([1 - base_alpha, *weight_a], abs=1e-12)
    assert got_b == pytest.approx([base_alpha, *weight_b], abs=1e-12)
