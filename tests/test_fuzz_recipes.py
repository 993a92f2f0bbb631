"""Fuzzing the recipe reader: whatever the text, parsing and checking it either succeeds or
raises a :class:`MergelangError` whose every diagnostic points inside the text; and a recipe
that checks formats to a text that parses, checks and formats to itself.

Four sources of text: arbitrary characters (control characters and lone surrogates
included), a soup of the language's own tokens, small well-formed recipes built from the
grammar, and the example recipes (``examples/*.merge``) with slices deleted, inserted,
duplicated or swapped. Each case is bounded in time by hypothesis's deadline.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mergelang.check import CheckedRecipe, check
from mergelang.cli import main
from mergelang.errors import Diagnostic, MergelangError
from mergelang.lang import ast
from mergelang.lang.formatter import format_recipe, format_text
from mergelang.lang.parser import parse

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.merge"))
EXAMPLE_TEXTS = [path.read_text(encoding="utf-8") for path in EXAMPLES]

pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

FUZZ = settings(
    max_examples=300,
    deadline=timedelta(seconds=5),
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)

_VARIABLE = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)|__([A-Za-z0-9][A-Za-z0-9_]*?)__")


def variables_for(text: str) -> dict[str, str]:
    """A value for every variable the text names: model paths, and a number for one in
    three, so both kinds of use are exercised."""
    names = sorted({a or b for a, b in _VARIABLE.findall(text)})
    return {
        name: "0.5" if index % 3 == 2 else f"{name.lower()}.safetensors"
        for index, name in enumerate(names)
    }


def source_lines(text: str) -> list[str]:
    """The lines of ``text`` as the parser numbers them (a leading BOM dropped; ``\\r\\n``
    and ``\\r`` end lines too)."""
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    return text.split("\n")


def assert_located(diagnostics: tuple[Diagnostic, ...], text: str) -> None:
    """Every diagnostic has a span that starts inside ``text`` (or just past its end)."""
    lines = source_lines(text)
    for diag in diagnostics:
        assert diag.span is not None, diag
        assert 1 <= diag.span.line <= len(lines) + 1, diag
        assert diag.span.column >= 1, diag
        if diag.span.line <= len(lines):
            assert diag.span.column <= len(lines[diag.span.line - 1]) + 1, diag


def parse_and_check(text: str, base_dir: Path) -> tuple[ast.Recipe, CheckedRecipe] | None:
    """Parse and check as ``mergelang check`` does; ``None`` after a located error."""
    try:
        recipe = parse(text, path="fuzz.merge")
        checked = check(recipe, set=variables_for(text), base_dir=base_dir)
    except MergelangError as exc:
        assert exc.diagnostics, "an error without a diagnostic"
        assert_located(exc.diagnostics, text)
        return None
    assert_located(checked.warnings, text)
    return recipe, checked


def assert_formats_stably(text: str, recipe: ast.Recipe, base_dir: Path) -> None:
    """The canonical text parses to the same statements, checks, and formats to itself."""
    formatted = format_recipe(recipe)
    again = parse(formatted)
    dumped = [ast.dump(s, spans=False) for s in again.statements]
    assert dumped == [ast.dump(s, spans=False) for s in recipe.statements]
    check(again, set=variables_for(text), base_dir=base_dir)
    assert format_text(formatted) == formatted


def roundtrip(text: str, base_dir: Path) -> bool:
    """The whole property; whether the text checked (and so was formatted too)."""
    result = parse_and_check(text, base_dir)
    if result is None:
        return False
    assert_formats_stably(text, result[0], base_dir)
    return True


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty folder for relative paths (``presets "x"`` finds nothing there)."""
    return tmp_path_factory.mktemp("fuzz-base")


# ---- (a) arbitrary text ------------------------------------------------------------------------

ANY_CHARACTER = st.characters(exclude_categories=())  # control characters, surrogates too


@FUZZ
@given(text=st.text(ANY_CHARACTER, max_size=120))
def test_arbitrary_text_is_read_or_refused_cleanly(text: str, base_dir: Path) -> None:
    roundtrip(text, base_dir)


RECIPE_WORDS = [
    "model", "save", "for", "in", "step", "with", "as", "to",
    "=", "+", "-", "*", "/", ",", ":", "..", "(", ")", "[", "]", "{", "}", '"', "#",
]  # fmt: skip


@FUZZ
@given(
    text=st.lists(
        st.one_of(
            st.sampled_from([*RECIPE_WORDS, " ", "\n", "\t"]),
            st.characters(codec="utf-8", max_codepoint=0x3000),
        ),
        max_size=60,
    ).map("".join)
)
def test_recipe_like_characters_are_read_or_refused_cleanly(text: str, base_dir: Path) -> None:
    roundtrip(text, base_dir)


@settings(FUZZ, max_examples=50)
@given(data=st.binary(max_size=200))
def test_arbitrary_bytes_through_check_exit_0_or_1(
    data: bytes, tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path_factory.mktemp("bytes") / "fuzz.merge"
    path.write_bytes(data)
    status = main(["check", str(path)])
    err = capsys.readouterr().err
    assert status in (0, 1)
    assert "Traceback" not in err
    if status == 1:
        assert err.startswith(f"{path}:")
    assert path.read_bytes() == data


# ---- (b) the language's tokens, shuffled -------------------------------------------------------

KEYWORDS = [
    "model", "cache", "save", "to", "as", "with", "for", "in", "presets", "convention",
    "not", "step",
]  # fmt: skip
NAMES = [
    "a", "b", "c", "x", "blk", "v", "mix", "sd15", "weighted_sum", "add_difference",
    "train_difference", "scale", "GRAD_V", "ALL_A", "default", "BASE", "IN", "M", "OUT",
    "fp16", "bf16", "ema", "keep", "drop", "vae", "alpha", "base", "mbw", "kohya",
]  # fmt: skip
BLOCKS = ["IN00", "IN05", "IN11", "M00", "OUT00", "OUT08", "OUT11", "IN12", "MID"]
NUMBERS = ["0", "1", "0.5", ".25", "-0", "1e-05", "2.", "1e308", "1e999", "10000000000000000"]
STRINGS = [
    '"a.safetensors"', '"out/{blk}.safetensors"', '"o{v}-{x}.ckpt"', '"{"', '"}}"',
    '"{{x}}"', '""', '"../up.safetensors"', '"C:\\\\m\\\\"', '"\\""', '"unclosed',
    '"out/"', '"{nope}"', '"model.diffusion_model"',
]  # fmt: skip
PUNCTUATION = ["..", "+", "-", "*", "/", "=", ",", ":", "(", ")", "[", "]", "{", "}", "'", "\\"]
VARIABLES = ["$A", "$B", "__A__", "__B__", "__O1__", "__O2__", "__O0__", "__SD15__", "$"]
LAYOUT = ["\n", "\n    ", "\n        ", "\n\t", "  ", "# note", "\r\n", " + "]
MERGE_BOARD = ["o = A + B,", "__O1__ + C", "out/x = a + b + c,", "fp16", "safetensors"]
TOKENS = (
    KEYWORDS + NAMES + BLOCKS + NUMBERS + STRINGS + PUNCTUATION + VARIABLES + LAYOUT + MERGE_BOARD
)
SEPARATORS = ["", " ", " ", "\n"]

token_soup = st.lists(
    st.tuples(st.sampled_from(TOKENS), st.sampled_from(SEPARATORS)), max_size=40
).map(lambda pairs: "".join(token + gap for token, gap in pairs))


@settings(FUZZ, max_examples=600)
@given(text=token_soup)
def test_token_soup_is_read_or_refused_cleanly(text: str, base_dir: Path) -> None:
    roundtrip(text, base_dir)


# ---- (b') well-formed recipes built from the grammar ----------------------------------------

MODEL_NAMES = ["a", "b", "c"]
names = st.sampled_from(MODEL_NAMES)
numbers = st.sampled_from(["0", "1", "0.5", "0.25", "-0.5", "2", "1e-05", ".75"])
block_keys = st.sampled_from(["IN00", "M00", "OUT11", "IN", "OUT", "BASE", "default",
                              "IN00..IN05", "OUT03..OUT11", '"attn"', '"attn" in IN',
                              'not "norm" not in [M00, OUT00..OUT02]'])  # fmt: skip
weights = st.one_of(
    numbers,
    st.sampled_from(["GRAD_V", "ALL_A", "FLAT_25", "[" + ", ".join(["0.5"] * 25) + "]"]),
    st.lists(st.tuples(block_keys, numbers), min_size=1, max_size=4).map(
        lambda entries: "{" + ", ".join(f"{k}: {v}" for k, v in entries) + "}"
    ),
)


def _expressions(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(inner, inner, weights).map(
            lambda t: f"weighted_sum({t[0]}, {t[1]}, alpha={t[2]})"
        ),
        st.tuples(inner, inner, inner).map(lambda t: f"add_difference({t[0]}, {t[1]}, {t[2]})"),
        st.tuples(inner, weights).map(lambda t: f"{t[0]} * {t[1]}"),
        st.tuples(inner, weights, inner, weights).map(
            lambda t: f"({t[0]} * {t[1]} + {t[2]} * {t[3]})"
        ),
        st.tuples(inner, inner, inner).map(lambda t: f"{t[0]} + ({t[1]} - {t[2]}) * 0.5"),
    )


model_expressions = st.recursive(names, _expressions, max_leaves=4)


@st.composite
def recipes(draw: st.DrawFn) -> str:
    lines = [f'model {n} = "{n}.safetensors"' for n in MODEL_NAMES]
    defined = list(MODEL_NAMES)
    for index in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["assign", "cache", "save", "loop", "comment", "board"]))
        expr = draw(model_expressions)
        if kind in ("assign", "cache"):
            name = f"m{index}"
            prefix = "cache " if kind == "cache" else ""
            lines.append(f"{prefix}{name} = {expr}")
            defined.append(name)
        elif kind == "save":
            dtype = draw(st.sampled_from(["", " as fp16", " as bf16", " with ema=keep"]))
            lines.append(f'save {expr} to "out/s{index}.safetensors"{dtype}')
        elif kind == "loop":
            loop = draw(st.sampled_from(["IN00..IN03", "OUT", "[0.25, 0.5]", "0.1..0.3 step 0.1"]))
            lines.append(f"for v in {loop}:")
            lines.append(f'    save {expr} to "out/l{index}-{{v}}.safetensors"')
        elif kind == "board":
            lines.append(f"o{index} = __A__ + __B__, {draw(numbers)}")
        else:
            printable = st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zl", "Zp"))
            lines.append("# " + draw(st.text(printable, max_size=20)))
    for name in defined[3:]:
        lines.append(f'save {name} to "out/{name}.safetensors"')
    gap = draw(st.sampled_from(["\n", "\n\n", "  \n", "\r\n"]))
    return gap.join(lines) + draw(st.sampled_from(["", "\n", "\n\n"]))


@settings(FUZZ, max_examples=250)
@given(text=recipes())
def test_generated_recipes_check_and_format_stably(text: str, base_dir: Path) -> None:
    roundtrip(text, base_dir)


# ---- (c) the examples, mutated -----------------------------------------------------------------


@st.composite
def mutated_examples(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(EXAMPLE_TEXTS))
    for _ in range(draw(st.integers(1, 3))):
        size = len(text)
        start = draw(st.integers(0, size))
        end = draw(st.integers(start, min(size, start + 40)))
        piece = text[start:end]
        operation = draw(st.sampled_from(["delete", "insert", "duplicate", "swap"]))
        if operation == "delete":
            text = text[:start] + text[end:]
        elif operation == "insert":
            token = draw(st.sampled_from(TOKENS))
            text = text[:start] + token + text[start:]
        elif operation == "duplicate":
            at = draw(st.integers(0, size))
            text = text[:at] + piece + text[at:]
        else:
            other = draw(st.integers(end, size))
            other_end = draw(st.integers(other, min(size, other + 40)))
            text = text[:start] + text[other:other_end] + text[end:other] + piece + text[other_end:]
    return text


def test_the_examples_check_and_format_stably(base_dir: Path) -> None:
    assert len(EXAMPLE_TEXTS) >= 5
    for text in EXAMPLE_TEXTS:
        assert roundtrip(text, base_dir)


@settings(FUZZ, max_examples=600)
@given(text=mutated_examples())
def test_mutated_examples_are_read_or_refused_cleanly(text: str, base_dir: Path) -> None:
    roundtrip(text, base_dir)
