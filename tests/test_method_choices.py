"""String parameters limited to a set of choices: declared with ``Choices`` in the kernel's
signature, refused at check time at the value's line and column with the nearest choice."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import pytest

from mergelang.check import MethodCall, check
from mergelang.errors import RecipeError
from mergelang.lang.parser import parse
from mergelang.methods import Choices, Param, RegistrationError, get_method
from mergelang.methods.signature import read_signature

if TYPE_CHECKING:
    from torch import Tensor

MODELS = 'model a = "a.safetensors"\nmodel b = "b.safetensors"\nmodel c = "c.safetensors"\n'


def diagnostics(text: str) -> list[tuple[str | None, int, int, str, str | None]]:
    with pytest.raises(RecipeError) as info:
        check(parse(text))
    return [
        (d.code, d.span.line, d.span.column, d.message, d.hint)
        for d in info.value.diagnostics
        if d.span is not None
    ]


def test_a_value_outside_the_choices_is_a_located_error_naming_the_nearest() -> None:
    found = diagnostics(
        MODELS
        + 'x = ties(c, a, b, density=0.5, alpha=1, sign="cuont")\n'
        + 'y = dare(c, a, drop=0.5, alpha=1, seed=1, rescale="L1")\n'
        + 'z = slerp(a, b, variant="mecha")\n'
    )
    assert found == [
        (
            "unknown-choice",
            4,
            46,
            'argument \'sign\' of ties: sign is one of "sum", "count", not "cuont"',
            "did you mean 'count'?",
        ),
        (
            "unknown-choice",
            5,
            51,
            'argument \'rescale\' of dare: rescale is one of "inverse", "l1", not "L1"',
            "did you mean 'l1'?",
        ),
        (
            "unknown-choice",
            6,
            25,
            'argument \'variant\' of slerp: variant is one of "mergelang", "mergekit", '
            '"sd_mecha", not "mecha"',
            "did you mean 'sd_mecha'?",
        ),
    ]


def test_a_valid_choice_is_bound_as_written() -> None:
    recipe = check(
        parse(
            MODELS
            + 'x = ties(c, a, b, density=0.5, alpha=1, sign="count")\nsave x to "x.safetensors"\n'
        )
    )
    (step,) = recipe.steps
    assert isinstance(step.value, MethodCall)
    assert {arg.param: arg.value for arg in step.value.args}["sign"] == "count"


def test_the_choices_are_part_of_the_parameter() -> None:
    ties = get_method("ties")
    assert ties is not None
    sign = ties.param("sign")
    assert sign is not None and sign.choices == ("sum", "count")
    assert sign.choice_error("sum") is None
    assert sign.choice_error("most") == 'sign is one of "sum", "count", not "most"'


def _kernel(a: Tensor, *, mode: Annotated[str, Choices("x", "y")] = "z") -> Tensor:
    return a


def _number_kernel(a: Tensor, *, mode: Annotated[float, Choices("x")] = 1.0) -> Tensor:
    return a


def test_choices_are_checked_when_a_method_is_registered() -> None:
    with pytest.raises(RegistrationError, match="the default 'z' is not one of its choices"):
        read_signature("probe", _kernel, elementwise=False, stats=False, wants_key=False)
    with pytest.raises(RegistrationError, match="Choices are for str parameters"):
        read_signature("probe", _number_kernel, elementwise=False, stats=False, wants_key=False)
    with pytest.raises(RegistrationError, match="choices are a non-empty set"):
        Param("mode", "string", default="x", choices=())
