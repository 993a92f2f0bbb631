"""``mergelang.convert.supermerger``: block weights, elemental strings, merge recipes."""

from __future__ import annotations

import json

import pytest

from mergelang.convert import convert, detect_format
from mergelang.convert.supermerger import convert_supermerger
from mergelang.convert.supermerger_weights import (
    convert_block_weights,
    format_elemental,
    parse_elemental,
)
from mergelang.errors import RecipeError, format_diagnostic
from mergelang.lang.formatter import format_text
from mergelang.lang.parser import parse


def _elemental_parses() -> bool:
    try:
        parse('x = {"attn2" in [OUT03]: 0.5}\n')
    except RecipeError:
        return False
    return True


ELEMENTAL = pytest.mark.skipif(
    not _elemental_parses(), reason="the parser does not read elemental entries yet"
)


def test_block_weight_strings() -> None:
    sd = ",".join(["0.5"] + ["1"] * 25)
    assert convert_block_weights(sd) == "[0.5, " + ", ".join(["1"] * 25) + "]"
    assert convert_block_weights(",".join(["0.25"] * 20)) == "[" + ", ".join(["0.25"] * 20) + "]"
    assert convert_block_weights(" grad_v ") == "GRAD_V"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("OUT03 OUT04:attn2:0.5", ['"attn2" in [OUT03, OUT04]: 0.5']),
        ("NOT OUT03:attn:0.5", ['"attn" not in [OUT03]: 0.5']),
        (":attn2 attn1.to_out:0.5", ['"attn2": 0.5', '"attn1.to_out": 0.5']),
        ("OUT03-OUT05:ff:0.1", ['"ff" in [OUT03, OUT04, OUT05]: 0.1']),
        ("IN01:NOT norm:0.7", ['not "norm" in [IN01]: 0.7']),
        ("OUT05:NOT attn proj:0.2", ['not "attn proj" in [OUT05]: 0.2']),
        ("IN01:a:1, OUT11:b:0\n:c:0.25", ['"a" in [IN01]: 1', '"b" in [OUT11]: 0', '"c": 0.25']),
    ],
)
def test_elemental_entries(text: str, expected: list[str]) -> None:
    assert [format_elemental(e) for e in parse_elemental(text)] == expected


@pytest.mark.parametrize(
    ("text", "message", "place"),
    [
        ("OUT03 OUT13:attn2:0.5", "unknown block 'OUT13'", "1:7"),
        ("IN00:a:1\nx:1", "BLOCKS:ELEMENTS:RATIO", "2:1"),
        ("OUT03:a:zz", "'zz' is not a number", "1:9"),
        ("OUT03:NOT:1", "NOT needs the element it excludes", "1:7"),
        ("1,2,3", "not 3", "1:1"),
        ("0.5,x" + ",1" * 24, "'x' is not a number", "1:5"),
        ("NOPE_PRESET", "unknown preset", "1:1"),
    ],
)
def test_errors_name_line_and_column(text: str, message: str, place: str) -> None:
    with pytest.raises(RecipeError) as caught:
        convert_supermerger(text, "sm.txt")
    rendered = format_diagnostic(caught.value.diagnostics[0])
    assert rendered.startswith(f"sm.txt:{place}: error: ")
    assert message in rendered


WEIGHTS_TEXT = "0.5," + ",".join(["1"] * 25) + "\nOUT03 OUT04:attn2:0.5\nGRAD_V\n"
WEIGHTS_EXPECTED = (
    'weights = {BASE: 0.5, default: 1, "attn2" in [OUT03, OUT04]: 0.5}\nweights_2 = GRAD_V\n'
)


def test_text_form() -> None:
    assert detect_format(WEIGHTS_TEXT) == "supermerger"
    assert convert(WEIGHTS_TEXT) == WEIGHTS_EXPECTED
    assert convert_supermerger(":attn:0.5\n") == 'elemental = {"attn": 0.5}\n'
    plain = convert_supermerger("FLAT_25\n" + ",".join(["0"] * 19) + "\n")
    assert plain == "weights = FLAT_25\nweights_2 = [" + ", ".join(["0"] * 19) + "]\n"
    assert format_text(plain) == plain


RECIPE = {
    "type": "sd-webui-supermerger",
    "weights_alpha": "0.1," + ",".join(["0.5"] * 24) + ",0.9",
    "weights_beta": "",
    "model_a": "a.safetensors",
    "model_b": "b.safetensors",
    "model_c": "",
    "base_alpha": 0.1,
    "mode": "Weight sum:A*(1-alpha)+B*alpha",
    "mbw": True,
    "elemental_merge": "",
    "calcmode": "normal",
}


def test_sd_merge_recipe_json() -> None:
    metadata = {"__metadata__": {"sd_merge_recipe": json.dumps(RECIPE)}}
    out = convert(json.dumps(metadata))
    assert out == (
        "convention supermerger\n"
        'model model_a = "a.safetensors"\n'
        'model model_b = "b.safetensors"\n'
        "\n"
        "# SuperMerger: mode Weight sum:A*(1-alpha)+B*alpha, calcmode normal\n"
        "merged = weighted_sum(model_a, model_b, alpha=[0.1, "
        + ", ".join(["0.5"] * 24)
        + ', 0.9])\nsave merged to "merged.safetensors"\n'
    )
    assert format_text(out) == out


@pytest.mark.parametrize(
    ("changes", "call"),
    [
        (
            {"mode": "Add difference", "model_c": "c", "mbw": False, "base_alpha": 0.4},
            "add_difference(model_a, model_b, model_c, alpha=0.4)",
        ),
        (
            {
                "mode": "Triple sum",
                "model_c": "c",
                "mbw": False,
                "base_alpha": 0.2,
                "base_beta": 0.3,
            },
            "triple_sum(model_a, model_b, model_c, alpha=0.2, beta=0.3)",
        ),
        (
            {
                "mode": "sum Twice",
                "model_c": "c",
                "mbw": False,
                "base_alpha": 0.2,
                "base_beta": 0.3,
            },
            "sum_twice(model_a, model_b, model_c, alpha=0.2, beta=0.3)",
        ),
        (
            {"calcmode": "cosineA", "mbw": False, "base_alpha": 0.5},
            "cosine_a(model_a, model_b, alpha=0.5)",
        ),
        (
            {"calcmode": "trainDifference", "model_c": "c", "mbw": False, "base_alpha": 1},
            "train_difference(model_a, model_b, model_c, alpha=1)",
        ),
        (
            {"calcmode": "smoothAdd", "model_c": "c", "mbw": False, "base_alpha": 1},
            "smooth_add(model_a, model_b, model_c, alpha=1)",
        ),
        (
            {"calcmode": "tensor", "mbw": False, "base_alpha": 0.5, "base_beta": 0.1},
            "tensor_sum(model_a, model_b, alpha=0.5, beta=0.1)",
        ),
    ],
)
def test_modes_and_calcmodes(changes: dict[str, object], call: str) -> None:
    out = convert_supermerger(json.dumps({**RECIPE, **changes}))
    assert f"merged = {call}\n" in out
    assert format_text(out) == out


def test_unknown_calcmode_and_missing_model() -> None:
    with pytest.raises(RecipeError, match="calcmode 'self' has no mergelang method"):
        convert_supermerger(json.dumps({**RECIPE, "calcmode": "self"}))
    with pytest.raises(RecipeError, match="needs model_c"):
        convert_supermerger(json.dumps({**RECIPE, "mode": "Add difference"}))
    with pytest.raises(RecipeError) as caught:
        convert_supermerger('{"mode": \n', "m.json")
    assert format_diagnostic(caught.value.diagnostics[0]).startswith("m.json:2:1: error: ")


def test_a1111_webui_recipe() -> None:
    webui = {
        "type": "webui",
        "primary_model_hash": "aaa",
        "secondary_model_hash": "bbb",
        "interp_method": "Weighted sum",
        "multiplier": 0.3,
        "save_as_half": True,
    }
    assert convert(json.dumps({"sd_merge_recipe": webui})) == (
        'model primary = "aaa"\nmodel secondary = "bbb"\n\n'
        "merged = weighted_sum(primary, secondary, alpha=0.3)\n"
        'save merged to "merged.safetensors" as fp16\n'
    )


@ELEMENTAL
def test_elemental_output_round_trips_through_check() -> None:
    from mergelang.check import check

    recipe = (
        'model a = "a.safetensors"\nmodel b = "b.safetensors"\n'
        + convert_supermerger(WEIGHTS_TEXT)
        + 'save weighted_sum(a, b, alpha=weights) to "o.safetensors"\n'
        + 'save weighted_sum(a, b, alpha=weights_2) to "p.safetensors"\n'
    )
    assert format_text(recipe) == recipe
    check(parse(recipe))


# SuperMerger's elementals() (scripts/mergers/mergers.py at 0b1c491), restated: each entry
# BLOCKS:ELEMENTS:RATIO, NOT before either list inverts it, an element is a substring of the
# key, a blank BLOCKS is every block, and the last matching entry wins over the block weight.
def _supermerger_elemental(deep: list[str], block: str, key: str, alpha: float) -> float:
    for d in deep:
        if d.count(":") != 2:
            continue
        dbs_text, dws_text, dr = d.split(":")
        dbs, dws = dbs_text.split(" "), dws_text.split(" ")
        dbn, dbs = (True, dbs[1:]) if dbs[0] == "NOT" else (False, dbs)
        dwn, dws = (True, dws[1:]) if dws[0] == "NOT" else (False, dws)
        flag = dbn
        for db in dbs:
            if db == block:
                flag = not dbn
        if flag or dbs == [""]:
            flag = dwn
        else:
            continue
        for dw in dws:
            if dw in key:
                flag = not dwn
        if flag:
            alpha = float(dr)
    return alpha


def test_a_json_list_elemental_is_kept_key_by_key() -> None:
    from weights_helpers import SD_SCHEME

    from mergelang.arch import SD1
    from mergelang.arch.layout import checkpoint_layout
    from mergelang.check import check
    from mergelang.lang.parser import parse

    deep = [
        "OUT03 OUT04 OUT05:attn2:0.2",
        "",
        "IN01:NOT attn1:0.7",
        ":norm:0.9",
        "OUT05:ff:1",
        "OUT06::0.3",
    ]
    recipe = {**RECIPE, "elemental_merge": deep}
    out = convert(json.dumps(recipe))
    alpha = check(parse(out)).steps[0].value.arg("alpha")  # type: ignore[union-attr]
    resolved = alpha.resolve(SD_SCHEME)
    blocks = ["BASE", *SD_SCHEME.blocks]
    weights = [0.1, *[0.5] * 24, 0.9]
    differ = 0
    for key in checkpoint_layout("sd1", scale=1 / 40):
        block = SD1.block_of(key, "supermerger")
        if block is None or not key.startswith("model.diffusion_model."):
            continue
        expected = _supermerger_elemental(deep, block, key, weights[blocks.index(block)])
        assert resolved.value(block, key) == expected, key
        differ += expected != weights[blocks.index(block)]
    assert differ > 100  # the elementals touch many keys


def test_a_blank_element_is_every_key_of_the_blocks() -> None:
    assert [format_elemental(e) for e in parse_elemental("OUT05::1")] == ['"*" in [OUT05]: 1']
    assert [format_elemental(e) for e in parse_elemental("::0.5")] == ['"*": 0.5']
