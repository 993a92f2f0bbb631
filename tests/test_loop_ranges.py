"""Numeric ranges in ``for`` loops: ``for v in 0.1..0.9 step 0.2:``."""

from __future__ import annotations

import pytest

import mergelang
from mergelang.lang import ast
from mergelang.lang.formatter import format_recipe


def _paths(text: str) -> list[str]:
    checked = mergelang.check(mergelang.parse(text), set={"A": "a.safetensors"})
    return [save.path for save in checked.saves]


def _loop(header: str) -> str:
    return f'{header}\n    save $A * v to "o-{{v}}.safetensors"\n'


def _error(text: str) -> str:
    with pytest.raises(mergelang.MergelangError) as info:
        mergelang.check(mergelang.parse(text), set={"A": "a.safetensors"})
    return str(info.value)


@pytest.mark.parametrize(
    ("header", "values"),
    [
        ("for v in 0.1..0.9 step 0.2:", ["0.1", "0.3", "0.5", "0.7", "0.9"]),
        ("for v in 1..3:", ["1", "2", "3"]),
        ("for v in 1..0 step -0.25:", ["1", "0.75", "0.5", "0.25", "0"]),
        ("for v in -0.5..0.5 step 0.5:", ["-0.5", "0", "0.5"]),
        ("for v in 0..1 step 0.3:", ["0", "0.3", "0.6", "0.9"]),  # the end is not reached
        ("for v in 0.7..0.7 step 0.1:", ["0.7"]),
    ],
)
def test_range_values_are_exact_decimals(header: str, values: list[str]) -> None:
    assert _paths(_loop(header)) == [f"o-{v}.safetensors" for v in values]


def test_range_values_drive_weights() -> None:
    text = 'for v in 0.25..0.75 step 0.25:\n    save $A * {IN00: v, default: 1} to "{v}.st"\n'
    checked = mergelang.check(mergelang.parse(text), set={"A": "a.safetensors"})
    assert [s.path for s in checked.saves] == ["0.25.st", "0.5.st", "0.75.st"]


def test_parse_builds_a_number_range() -> None:
    recipe = mergelang.parse(_loop("for v in -1..1.5 step 0.5:"))
    loop = recipe.statements[0]
    assert isinstance(loop, ast.For)
    assert loop.iterable == ast.NumberRange(ast.Number(-1.0), ast.Number(1.5), ast.Number(0.5))
    assert loop.iterable.span.column == 10


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        ("for v in 0.10 .. .90  step  .2:", "for v in 0.1..0.9 step 0.2:"),
        ("for v in 1..5:", "for v in 1..5:"),
        ("for v in 1.0..-1.0 step -1.0:", "for v in 1..-1 step -1:"),
    ],
)
def test_format_is_canonical_and_stable(written: str, canonical: str) -> None:
    text = format_recipe(mergelang.parse(_loop(written)))
    assert text.splitlines()[0] == canonical
    assert format_recipe(mergelang.parse(text)) == text


def test_step_is_still_a_name_elsewhere() -> None:
    text = "step = 0.5\nfor v in 0..1 step step_size_is_not_allowed:\n    x = 1\n"
    with pytest.raises(mergelang.MergelangError) as info:
        mergelang.parse(text)
    assert "2:20" in str(info.value)
    assert _paths('step = 0.5\nsave $A * step to "s.st"\n') == ["s.st"]


def test_zero_step_is_an_error_at_the_step() -> None:
    message = _error(_loop("for v in 0..1 step 0:"))
    assert "<recipe>:1:20: error: the step of a range cannot be 0" in message


def test_range_going_the_wrong_way_is_empty() -> None:
    message = _error(_loop("for v in 0.9..0.1 step 0.2:"))
    assert "<recipe>:1:10: error: the range 0.9..0.1 step 0.2 is empty" in message
    assert "0.9..0.1 step -0.2" in message
    message = _error(_loop("for v in 0..1 step -1:"))
    assert "<recipe>:1:10: error: the range 0..1 step -1 is empty" in message


def test_too_many_values_is_an_error() -> None:
    message = _error(_loop("for v in 0..100 step 0.01:"))
    assert "<recipe>:1:10: error: the range 0..100 step 0.01 has 10001 values" in message


def test_a_name_is_not_iterable_and_the_hint_shows_ranges() -> None:
    message = _error(_loop("for v in sideways:"))
    assert "not 'sideways'" in message
    assert "for v in 0.1..0.9 step 0.2:" in message


def test_ranges_nest_with_blocks() -> None:
    text = (
        "for blk in [IN00, OUT11]:\n"
        "    for v in 0.5..1 step 0.5:\n"
        '        save $A * {blk: v, default: 1} to "{blk}-{v}.st"\n'
    )
    assert _paths(text) == ["IN00-0.5.st", "IN00-1.st", "OUT11-0.5.st", "OUT11-1.st"]
