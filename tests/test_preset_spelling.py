"""Presets whose names hold ``*``, ``/`` or ``-`` have an identifier spelling that works.

The 13 names and their rows come from MBW's (and SuperMerger's) preset table; the spelling
rule is restated here: ``*`` -> ``_X``, ``/`` -> ``_DIV``, ``-`` -> ``_``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from mergelang.check import check
from mergelang.convert import convert
from mergelang.errors import RecipeError
from mergelang.lang.formatter import format_recipe
from mergelang.lang.parser import parse
from mergelang.presets import BUILTIN_PRESETS, PresetTable, preset_identifier

UNWRITABLE = {
    "REVERSE-SMOOTHSTEP": "REVERSE_SMOOTHSTEP",
    "SMOOTHSTEP*2": "SMOOTHSTEP_X2",
    "R_SMOOTHSTEP*2": "R_SMOOTHSTEP_X2",
    "SMOOTHSTEP*3": "SMOOTHSTEP_X3",
    "R_SMOOTHSTEP*3": "R_SMOOTHSTEP_X3",
    "SMOOTHSTEP*4": "SMOOTHSTEP_X4",
    "R_SMOOTHSTEP*4": "R_SMOOTHSTEP_X4",
    "SMOOTHSTEP/2": "SMOOTHSTEP_DIV2",
    "R_SMOOTHSTEP/2": "R_SMOOTHSTEP_DIV2",
    "SMOOTHSTEP/3": "SMOOTHSTEP_DIV3",
    "R_SMOOTHSTEP/3": "R_SMOOTHSTEP_DIV3",
    "SMOOTHSTEP/4": "SMOOTHSTEP_DIV4",
    "R_SMOOTHSTEP/4": "R_SMOOTHSTEP_DIV4",
}

MODELS = 'model a = "a.safetensors"\nmodel b = "b.safetensors"\n'


def _table_rows() -> dict[str, list[float]]:
    text = resources.files("mergelang.presets").joinpath("mbw.tsv").read_text(encoding="utf-8")
    rows = [line.split("\t") for line in text.splitlines()[1:] if line.strip()]
    return {name: [float(v) for v in values.split(",")][-25:] for name, values in rows}


def _alpha(expr: str) -> list[float]:
    recipe = check(parse(MODELS + f'm = weighted_sum(a, b, alpha={expr})\nsave m to "o"\n'))
    weights = recipe.steps[0].value.arg("alpha")  # type: ignore[union-attr]
    return [float(v) for v in weights.vector]


def _error(expr: str) -> RecipeError:
    with pytest.raises(RecipeError) as caught:
        check(parse(MODELS + f'save weighted_sum(a, b, alpha={expr}) to "o"\n', path="r.merge"))
    return caught.value


def test_exactly_the_thirteen_names_need_a_spelling() -> None:
    assert [n for n in BUILTIN_PRESETS if preset_identifier(n) != n] == list(UNWRITABLE)
    assert {n: preset_identifier(n) for n in UNWRITABLE} == UNWRITABLE


@pytest.mark.parametrize(("name", "spelled"), UNWRITABLE.items())
def test_every_spelling_gives_the_preset_row(name: str, spelled: str) -> None:
    assert _alpha(spelled) == _table_rows()[name]


@pytest.mark.parametrize(("name", "spelled"), UNWRITABLE.items())
def test_the_glued_form_is_an_error_naming_the_preset(name: str, spelled: str) -> None:
    diag = _error(name).diagnostics[0]
    assert diag.code == "ambiguous-preset"
    assert (diag.span.line, diag.span.column, diag.span.end_column) == (3, 31, 31 + len(name))
    assert diag.message.startswith(f"'{name}' reads as ")
    assert diag.message.endswith(f", but {name} is a preset")
    assert diag.hint is not None and f"write the preset {name} as {spelled}" in diag.hint


def test_smoothstep_times_2_is_no_longer_out11_at_2() -> None:
    diag = _error("SMOOTHSTEP*2").diagnostics[0]
    assert diag.message == "'SMOOTHSTEP*2' reads as SMOOTHSTEP * 2, but SMOOTHSTEP*2 is a preset"
    # written with spaces it is arithmetic, as any other expression
    spaced = _alpha("SMOOTHSTEP * 2")
    assert spaced[24] == 2.0 and spaced == [2 * v for v in _table_rows()["SMOOTHSTEP"]]
    assert _alpha("SMOOTHSTEP_X2")[24] == 0.0


def test_fmt_writes_the_spelling_and_keeps_arithmetic_spaced() -> None:
    text = MODELS + 'save weighted_sum(a, b, alpha=1 - SMOOTHSTEP/3) to "o"\n'
    assert "alpha=1 - SMOOTHSTEP_DIV3)" in format_recipe(parse(text))
    spaced = MODELS + 'save weighted_sum(a, b, alpha=SMOOTHSTEP / 3) to "o"\n'
    assert "alpha=SMOOTHSTEP / 3)" in format_recipe(parse(spaced))


def test_convert_writes_the_spelling() -> None:
    out = convert("SMOOTHSTEP*2\nREVERSE-SMOOTHSTEP\n", "supermerger")
    assert out == "weights = SMOOTHSTEP_X2\nweights_2 = REVERSE_SMOOTHSTEP\n"


def test_hints_suggest_a_spelling_that_works() -> None:
    diag = _error("SMOOTHSTP_X2").diagnostics[0]
    assert diag.code == "unknown-preset"
    assert diag.hint == "did you mean 'SMOOTHSTEP_X2'?"


def test_user_presets_get_the_same_spelling(tmp_path: Path) -> None:
    (tmp_path / "mine.tsv").write_text("MY-SOFT*2\t" + ",".join(["0.5"] * 25) + "\n")
    table = PresetTable().with_file(tmp_path / "mine.tsv")
    assert table.spelling("MY-SOFT*2") == "MY_SOFT_X2"
    assert table.get("MY_SOFT_X2") is table.get("MY-SOFT*2")
