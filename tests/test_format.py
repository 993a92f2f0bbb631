"""The formatter: canonical text, idempotence, and meaning preserved.

Golden files: tests/golden/format/<fixture>.merge (the canonical text of each
tests/recipes/*.merge). Regenerate with MERGELANG_UPDATE_GOLDEN=1.

The property tests generate random recipe trees, render them canonically (the formatter) and
messily (random spacing, parentheses, number spellings, line breaks inside brackets, blank
lines and comments), and check that parsing gives back the same tree, that formatting is
idempotent, and that formatting never changes what a recipe means.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mergelang.arch.sd1 import SD_BLOCKS
from mergelang.errors import RecipeError
from mergelang.lang import ast
from mergelang.lang.formatter import format_expr, format_recipe, format_string, format_text
from mergelang.lang.merge_board import DTYPE_FLAGS, FORMAT_FLAGS
from mergelang.lang.parser import parse

TESTS = Path(__file__).parent
RECIPES = TESTS / "recipes"
GOLDEN = TESTS / "golden"
UPDATE = os.environ.get("MERGELANG_UPDATE_GOLDEN") == "1"


def assert_golden(path: Path, actual: str) -> None:
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual, encoding="utf-8")
        return
    assert path.is_file(), f"missing golden file {path}: run with MERGELANG_UPDATE_GOLDEN=1"
    assert actual == path.read_text(encoding="utf-8")


# ---- fixtures and goldens ---------------------------------------------------------------------


@pytest.mark.parametrize("recipe", sorted(RECIPES.glob("*.merge")), ids=lambda p: p.stem)
def test_fixture_formatting_matches_golden(recipe: Path) -> None:
    text = recipe.read_text(encoding="utf-8")
    formatted = format_text(text)
    assert_golden(GOLDEN / "format" / recipe.name, formatted)
    assert format_text(formatted) == formatted
    assert parse(formatted) == parse(text)


@pytest.mark.parametrize(
    "example", sorted((TESTS.parent / "examples").glob("*.merge")), ids=lambda p: p.stem
)
def test_examples_are_canonical(example: Path) -> None:
    text = example.read_text(encoding="utf-8")
    assert format_text(text) == text


# ---- rules ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("messy", "canonical"),
    [
        ("x=weighted_sum( a,b ,alpha = .50 )", "x = weighted_sum(a, b, alpha=0.5)"),
        ("x = [1.0,2 , 3e0,]", "x = [1, 2, 3]"),
        ("x = {IN00..IN05 :1,default:0.0}", "x = {IN00..IN05: 1, default: 0}"),
        ("x = 0.00001 * a", "x = 1e-05 * a"),
        ("x = 1e16 * a", "x = 1e+16 * a"),
        ("x = 12345678901234567.0 * a", "x = 1.2345678901234568e+16 * a"),
        ("x = - 0.0 * a", "x = -0 * a"),
        ("x = ((a)) + (b * 2)", "x = a + b * 2"),
        ("x = (a + b) * 2", "x = (a + b) * 2"),
        ("x = a - (b - c)", "x = a - (b - c)"),
        ("x = (a - b) - c", "x = a - b - c"),
        ("x = a / (b * c)", "x = a / (b * c)"),
        ("x = - (a + b)", "x = -(a + b)"),
        ("x = a - - 1", "x = a - -1"),
        ("x = - - a", "x = --a"),
        ("cache   x=a", "cache x = a"),
        ('model  a="p"', 'model a = "p"'),
        ("model a=$V", "model a = $V"),
        (
            'save a  to  "o"  as  fp16  with  ema = keep,vae=v',
            'save a to "o" as fp16 with ema=keep, vae=v',
        ),
        (
            'for  b  in  IN00 .. OUT11 :\n  save a to "{b}"',
            'for b in IN00..OUT11:\n    save a to "{b}"',
        ),
        ('presets   "p.tsv"', 'presets "p.tsv"'),
        ("convention   sd_mecha", "convention sd_mecha"),
        (
            "a14=__SD14__  +  __F222__ ,0.5,safetensors ,fp16",
            "a14 = __SD14__ + __F222__, 0.5, fp16, safetensors",
        ),
        ("SD-WD Fix   = A + B,1.0", "SD-WD Fix = A + B, 1"),
        ("__F222__   #  doc", "__F222__  #  doc"),
    ],
)
def test_canonical_spelling(messy: str, canonical: str) -> None:
    assert format_text(messy + "\n") == canonical + "\n"


@pytest.mark.parametrize(
    ("value", "literal"),
    [
        ("plain", '"plain"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("C:\\models\\a.ckpt", '"C:\\models\\a.ckpt"'),
        ("ends\\", '"ends\\\\"'),
        ("a\\\\b", '"a\\\\\\b"'),
        ('q\\"', '"q\\\\\\""'),
    ],
)
def test_string_literals_round_trip(value: str, literal: str) -> None:
    assert format_string(value) == literal
    (stmt,) = parse(f"save a to {literal}\n").statements
    assert isinstance(stmt, ast.Save)
    assert stmt.path.value == value


def test_blank_lines_and_comments() -> None:
    text = (
        '\n\n# header\n\n\n\nmodel a = "a"   # why\nmodel b = "b"\n'
        'for blk in IN:\n\n    # body comment\n    save a to "{blk}"\n\n\n'
        '      # tail of the body\n# after the loop\nsave b to "o"\n\n\n# end\n'
    )
    assert format_text(text) == (
        "# header\n"
        "\n"
        'model a = "a"  # why\n'
        'model b = "b"\n'
        "for blk in IN:\n"
        "    # body comment\n"
        '    save a to "{blk}"\n'
        "\n"
        "    # tail of the body\n"
        "# after the loop\n"
        'save b to "o"\n'
        "\n"
        "# end\n"
    )


def test_comments_inside_a_wrapped_list_move_above_it() -> None:
    text = "x = [1,  # first\n  # middle\n  2]  # last\ny = 2\n"
    formatted = format_text(text)
    assert formatted == "# first\n# middle\n# last\nx = [1, 2]\ny = 2\n"
    assert parse(formatted) == parse(text)


def test_nested_blocks_indent_by_four() -> None:
    text = 'for a in [1]:\n  for b in IN:\n   save m to "{a}{b}"\n  save m to "{a}"\n'
    assert format_text(text) == (
        'for a in [1]:\n    for b in IN:\n        save m to "{a}{b}"\n    save m to "{a}"\n'
    )


def test_empty_recipe_formats_to_nothing() -> None:
    assert format_text("") == ""
    assert format_text("\n\n\n") == ""


def test_formatting_a_tree_built_in_code() -> None:
    recipe = ast.Recipe(
        (
            ast.ModelDecl("a", ast.String("a.safetensors")),
            ast.Assign(
                "m",
                ast.BinaryOp("*", ast.Negate(ast.Name("a")), ast.Number(0.5)),
            ),
            ast.Save(ast.Name("m"), ast.String("o.safetensors"), ast.Name("fp16")),
        )
    )
    assert format_recipe(recipe) == (
        'model a = "a.safetensors"\nm = -a * 0.5\nsave m to "o.safetensors" as fp16\n'
    )


def test_format_text_reports_syntax_errors() -> None:
    with pytest.raises(RecipeError):
        format_text("x = [1, 2\n")


# ---- strategies -----------------------------------------------------------------------------

KEYWORDS = {
    "model",
    "cache",
    "save",
    "to",
    "as",
    "with",
    "for",
    "in",
    "not",
    "presets",
    "convention",
}
RESERVED = KEYWORDS | set(DTYPE_FLAGS) | set(FORMAT_FLAGS)

names = st.from_regex(r"[a-z][a-z0-9_]{0,5}", fullmatch=True).filter(lambda n: n not in RESERVED)
var_names = st.from_regex(r"[A-Z][A-Z0-9_]{0,4}[A-Z0-9]|[A-Z]", fullmatch=True).filter(
    lambda n: re.fullmatch(r"O[1-9][0-9]*", n) is None
)
blocks = st.sampled_from([*SD_BLOCKS, "IN", "M", "OUT", "BASE", "default"])
numbers = st.floats(allow_nan=False, allow_infinity=False, width=64)
text_chunks = st.text(
    alphabet=st.characters(
        codec="utf-8", exclude_characters="{}\n\r", exclude_categories=("Cs", "Cc")
    ),
    max_size=6,
)


@st.composite
def string_nodes(draw: st.DrawFn) -> ast.String:
    pieces = draw(
        st.lists(
            st.one_of(text_chunks, st.just("{{"), st.just("}}"), names.map(lambda n: f"{{{n}}}")),
            max_size=4,
        )
    )
    return ast.String("".join(pieces))


def variables() -> st.SearchStrategy[ast.Variable]:
    return st.builds(ast.Variable, var_names, st.sampled_from(["dollar", "dunder"]))


leaves = st.one_of(
    numbers.map(ast.Number),
    names.map(ast.Name),
    variables(),
    st.integers(1, 30).map(ast.OutputRef),
    string_nodes(),
)


def block_ranges() -> st.SearchStrategy[ast.BlockRange]:
    return st.builds(ast.BlockRange, st.sampled_from(SD_BLOCKS), st.sampled_from(SD_BLOCKS))


@st.composite
def key_patterns(draw: st.DrawFn) -> ast.KeyPattern:
    items = st.one_of(blocks.filter(lambda b: b != "default").map(ast.Name), block_ranges())
    chosen = draw(st.none() | st.lists(items, min_size=1, max_size=3).map(tuple))
    exclude = chosen is not None and draw(st.booleans())
    return ast.KeyPattern(draw(string_nodes()), draw(st.booleans()), chosen, exclude)


def _extend(children: st.SearchStrategy[ast.Expr]) -> st.SearchStrategy[ast.Expr]:
    keywords = st.builds(ast.Keyword, names, children)
    calls = st.builds(
        lambda func, pos, kws: ast.Call(func, tuple(pos) + tuple(kws)),
        names,
        st.lists(children, max_size=3),
        st.lists(keywords, max_size=2),
    )
    binaries = st.builds(ast.BinaryOp, st.sampled_from(["+", "-", "*", "/"]), children, children)
    negations = children.filter(lambda e: not isinstance(e, ast.Number)).map(ast.Negate)
    vectors = st.lists(children, max_size=4).map(lambda items: ast.Vector(tuple(items)))
    entries = st.builds(
        ast.MapEntry,
        st.one_of(blocks.map(ast.Name), names.map(ast.Name), block_ranges(), key_patterns()),
        children,
    )
    maps = st.lists(entries, max_size=3).map(lambda e: ast.WeightMap(tuple(e)))
    return st.one_of(calls, binaries, negations, vectors, maps)


expressions = st.recursive(leaves, _extend, max_leaves=5)

literal_models = st.from_regex(r"[A-Za-z][A-Za-z0-9.\-]{0,6}(?: \[[0-9a-f]{8}\])?", fullmatch=True)
operands = st.one_of(
    st.builds(ast.Variable, var_names, st.just("dunder")),
    st.builds(ast.Variable, var_names, st.just("dollar")),
    st.integers(1, 9).map(ast.OutputRef),
    literal_models.map(ast.ModelLiteral),
)
outputs = st.from_regex(r"[A-Za-z][A-Za-z0-9_\- ]{0,8}[A-Za-z0-9]|[A-Za-z]", fullmatch=True).filter(
    lambda o: o.split(" ")[0] not in KEYWORDS
)
save_values = st.one_of(names.map(ast.Name), string_nodes(), numbers.map(ast.Number))


def simple_statements() -> st.SearchStrategy[ast.Statement]:
    return st.one_of(
        st.builds(ast.ModelDecl, names, st.one_of(string_nodes(), variables())),
        st.builds(ast.Assign, names, expressions, st.booleans()),
        st.builds(
            ast.Save,
            expressions,
            string_nodes(),
            st.one_of(st.none(), names.map(ast.Name)),
            st.lists(st.builds(ast.SaveOption, names, save_values), max_size=2).map(tuple),
        ),
        st.builds(ast.PresetsImport, string_nodes()),
        st.builds(ast.ConventionChoice, names.map(ast.Name)),
        st.builds(
            ast.MergeBoard,
            outputs,
            st.lists(operands, min_size=2, max_size=3).map(tuple),
            expressions,
            st.one_of(st.none(), expressions),
            st.one_of(st.none(), st.sampled_from(DTYPE_FLAGS).map(ast.Name)),
            st.one_of(st.none(), st.sampled_from(FORMAT_FLAGS).map(ast.Name)),
        ),
        var_names.map(ast.VarDoc),
    )


iterables = st.one_of(
    block_ranges(),
    st.sampled_from(["IN", "M", "OUT"]).map(ast.Name),
    st.lists(expressions, min_size=1, max_size=3).map(lambda i: ast.Vector(tuple(i))),
)


def statements(depth: int) -> st.SearchStrategy[ast.Statement]:
    if depth == 0:
        return simple_statements()
    loops = st.builds(
        ast.For,
        names,
        iterables,
        st.lists(statements(depth - 1), min_size=1, max_size=2).map(tuple),
    )
    return st.one_of(simple_statements(), loops)


recipes = st.lists(statements(2), max_size=4).map(lambda s: ast.Recipe(tuple(s)))


# ---- the messy renderer ---------------------------------------------------------------------


def binding(node: ast.Expr) -> int:
    """How tightly an expression binds: sums 1, products 2, unary minus (and a negative
    literal, which reads as one) 3, everything else 4."""
    if isinstance(node, ast.BinaryOp):
        return 1 if node.op in "+-" else 2
    if isinstance(node, ast.Negate) or (
        isinstance(node, ast.Number) and format_expr(node).startswith("-")
    ):
        return 3
    return 4


class Messy:
    """Renders a tree as valid but untidy text, with comments the test can count."""

    def __init__(self, draw: st.DrawFn) -> None:
        self.draw = draw
        self.comments: list[str] = []

    def space(self) -> str:
        return self.draw(st.sampled_from(["", " ", "  ", "\t"]))

    def some_space(self) -> str:
        return self.draw(st.sampled_from([" ", "  ", "\t"]))

    def sep(self, continuation: str) -> str:
        """What follows a comma inside brackets: spaces, or a line break (maybe commented)."""
        choice = self.draw(st.integers(0, 5))
        if choice == 0:
            comment = self.comment()
            return f"  {comment}\n{continuation}"
        if choice == 1:
            return "\n" + continuation
        return self.space()

    def comment(self) -> str:
        # A numbered marker makes each comment unique, so the test can find its position.
        text = f"#<{len(self.comments)}>" + self.draw(st.text(alphabet="abc xyz=+#,", max_size=8))
        text = text.rstrip()
        self.comments.append(text)
        return text

    def comments_in_text_order(self, text: str) -> list[str]:
        return sorted(self.comments, key=lambda c: text.index(c[: c.index(">") + 1]))

    def number(self, value: float) -> str:
        forms = [repr(value), f"{value:.17g}", f"{value:.17e}"]
        if value.is_integer() and abs(value) < 1e15:
            forms += [f"{int(value)}", f"{value:.1f}"]
        text = self.draw(st.sampled_from(forms))
        if text.startswith("-") and self.draw(st.booleans()):
            text = "-" + self.space() + text[1:]
        if text.startswith("0.") and self.draw(st.booleans()):
            text = text[1:]
        return text

    def expr(self, node: ast.Expr, continuation: str) -> str:
        text = self._expr(node, continuation)
        if self.draw(st.integers(0, 6)) == 0:
            return f"({self.space()}{text}{self.space()})"
        return text

    def _items(self, items: list[str], continuation: str) -> str:
        out = ""
        for index, item in enumerate(items):
            if index:
                out += "," + self.sep(continuation)
            out += item
        if items and self.draw(st.integers(0, 4)) == 0:
            out += ","
        return out

    def _expr(self, node: ast.Expr, cont: str) -> str:
        if isinstance(node, ast.Number):
            return self.number(node.value)
        if isinstance(node, ast.String | ast.Name | ast.Variable | ast.OutputRef):
            return format_expr(node)
        if isinstance(node, ast.Call):
            args = [
                f"{a.name}{self.space()}={self.space()}{self.expr(a.value, cont)}"
                if isinstance(a, ast.Keyword)
                else self.expr(a, cont)
                for a in node.args
            ]
            return f"{node.func}({self.space()}{self._items(args, cont)}{self.space()})"
        if isinstance(node, ast.BinaryOp):
            left = self.expr(node.left, cont)
            right = self.expr(node.right, cont)
            # Keep the parentheses precedence needs (operators are left-associative).
            if binding(node.left) < binding(node):
                left = f"({left})"
            if binding(node.right) <= binding(node):
                right = f"({right})"
            return f"{left}{self.space()}{node.op}{self.space()}{right}"
        if isinstance(node, ast.Negate):
            inner = self.expr(node.operand, cont)
            if isinstance(node.operand, ast.BinaryOp):
                inner = f"({inner})"
            return "-" + self.space() + inner
        if isinstance(node, ast.Vector):
            items = [self.expr(i, cont) for i in node.items]
            return "[" + self.space() + self._items(items, cont) + self.space() + "]"
        entries = [
            f"{self._key(e.key)}{self.space()}:{self.space()}{self.expr(e.value, cont)}"
            for e in node.entries
        ]
        return "{" + self.space() + self._items(entries, cont) + self.space() + "}"

    def _key(self, key: ast.MapKey) -> str:
        if isinstance(key, ast.BlockRange):
            return f"{key.start}{self.space()}..{self.space()}{key.end}"
        if isinstance(key, ast.KeyPattern):
            text = ("not " + self.space() if key.negated else "") + format_expr(key.pattern)
            if key.blocks is None:
                return text
            items = [self._key(item) for item in key.blocks]
            bracket = len(items) > 1 or self.draw(st.booleans())
            where = f"[{self.space()}{', '.join(items)}{self.space()}]" if bracket else items[0]
            return f"{text} {'not in' if key.exclude else 'in'} {where}"
        return key.name

    def statement(self, stmt: ast.Statement, indent: str) -> list[str]:
        cont = indent + self.draw(st.sampled_from(["", "  ", "        "]))
        sp, some = self.space, self.some_space
        if isinstance(stmt, ast.ModelDecl):
            text = f"model{some()}{stmt.name}{sp()}={sp()}{format_expr(stmt.source)}"
        elif isinstance(stmt, ast.Assign):
            prefix = f"cache{some()}" if stmt.cached else ""
            text = f"{prefix}{stmt.name}{sp()}={sp()}{self.expr(stmt.value, cont)}"
        elif isinstance(stmt, ast.Save):
            text = f"save{some()}{self.expr(stmt.value, cont)}{some()}to{some()}"
            text += format_expr(stmt.path)
            if stmt.dtype is not None:
                text += f"{some()}as{some()}{stmt.dtype.name}"
            if stmt.options:
                options = [f"{o.key}{sp()}={sp()}{self._save_value(o.value)}" for o in stmt.options]
                text += f"{some()}with{some()}" + f"{sp()},{sp()}".join(options)
        elif isinstance(stmt, ast.PresetsImport):
            text = f"presets{some()}{format_expr(stmt.path)}"
        elif isinstance(stmt, ast.ConventionChoice):
            text = f"convention{some()}{stmt.name.name}"
        elif isinstance(stmt, ast.MergeBoard):
            plus = f"{some()}+{some()}"
            parts = [self.expr(stmt.multiplier, cont)]
            flags = [f.name for f in (stmt.dtype, stmt.format) if f is not None]
            if stmt.base is not None:
                parts.append(self.expr(stmt.base, cont))
            parts += self.draw(st.permutations(flags))
            operands = plus.join(op.text for op in stmt.operands)
            text = f"{stmt.output}{sp()}={sp()}{operands}{sp()},{sp()}"
            text += f"{sp()},{sp()}".join(parts)
        elif isinstance(stmt, ast.VarDoc):
            text = f"__{stmt.name}__"
        else:
            assert isinstance(stmt, ast.For)
            return self._loop(stmt, indent)
        if self.draw(st.integers(0, 4)) == 0:
            text += self.some_space() + self.comment()
        return [indent + text]

    def _save_value(self, value: ast.SaveValue) -> str:
        if isinstance(value, ast.Number):
            return self.number(value.value)
        return format_expr(value)

    def _loop(self, stmt: ast.For, indent: str) -> list[str]:
        iterable = stmt.iterable
        if isinstance(iterable, ast.BlockRange | ast.Name):
            iterated = self._key(iterable)
        else:
            iterated = self._expr(iterable, indent + "  ")  # no parentheses around it
        header = f"for{self.some_space()}{stmt.var}{self.some_space()}in{self.some_space()}"
        lines = [f"{indent}{header}{iterated}{self.space()}:"]
        inner = indent + self.draw(st.sampled_from(["  ", "    ", "\t", "     "]))
        for body in stmt.body:
            lines += self.blank_or_comment(inner)
            lines += self.statement(body, inner)
        return lines

    def blank_or_comment(self, indent: str) -> list[str]:
        choice = self.draw(st.integers(0, 5))
        if choice == 0:
            return [""]
        if choice == 1:
            return [indent + self.comment()]
        return []


@st.composite
def messy_texts(draw: st.DrawFn) -> tuple[ast.Recipe, str, list[str]]:
    recipe = draw(recipes)
    messy = Messy(draw)
    lines: list[str] = []
    for stmt in recipe.statements:
        lines += messy.blank_or_comment(draw(st.sampled_from(["", "  "])))
        lines += messy.statement(stmt, "")
    lines += messy.blank_or_comment("")
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    ending = newline if lines and draw(st.booleans()) else ""
    text = newline.join(lines) + ending
    return recipe, text, messy.comments_in_text_order(text)


PROPERTY = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@PROPERTY
@given(recipes)
def test_canonical_text_parses_back_to_the_same_tree(recipe: ast.Recipe) -> None:
    text = format_recipe(recipe)
    assert parse(text).statements == recipe.statements
    assert format_text(text) == text


@PROPERTY
@given(messy_texts())
def test_messy_text_parses_and_formats_stably(case: tuple[ast.Recipe, str, list[str]]) -> None:
    recipe, text, comments = case
    parsed = parse(text)
    assert parsed.statements == recipe.statements
    assert [c.text for c in parsed.comments] == comments
    formatted = format_text(text)
    assert format_text(formatted) == formatted
    assert parse(formatted) == parsed
