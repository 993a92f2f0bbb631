"""Edge cases of the recipe language: odd input gets a located RecipeError, never a traceback,
and the formatter keeps meaning on it."""

from __future__ import annotations

import pytest

from mergelang.block_weights import BlockWeights
from mergelang.check import check
from mergelang.errors import RecipeError, Span
from mergelang.lang import ast
from mergelang.lang.formatter import format_text
from mergelang.lang.parser import MAX_NESTING, parse

MODELS = 'model a = "a.safetensors"\nmodel b = "b.safetensors"\n'


def parse_error(text: str) -> RecipeError:
    with pytest.raises(RecipeError) as info:
        parse(text)
    return info.value


def check_errors(text: str) -> list[tuple[str, int, int]]:
    with pytest.raises(RecipeError) as info:
        check(parse(text))
    return [
        (d.message, d.span.line, d.span.column)
        for d in info.value.diagnostics
        if d.severity == "error" and d.span is not None
    ]


# ---- deep nesting: a clean error, not RecursionError ---------------------------------------


@pytest.mark.parametrize(
    ("opening", "inner", "closing"),
    [
        ("[", "1", "]"),
        ("-", "GRAD_V", ""),
        ("{IN00: ", "1", "}"),
        ("weighted_sum(a, ", "a", ")"),
        ("a + (", "a", ")"),
    ],
)
def test_deeply_nested_expressions_are_a_syntax_error(
    opening: str, inner: str, closing: str
) -> None:
    text = MODELS + "x = " + opening * 5000 + inner + closing * 5000 + "\n"
    error = parse_error(text)
    (diag,) = error.diagnostics
    assert diag.message == f"this expression nests more than {MAX_NESTING} levels deep"
    assert diag.code == "too-deep"
    assert diag.span is not None and diag.span.line == 3


def test_a_very_long_sum_is_a_syntax_error() -> None:
    error = parse_error(MODELS + "x = " + " + ".join(["a"] * 3000) + "\n")
    (diag,) = error.diagnostics
    assert diag.code == "too-deep"
    assert diag.span == Span(3, 5, 3, 6)


def test_nesting_up_to_the_limit_parses_checks_and_formats() -> None:
    text = MODELS + "x = " + "-" * MAX_NESTING + 'GRAD_V\nsave a * x to "o.safetensors"\n'
    recipe = parse(text)
    check(recipe)
    assert parse(format_text(text)).statements[2] == recipe.statements[2]
    total = " + ".join(["a"] * MAX_NESTING)
    check(parse(MODELS + f'save {total} - b to "o.safetensors"\n'))


def test_deep_parentheses_without_operators_are_fine() -> None:
    recipe = parse(MODELS + "x = " + "(" * 5000 + "0.5" + ")" * 5000 + "\n")
    assignment = recipe.statements[2]
    assert isinstance(assignment, ast.Assign)
    assert assignment.value == ast.Number(0.5)


# ---- weights arithmetic chains ---------------------------------------------------------------


def test_a_chain_of_weights_arithmetic_stays_small() -> None:
    # Each line uses the previous value twice: the text describing a value must not double.
    lines = ["w0 = GRAD_V"] + [f"w{i} = w{i - 1} * 0.5 + w{i - 1} * 0.5" for i in range(1, 60)]
    text = MODELS + "\n".join(lines) + '\nsave a * w59 to "o.safetensors"\n'
    checked = check(parse(text))
    assert len(checked.saves) == 1


def test_long_weight_origins_read_as_the_block_weights() -> None:
    value = BlockWeights.scalar(0.5)
    for _ in range(40):
        value = value * 0.5 + value
        assert len(value.origin) <= 80
    assert "weights" in value.origin  # a collapsed operand
    short = BlockWeights.scalar(0.5) * 2
    assert short.origin == "0.5 * 2"


# ---- reserved words ------------------------------------------------------------------------


@pytest.mark.parametrize("word", ["to", "as", "with", "in"])
def test_reserved_words_cannot_name_a_value(word: str) -> None:
    text = MODELS + f'{word} = a\nsave {word} to "o.safetensors"\nsave b to "p.safetensors"\n'
    assert check_errors(text) == [(f"'{word}' is a reserved word and cannot name a value", 3, 1)]


def test_reserved_word_cannot_be_a_loop_variable() -> None:
    text = MODELS + 'for in in [1, 2]:\n    save weighted_sum(a, b) to "o{in}.safetensors"\n'
    assert check_errors(text) == [("'in' is a reserved word and cannot be a loop variable", 3, 5)]


def test_reserved_word_as_a_model_name() -> None:
    text = 'model to = "a.safetensors"\nsave to to "o.safetensors"\n'
    assert check_errors(text) == [("'to' is a reserved word and cannot name a value", 1, 7)]


@pytest.mark.parametrize("word", ["cache", "model", "save", "for", "presets", "convention"])
def test_statement_keyword_as_a_name_is_explained(word: str) -> None:
    (diag,) = parse_error(MODELS + f"{word} = a\n").diagnostics
    assert diag.message == f"'{word}' is a reserved word and cannot name a value"
    assert diag.span == Span(3, len(word) + 2, 3, len(word) + 3)


def test_merge_board_output_may_be_a_reserved_word() -> None:
    checked = check(parse("to = __A__ + __B__, 0.5\n"), set={"A": "a", "B": "b"})
    assert [s.path for s in checked.saves] == ["to.ckpt"]


# ---- messages ------------------------------------------------------------------------------


def test_unexpected_end_of_line_reads_well() -> None:
    (diag,) = parse_error("out#1 = __A__ + __B__, 0.5\n").diagnostics
    assert diag.message == "unexpected end of the line; expected '='"
    assert (diag.span.line, diag.span.column) == (1, 4)


def test_string_ended_by_an_escaped_quote_hints_at_the_backslash() -> None:
    (diag,) = parse_error(MODELS + 'save a to "C:\\out\\"\n').diagnostics
    assert diag.message == "this string is never closed"
    assert (diag.span.line, diag.span.column) == (3, 11)
    assert diag.hint is not None and '\\\\"' in diag.hint


# ---- save paths that name no file ------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("", "the save path is empty"),
        ("out/", "the save path 'out/' names no file"),
        (".", "the save path '.' names no file"),
        ("out\\\\..", "the save path 'out\\..' names no file"),
    ],
)
def test_a_save_path_must_name_a_file(path: str, message: str) -> None:
    text = MODELS + f'save weighted_sum(a, b) to "{path}"\n'
    assert check_errors(text) == [(message, 3, 28)]


def test_a_save_path_in_a_loop_may_be_completed_by_its_template() -> None:
    text = MODELS + 'for x in ["p", "q"]:\n    save weighted_sum(a, b) to "out/{x}"\n'
    assert [s.path for s in check(parse(text)).saves] == ["out/p", "out/q"]


# ---- odd but valid input ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "",
        "# only a comment",
        "\ufeff# a BOM, then a comment\r\n",
        "\n\n   \n\t\n",
        MODELS.replace("\n", "\r") + 'save a * -0 + b to "o.safetensors"\r',
        MODELS + 'for x in [1, 2]:\n\tsave a * x to "o{x}.safetensors"  # tab\n',
        "out  =  __A__  +  __B__ ,0.5 ,safetensors,fp16\n",
    ],
)
def test_odd_input_formats_idempotently_and_keeps_its_meaning(text: str) -> None:
    formatted = format_text(text)
    assert format_text(formatted) == formatted
    strip = [ast.dump(s, spans=False) for s in parse(text).statements]
    assert [ast.dump(s, spans=False) for s in parse(formatted).statements] == strip
