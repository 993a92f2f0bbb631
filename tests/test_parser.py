"""The parser: recipe text -> AST, with exact spans, comments, and friendly syntax errors.

Golden files: tests/golden/parser/<fixture>.txt (AST dumps of tests/recipes/*.merge) and
tests/golden/errors/<fixture>.txt (diagnostics of tests/recipes/errors/syntax_*.merge).
Regenerate with MERGELANG_UPDATE_GOLDEN=1.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mergelang.errors import RecipeError, Span, format_diagnostic
from mergelang.io.text_files import read_recipe_text
from mergelang.lang import ast
from mergelang.lang.grammar import grammar_text
from mergelang.lang.parser import parse, parse_file

TESTS = Path(__file__).parent
RECIPES = TESTS / "recipes"
GOLDEN = TESTS / "golden"
UPDATE = os.environ.get("MERGELANG_UPDATE_GOLDEN") == "1"

VALID_RECIPES = sorted(RECIPES.glob("*.merge"))
SYNTAX_ERRORS = sorted((RECIPES / "errors").glob("syntax_*.merge"))


def assert_golden(path: Path, actual: str) -> None:
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual, encoding="utf-8")
        return
    assert path.is_file(), f"missing golden file {path}: run with MERGELANG_UPDATE_GOLDEN=1"
    assert actual == path.read_text(encoding="utf-8")


def syntax_error(text: str) -> RecipeError:
    with pytest.raises(RecipeError) as info:
        parse(text, path="r.merge")
    return info.value


# ---- golden files -----------------------------------------------------------------------------


@pytest.mark.parametrize("recipe", VALID_RECIPES, ids=lambda p: p.stem)
def test_ast_dump_matches_golden(recipe: Path) -> None:
    tree = parse(recipe.read_text(encoding="utf-8"), path=recipe.name)
    assert_golden(GOLDEN / "parser" / f"{recipe.stem}.txt", ast.dump(tree))


@pytest.mark.parametrize("recipe", SYNTAX_ERRORS, ids=lambda p: p.stem)
def test_syntax_error_matches_golden(recipe: Path) -> None:
    error = syntax_error(recipe.read_text(encoding="utf-8"))
    assert len(error.diagnostics) >= 1
    text = "".join(f"{format_diagnostic(d)}\n  code: {d.code}\n" for d in error.diagnostics)
    text = text.replace("r.merge", recipe.name)
    assert_golden(GOLDEN / "errors" / f"{recipe.stem}.txt", text)


def test_there_are_fixtures() -> None:
    assert len(VALID_RECIPES) >= 6
    assert len(SYNTAX_ERRORS) >= 20


# ---- structure and spans --------------------------------------------------------------------


def test_issue_recipe_statements() -> None:
    recipe = parse_file(RECIPES / "issue_example.merge")
    kinds = [type(s).__name__ for s in recipe.statements]
    assert kinds == [
        "ModelDecl",
        "ModelDecl",
        "Assign",
        "Assign",
        "Assign",
        "Assign",
        "Assign",
        "Save",
        "For",
    ]
    wd = recipe.statements[1]
    assert wd == ast.ModelDecl("wd", ast.Variable("WD13", "dollar"))
    assert wd.span == Span(3, 1, 3, 17)
    assert wd.name_span == Span(3, 7, 3, 9)


def test_merge_board_line_parts_and_columns() -> None:
    recipe = parse("SD-WD Fix = __SD15__ + __O1__ + SD1.5, GRAD_A, 0.5, fp16, safetensors\n")
    (line,) = recipe.statements
    assert isinstance(line, ast.MergeBoard)
    assert line.output == "SD-WD Fix"
    assert line.output_span == Span(1, 1, 1, 10)
    assert line.operands == (
        ast.Variable("SD15", "dunder"),
        ast.OutputRef(1),
        ast.ModelLiteral("SD1.5"),
    )
    assert [op.span.column for op in line.operands] == [13, 24, 33]
    assert [op.span.end_column for op in line.operands] == [21, 30, 38]
    assert line.multiplier == ast.Name("GRAD_A")
    assert line.multiplier.span.column == 40
    assert line.base == ast.Number(0.5)
    assert line.dtype == ast.Name("fp16")
    assert line.format == ast.Name("safetensors")


def test_merge_board_operands_may_contain_plus_and_a_hash_suffix() -> None:
    recipe = parse("x = sd+wd.ckpt + wd-1-3.ckpt [abcdef12] + $C, 0.5\n")
    (line,) = recipe.statements
    assert isinstance(line, ast.MergeBoard)
    assert line.operands == (
        ast.ModelLiteral("sd+wd.ckpt"),
        ast.ModelLiteral("wd-1-3.ckpt [abcdef12]"),
        ast.Variable("C", "dollar"),
    )
    assert line.operands[1].span == Span(1, 18, 1, 40)


def test_merge_board_spacing_is_flexible() -> None:
    loose = parse("a14=__SD14__   +\t__F222__ ,0.5,fp16\n")
    tight = parse("a14 = __SD14__ + __F222__, 0.5, fp16\n")
    assert loose == tight


def test_merge_board_flags_in_any_order_compare_equal() -> None:
    a = parse("x = __A__ + __B__, 0.5, 0.2, safetensors, fp16\n")
    b = parse("x = __A__ + __B__, 0.5, fp16, 0.2, safetensors\n")
    assert a == b


def test_native_lines_are_not_merge_board_lines() -> None:
    recipe = parse(
        "x = a + b\n"
        "each = sd15 * {IN00: 0.75, default: 1} + wd * 0\n"
        "y = a + b * {IN00: 1, default: 0}\n"
        'save a + b to "x.safetensors"\n'
        'model c = "a + b, c.safetensors"\n'
    )
    assert not any(isinstance(s, ast.MergeBoard) for s in recipe.statements)


def test_var_doc_line() -> None:
    recipe = parse("__F222__ # You can use F111 instead.\n")
    assert recipe.statements == (ast.VarDoc("F222"),)
    assert recipe.comments == (ast.Comment("# You can use F111 instead.", trailing=True),)


def test_precedence_and_left_associativity() -> None:
    (stmt,) = parse("x = a - b - c * d / e + -f\n").statements
    assert isinstance(stmt, ast.Assign)
    a, b, c, d, e, f = (ast.Name(n) for n in "abcdef")
    expected = ast.BinaryOp(
        "+",
        ast.BinaryOp("-", ast.BinaryOp("-", a, b), ast.BinaryOp("/", ast.BinaryOp("*", c, d), e)),
        ast.Negate(f),
    )
    assert stmt.value == expected


def test_minus_before_a_literal_folds_into_the_number() -> None:
    (stmt,) = parse("x = [-1, - 0.5, --2, -(3)]\n").statements
    assert isinstance(stmt, ast.Assign)
    assert stmt.value == ast.Vector(
        (ast.Number(-1.0), ast.Number(-0.5), ast.Number(2.0), ast.Number(-3.0))
    )


@pytest.mark.parametrize(
    ("text", "value"),
    [("1", 1.0), ("0.5", 0.5), (".5", 0.5), ("5.", 5.0), ("1e-05", 1e-05), ("2E+3", 2000.0)],
)
def test_number_forms(text: str, value: float) -> None:
    (stmt,) = parse(f"x = {text}\n").statements
    assert isinstance(stmt, ast.Assign)
    assert stmt.value == ast.Number(value)


def test_strings_escapes_and_placeholders() -> None:
    (stmt,) = parse('save a to "C:\\out\\{blk}-\\"q\\"-{{x}}-{v}.st"\n').statements
    assert isinstance(stmt, ast.Save)
    path = stmt.path
    assert path.value == 'C:\\out\\{blk}-"q"-{{x}}-{v}.st'
    assert path.names == ("blk", "v")
    assert [p.span for p in path.placeholders] == [Span(1, 19, 1, 24), Span(1, 37, 1, 40)]
    assert path.render({"blk": "IN00", "v": "0.5"}) == 'C:\\out\\IN00-"q"-{x}-0.5.st'


def test_calls_keep_argument_order() -> None:
    (stmt,) = parse("x = weighted_sum(a, b, alpha=0.5, base=0.3,)\n").statements
    assert isinstance(stmt, ast.Assign)
    call = stmt.value
    assert isinstance(call, ast.Call)
    assert call.positional == (ast.Name("a"), ast.Name("b"))
    assert [k.name for k in call.keywords] == ["alpha", "base"]
    assert call.func_span == Span(1, 5, 1, 17)


def test_weight_map_keys() -> None:
    (stmt,) = parse("x = {IN00..IN05: 1, OUT: 0, BASE: 0.3, default: 0.5, blk: 2}\n").statements
    assert isinstance(stmt, ast.Assign)
    weights = stmt.value
    assert isinstance(weights, ast.WeightMap)
    keys = [e.key for e in weights.entries]
    assert keys == [
        ast.BlockRange("IN00", "IN05"),
        ast.Name("OUT"),
        ast.Name("BASE"),
        ast.Name("default"),
        ast.Name("blk"),
    ]
    first = keys[0]
    assert isinstance(first, ast.BlockRange)
    assert first.start_span == Span(1, 6, 1, 10)
    assert first.end_span == Span(1, 12, 1, 16)


def test_for_loops_nest_and_spans_cover_the_body() -> None:
    text = (
        "for a in [0.25, 0.5]:\n"
        "    for blk in IN00..IN02:\n"
        '        save m to "{a}-{blk}"\n'
        '    save m to "{a}"\n'
        'save m to "end"\n'
    )
    outer, last = parse(text).statements
    assert isinstance(outer, ast.For)
    assert outer.iterable == ast.Vector((ast.Number(0.25), ast.Number(0.5)))
    inner = outer.body[0]
    assert isinstance(inner, ast.For)
    assert inner.iterable == ast.BlockRange("IN00", "IN02")
    assert outer.span == Span(1, 1, 4, 20)
    assert isinstance(last, ast.Save)
    assert len(list(ast.iter_statements(parse(text).statements))) == 5


def test_tabs_and_spaces_indentation() -> None:
    recipe = parse('for b in IN:\n\tsave m to "{b}"\n\tsave n to "{b}n"\n')
    (loop,) = recipe.statements
    assert isinstance(loop, ast.For)
    assert len(loop.body) == 2


def test_lists_may_span_lines() -> None:
    text = "x = [\n  1,   # first\n  2,\n  # a note\n  3,\n]\ny = 1\n"
    recipe = parse(text)
    assert recipe.statements == (
        ast.Assign("x", ast.Vector((ast.Number(1.0), ast.Number(2.0), ast.Number(3.0)))),
        ast.Assign("y", ast.Number(1.0)),
    )
    assert [(c.text, c.trailing, c.line) for c in recipe.comments] == [
        ("# first", True, 2),
        ("# a note", False, 4),
    ]


def test_comments_are_collected_with_position_and_kind() -> None:
    text = '# head\nmodel a = "a"  # tail\n\n   # indented\nsave a to "b"\n# end'
    recipe = parse(text)
    assert [(c.text, c.trailing, c.span) for c in recipe.comments] == [
        ("# head", False, Span(1, 1, 1, 7)),
        ("# tail", True, Span(2, 16, 2, 22)),
        ("# indented", False, Span(4, 4, 4, 14)),
        ("# end", False, Span(6, 1, 6, 6)),
    ]


def test_a_hash_inside_a_string_is_not_a_comment() -> None:
    recipe = parse('save a to "out/#1.safetensors"  # real\n')
    (save,) = recipe.statements
    assert isinstance(save, ast.Save)
    assert save.path.value == "out/#1.safetensors"
    assert [c.text for c in recipe.comments] == ["# real"]


def test_line_endings_bom_and_missing_final_newline() -> None:
    unix = parse('model a = "a"\nsave a to "b"\n')
    assert parse('\ufeffmodel a = "a"\r\nsave a to "b"') == unix
    assert parse('model a = "a"\rsave a to "b"\r') == unix


def test_empty_and_comment_only_recipes() -> None:
    assert parse("").statements == ()
    only = parse("# nothing here\n\n# at all\n")
    assert only.statements == ()
    assert [c.text for c in only.comments] == ["# nothing here", "# at all"]


def test_equality_ignores_spans_and_layout() -> None:
    a = parse('mix = weighted_sum(a,b,alpha=0.5)  # c\nsave mix to "x"\n')
    b = parse('\n\nmix   =   weighted_sum( a , b , alpha = .50 )   # c\n\nsave mix to "x"')
    assert a == b
    assert a.statements[0].span != b.statements[0].span


def test_path_and_source_are_recorded() -> None:
    recipe = parse("x = 1\n", path="dir/r.merge")
    assert recipe.path == "dir/r.merge"
    assert recipe.source == "x = 1\n"


def test_grammar_is_the_checked_in_file() -> None:
    checkout = TESTS.parent / "grammar" / "mergelang.lark"
    assert grammar_text() == checkout.read_text(encoding="utf-8")


def test_dump_is_readable() -> None:
    text = ast.dump(parse("x = weighted_sum(a, b, alpha=0.5)\n"))
    assert text == (
        "Recipe() @1:1\n"
        "  statements[0]: Assign(name='x') @1:1\n"
        "    value: Call(func='weighted_sum') @1:5\n"
        "      args[0]: Name(name='a') @1:18\n"
        "      args[1]: Name(name='b') @1:21\n"
        "      args[2]: Keyword(name='alpha') @1:24\n"
        "        value: Number(value=0.5) @1:30\n"
    )


# ---- syntax errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "code", "line", "column", "message"),
    [
        ("x = f(a b)\n", "missing-comma", 1, 9, "missing ',' between arguments"),
        ("x = [1, 2 3]\n", "missing-comma", 1, 11, "missing ',' between list items"),
        ("x = {IN00: 1 M00: 2}\n", "missing-comma", 1, 14, "missing ',' between map entries"),
        ("x = f(a,\n  b\ny = 2\n", "unclosed-bracket", 1, 6, "'(' is never closed"),
        ("x = [1,\n", "unclosed-bracket", 1, 5, "'[' is never closed"),
        ("x = {IN00=1}\n", "map-colon", 1, 10, "weight maps use ':'"),
        ("x = f(a, alpha: 1)\n", "keyword-equals", 1, 15, "keyword arguments use '='"),
        ('x = "abc\n', "unclosed-string", 1, 5, "this string is never closed"),
        ("x = 1\n  y = 2\n", "indentation", 2, 1, "unexpected indentation"),
        ("for b in IN:\n    x = 1\n  y = 2\n", "indentation", 3, 1, "matches no enclosing"),
        ("for b in IN\n    x = 1\n", "syntax", 1, 12, "missing ':'"),
        ("a=__A__+__B__, 0.5\n", "syntax", 1, 14, "unexpected ','"),
        ("x = a + b, fp16\n", "merge-board", 1, 12, "needs a multiplier"),
        ("x = a + b, 1, 2, 3\n", "merge-board", 1, 18, "one value too many"),
        ('x = "a{b"\n', "template", 1, 7, "a lone '{'"),
        ("x = f(a=1, b)\n", "positional-after-keyword", 1, 12, "positional argument"),
        ("x = 1 2\n", "syntax", 1, 7, "unexpected number 2"),
        ("x = a % 2\n", "syntax", 1, 7, "unexpected character '%'"),
        ("x = 1e999\n", "number", 1, 5, "too large"),
    ],
)
def test_syntax_errors_point_at_the_problem(
    text: str, code: str, line: int, column: int, message: str
) -> None:
    error = syntax_error(text)
    (diag,) = error.diagnostics
    assert diag.code == code
    assert (diag.line, diag.column) == (line, column)
    assert message in diag.message
    assert diag.path == "r.merge"
    assert diag.source_line is not None


def test_only_the_first_syntax_error_is_reported() -> None:
    error = syntax_error("x = f(a b)\ny = [1 2]\n")
    assert len(error.diagnostics) == 1
    assert error.diagnostics[0].line == 1


def test_tree_problems_are_reported_together() -> None:
    error = syntax_error('x = "{"\ny = a + b, fp16\n')
    assert [(d.code, d.line) for d in error.diagnostics] == [("template", 1), ("merge-board", 2)]


def test_syntax_error_renders_with_caret() -> None:
    error = syntax_error("mix = weighted_sum(a b)\n")
    assert format_diagnostic(error.diagnostics[0]) == (
        "r.merge:1:22: error: missing ',' between arguments\n"
        "   1 | mix = weighted_sum(a b)\n"
        "     |                      ^\n"
        "  hint: add ',' before b"
    )


# ---- reading files ----------------------------------------------------------------------------


def test_parse_file_records_the_path(tmp_path: Path) -> None:
    path = tmp_path / "r.merge"
    path.write_text('model a = "a"\n', encoding="utf-8")
    assert parse_file(path).path == str(path)


def test_missing_recipe_file(tmp_path: Path) -> None:
    with pytest.raises(RecipeError) as info:
        read_recipe_text(tmp_path / "nope.merge")
    (diag,) = info.value.diagnostics
    assert diag.code == "recipe-file"
    assert diag.message == "recipe file not found"
    assert diag.path == str(tmp_path / "nope.merge")


def test_directory_instead_of_recipe(tmp_path: Path) -> None:
    with pytest.raises(RecipeError) as info:
        read_recipe_text(tmp_path)
    assert info.value.diagnostics[0].message == "this is a folder, not a recipe file"


def test_non_utf8_recipe(tmp_path: Path) -> None:
    path = tmp_path / "latin1.merge"
    path.write_bytes(b'model a = "a"\nmodel b = "\xe9"\n')
    with pytest.raises(RecipeError) as info:
        read_recipe_text(path)
    (diag,) = info.value.diagnostics
    assert diag.code == "recipe-encoding"
    assert diag.message == "the recipe is not UTF-8 text (byte 25 on line 2)"


FRAGMENTS = [
    *"abIN0O1_ .,:=+-*/()[]{}\"'$#\n\t\\",
    "model ",
    "save ",
    " to ",
    "for ",
    " in ",
    "IN00",
    "..",
    "__A__",
    "__O1__",
    "    ",
    "weighted_sum",
    " + ",
    ", ",
    "\n    ",
]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=40).map("".join))
def test_any_text_parses_or_raises_a_recipe_error(text: str) -> None:
    try:
        parse(text)
    except RecipeError as error:
        lines = parse_lines(text)
        for diag in error.diagnostics:
            assert diag.span is not None
            assert 1 <= diag.span.line <= max(len(lines), 1)


def parse_lines(text: str) -> list[str]:
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
