"""``mergelang.lang.merge_board``: Merge Board lines lowered to native statements."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import fields

import pytest

from mergelang.check import InputRef, MethodCall, StepRef, check
from mergelang.errors import RecipeError, Span
from mergelang.lang import ast
from mergelang.lang.formatter import format_statement
from mergelang.lang.merge_board import (
    MergeBoardLowering,
    is_plain_name,
    lower_merge_board,
    output_path,
)
from mergelang.lang.parser import parse

VARIABLES = {"A": "a.ckpt", "B": "b.ckpt", "C": "c.ckpt", "SD15": "sd15.safetensors"}


def nodes(node: ast.Node) -> Iterator[ast.Node]:
    """``node`` and every node below it, depth first."""
    yield node
    for field in fields(node):
        value = getattr(node, field.name)
        for child in value if isinstance(value, tuple) else (value,):
            if isinstance(child, ast.Node):
                yield from nodes(child)


def problems(recipe: ast.Recipe) -> list[tuple[str | None, str, int, int]]:
    return [
        (n.message, n.code, n.span.line, n.span.column)
        for stmt in recipe.statements
        for n in nodes(stmt)
        if isinstance(n, ast.Invalid)
    ]


def check_errors(text: str) -> list[tuple[str, str, int, int]]:
    with pytest.raises(RecipeError) as info:
        check(parse(text), set=VARIABLES)
    return [(d.message, d.code, d.line or 0, d.column or 0) for d in info.value.errors]


# ---- what a line means -----------------------------------------------------------------------


def test_a_line_is_a_merge_and_its_save() -> None:
    recipe = parse(
        "a14 = __A__ + __B__, 0.5, fp16\n"
        "mix = __O1__ + SD1.5 + a14, 1.0, 0.25, safetensors\n"
        "SD-WD Fix = __SD15__ + $B, GRAD_V, bf16, ckpt\n"
    )
    lowered = lower_merge_board(recipe)
    assert [format_statement(s) for s in lowered.statements] == [
        "a14 = weighted_sum(__A__, __B__, alpha=0.5)",
        'save a14 to "a14.ckpt" as fp16',
        "mix = add_difference(a14, SD1.5, a14, alpha=1, base=0.25)",
        'save mix to "mix.safetensors"',
        "SD-WD Fix = weighted_sum(__SD15__, $B, alpha=GRAD_V)",
        'save SD-WD Fix to "SD-WD Fix.ckpt" as bf16',
    ]
    assert all(not isinstance(s, ast.MergeBoard) for s in lowered.statements)
    merges = [s for s in lowered.statements if isinstance(s, ast.Assign)]
    assert [m.origin for m in merges] == ["merge_board"] * 3
    assert lowered.comments == recipe.comments
    assert lowered.source == recipe.source


def test_operands_are_variables_names_outputs_or_literal_checkpoints() -> None:
    recipe = parse(
        'model sd15 = "x.safetensors"\n'
        "first = sd15 + __A__, 0.5\n"
        "second = __O1__ + first + SD1.5 + later, 0.5\n"
        "later = sd15 + wd-1-3.ckpt [abcdef12], 0.5\n"
    )
    lines = MergeBoardLowering(recipe).lines
    first, second, later = (line.operands for line in lines)
    assert first == (ast.Name("sd15"), ast.Variable("A", "dunder"))
    ref, name, literal, forward = second
    assert ref == ast.Name("first")
    assert isinstance(ref, ast.Name)
    assert (ref.written, ref.span) == ("__O1__", Span(3, 10, 3, 16))
    assert name == ast.Name("first")
    assert literal == ast.ModelLiteral("SD1.5")
    assert forward == ast.Name("later")  # defined below: the checker says it is too early
    assert later == (ast.Name("sd15"), ast.ModelLiteral("wd-1-3.ckpt [abcdef12]"))


def test_lowered_nodes_point_at_the_merge_board_text() -> None:
    recipe = parse("mix = __A__ + __B__, 0.5, fp16\n")
    (line,) = MergeBoardLowering(recipe).lines
    source = line.source
    assert line.assign.span == source.span == Span(1, 1, 1, 31)
    assert line.assign.name_span == source.output_span == Span(1, 1, 1, 4)
    assert line.call is not None
    assert [a.span for a in line.call.args] == [
        Span(1, 7, 1, 12),
        Span(1, 15, 1, 20),
        Span(1, 22, 1, 25),
    ]
    assert line.save.path == ast.String("mix.ckpt")
    assert line.save.path.span == source.output_span
    assert line.save.dtype is not None
    assert line.save.dtype.span == Span(1, 27, 1, 31)


def test_an_output_with_braces_saves_to_its_own_name() -> None:
    (line,) = MergeBoardLowering(parse("a{b} = __A__ + __B__, 0.5\n")).lines
    assert line.save.path.value == "a{{b}}.ckpt"
    result = check(parse("a{b} = __A__ + __B__, 0.5\n"), set=VARIABLES)
    assert [s.path for s in result.saves] == ["a{b}.ckpt"]


def test_a_recipe_without_merge_board_lowers_to_itself() -> None:
    recipe = parse('model a = "a"\nfor v in [0.5, 1]:\n    save a * v to "o-{v}.ckpt"\n')
    assert lower_merge_board(recipe) is recipe


@pytest.mark.parametrize(
    ("output", "flag", "path"),
    [
        ("a14", False, "a14.ckpt"),
        ("SD-WD Fix", True, "SD-WD Fix.safetensors"),
        ('a:b|c?"d"<e>*\\f', False, "a-b-c--d--e---f.ckpt"),
        ("sub/dir/name", True, "sub/dir/name.safetensors"),
        ("/lead//x/ ", False, "lead/x.ckpt"),
    ],
)
def test_output_path(output: str, flag: bool, path: str) -> None:
    assert output_path(output, safetensors=flag) == path


@pytest.mark.parametrize(
    ("output", "plain"), [("a14", True), ("SD-WD Fix", False), ("to", False), ("in", False)]
)
def test_only_plain_outputs_are_names(output: str, plain: bool) -> None:
    assert is_plain_name(output) is plain


# ---- problems, where they stand ---------------------------------------------------------------

BAD = (
    "save __O1__ to 'x'\n".replace("'", '"')
    + "first = __A__ + __O1__, __O2__\n"
    + "second = __A__ + __B__ + __C__ + __A__, 0.5\n"
    + "first = __A__ + __B__, 0.5\n"
    + "../up = __A__ + __B__, 0.5\n"
    + "x = __O9__ * 0.5\n"
    + "for v in [1]:\n"
    + "    inner = __A__ + __B__, v\n"
)

BAD_PROBLEMS = [
    ("__O1__ refers to a later line (2)", "output-ref", 1, 6),
    ("__O1__ refers to this line's own output", "output-ref", 2, 17),
    ("__O2__ refers to a later line (3)", "output-ref", 2, 25),
    (
        "a Merge Board line merges 2 models (weighted sum) or 3 (add difference), not 4",
        "merge-board",
        3,
        34,
    ),
    ("the output 'first' is already made on line 2", "duplicate-name", 4, 1),
    ("the output name '../up' makes no usable file name", "merge-board", 5, 1),
    ("__O9__ refers to Merge Board line 9, but the recipe has 4", "output-ref", 6, 5),
    ("Merge Board lines belong at the top level, not inside a for loop", "not-in-loop", 8, 5),
]


def test_problems_are_left_where_they_are_found() -> None:
    lowered = lower_merge_board(parse(BAD))
    found = problems(lowered)
    assert sorted(found, key=lambda p: (p[2], p[3])) == BAD_PROBLEMS


def test_the_checker_reports_them_in_place() -> None:
    assert check_errors(BAD) == BAD_PROBLEMS


def test_a_reference_to_a_line_that_defines_nothing_reports_nothing_more() -> None:
    text = 'model x = "x"\nx = __A__ + __B__, 0.5\ny = __O1__ + __B__, 0.5\n'
    (line_x, line_y) = MergeBoardLowering(parse(text)).lines
    assert line_x.name_taken
    assert line_x.statements == (line_x.assign,)
    (ref, _) = line_y.operands
    assert isinstance(ref, ast.Invalid)
    assert ref.message is None
    with pytest.raises(RecipeError) as info:
        check(parse(text), set=VARIABLES)
    assert [(d.severity, d.message, d.line) for d in info.value.diagnostics] == [
        ("warning", "model 'x' is never used", 1),
        ("error", "'x' is already defined on line 1", 2),
    ]


# ---- the checker only sees native statements ----------------------------------------------------


def test_checking_a_lowered_recipe_is_checking_the_recipe() -> None:
    text = (
        "a = __A__ + __B__, 0.5, fp16\n"
        "b = __O1__ + __C__ + __A__, GRAD_V, 0.2, safetensors\n"
        "save __O2__ * 0.5 + a * 0.5 to 'half.safetensors'\n".replace("'", '"')
    )
    direct = check(parse(text), set=VARIABLES)
    lowered = check(lower_merge_board(parse(text)), set=VARIABLES)
    assert direct.steps == lowered.steps
    assert direct.saves == lowered.saves
    assert dict(direct.models) == dict(lowered.models)
    b = direct.step("b")
    assert b.origin == "merge_board"
    assert isinstance(b.value, MethodCall)
    assert [b.value.arg(n) for n in "abc"] == [StepRef("a"), InputRef("__C__"), InputRef("__A__")]


def test_messages_show_an_output_reference_as_written() -> None:
    text = "a = __A__ + __B__, 0.5\nsave __O1__ + 0.5 to 'x'\n".replace("'", '"')
    assert check_errors(text) == [("cannot add a model (__O1__) and a number", "type", 2, 6)]


def test_an_operand_that_is_no_model_says_so() -> None:
    text = "w = 0.5\nm = w + __A__, 0.5\nn = __A__ + __B__ + w + w, 0.5\n"
    assert check_errors(text) == [
        ("a Merge Board operand must be a model, not a number", "type", 2, 5),
        ("a Merge Board operand must be a model, not a number", "type", 3, 21),
        ("a Merge Board operand must be a model, not a number", "type", 3, 25),
        (
            "a Merge Board line merges 2 models (weighted sum) or 3 (add difference), not 4",
            "merge-board",
            3,
            25,
        ),
    ]


def test_a_reserved_word_output_names_its_step_and_file() -> None:
    result = check(parse("in = __A__ + __B__, 0.5\n"), set=VARIABLES)
    assert [s.name for s in result.steps] == ["in"]
    assert [s.path for s in result.saves] == ["in.ckpt"]
