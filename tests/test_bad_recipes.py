"""Bad recipe files and bad flags through the command line: ``check``, ``fmt``, ``plan`` and
``run`` each exit 1 (2 for a command-line mistake) with a message naming the file, and the
line and column when the problem is in the text; no traceback, no file created, the recipe
left as it was. A few cases run ``python -m mergelang`` in a subprocess to prove the exit
status and the absence of a traceback in a real process.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from run_helpers import declare, shared_models

from mergelang.cli import main
from mergelang.errors import SHOWN_LINE_WIDTH
from mergelang.io.text_files import MAX_RECIPE_SIZE
from mergelang.lang.parser import MAX_LOOP_NESTING, MAX_NESTING
from mergelang.lang.syntax_errors import MAX_ERRORS

VERBS = ["check", "fmt", "plan", "run"]
"""Every verb that reads a recipe."""

MODELS = 'model a = "a.safetensors"\nmodel b = "b.safetensors"\n'
GOOD = MODELS + 'save weighted_sum(a, b) to "out/mix.safetensors"\n'

KIB = 1024


# ---- helpers -----------------------------------------------------------------------------------


def snapshot(folder: Path) -> dict[str, str]:
    """Every file below ``folder`` -> the SHA-256 of its bytes."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def argv(verb: str, recipe: Path | str, tmp_path: Path, *extra: str) -> list[str]:
    """The arguments of ``verb`` on ``recipe``; plan and run get a cache folder of their own
    (which must not appear either)."""
    args = [verb, str(recipe)]
    if verb in ("plan", "run"):
        args += ["--cache-dir", str(tmp_path / "cache")]
    return [*args, *extra]


def fails(
    args: Sequence[str],
    folder: Path,
    capsys: pytest.CaptureFixture[str],
    status: int = 1,
) -> str:
    """Run ``mergelang ARGS`` in this process; assert it exits with ``status``, prints nothing
    on stdout and no traceback, and changes nothing under ``folder``. Returns stderr."""
    before = snapshot(folder)
    assert main(list(args)) == status
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "Traceback" not in captured.err
    assert snapshot(folder) == before
    return captured.err


def write_bytes(folder: Path, data: bytes, name: str = "recipe.merge") -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def feed_stdin(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))


def run_process(args: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mergelang", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        check=False,
    )


# ---- bytes that are not a UTF-8 recipe ---------------------------------------------------------


@pytest.mark.parametrize("verb", VERBS)
def test_binary_recipe(verb: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + random.Random(7).randbytes(4 * KIB)
    recipe = write_bytes(tmp_path, data)
    err = fails(argv(verb, recipe, tmp_path), tmp_path, capsys)
    # b"\x89" is the first byte and no UTF-8 text starts with it.
    assert f"{recipe}:1:1: error: the recipe is not UTF-8 text (byte 0 on line 1)" in err
    assert "hint: is this a binary file? a recipe is UTF-8 text" in err


@pytest.mark.parametrize("verb", VERBS)
def test_latin1_recipe_names_the_first_bad_byte(
    verb: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = MODELS + "# café au lait, déjà\n" + 'save a to "o.safetensors"\n'
    recipe = write_bytes(tmp_path, text.encode("latin-1"))
    err = fails(argv(verb, recipe, tmp_path), tmp_path, capsys)
    offset = len(MODELS) + len("# caf")
    assert f"{recipe}:3:6: error: the recipe is not UTF-8 text (byte {offset} on line 3)" in err
    assert "hint: save the recipe as UTF-8" in err


def test_a_bad_byte_after_crlf_lines_is_located_by_character(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Line 2 holds two-byte characters before the bad byte: the column counts characters.
    data = b'model a = "a"\r\nx = "\xc3\xa9\xc3\xa9\xff"\r\n'
    recipe = write_bytes(tmp_path, data)
    err = fails(["check", str(recipe)], tmp_path, capsys)
    offset = len(b'model a = "a"\r\nx = "\xc3\xa9\xc3\xa9')
    assert f"{recipe}:2:8: error: the recipe is not UTF-8 text (byte {offset} on line 2)" in err


@pytest.mark.parametrize("verb", VERBS)
@pytest.mark.parametrize(("encoding", "name"), [("utf-16", "UTF-16"), ("utf-32", "UTF-32")])
def test_utf16_and_utf32_recipes_are_named(
    verb: str, encoding: str, name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = write_bytes(tmp_path, GOOD.encode(encoding))  # with a byte order mark
    err = fails(argv(verb, recipe, tmp_path), tmp_path, capsys)
    assert f"{recipe}: error: the recipe is {name} text, not UTF-8" in err


def test_utf16_without_a_bom_is_a_nul_character(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = write_bytes(tmp_path, GOOD.encode("utf-16-le"))
    err = fails(["check", str(recipe)], tmp_path, capsys)
    assert f"{recipe}:1:2: error: the recipe holds a NUL character (U+0000)" in err


@pytest.mark.parametrize("verb", ["check", "fmt"])
def test_binary_stdin(
    verb: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    feed_stdin(monkeypatch, b'model a = "a"\nsave a to "\xe9.safetensors"\n')
    err = fails([verb, "-"], tmp_path, capsys)
    assert "<stdin>:2:12: error: the recipe is not UTF-8 text (byte 25 on line 2)" in err


def test_closed_stdin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", None)
    err = fails(["check", "-"], tmp_path, capsys)
    assert "<stdin>: error: standard input is closed" in err


# ---- NUL and other control characters -----------------------------------------------------------


@pytest.mark.parametrize("verb", VERBS)
@pytest.mark.parametrize(
    ("text", "line", "column"),
    [
        ('model a = "a\0.safetensors"\nmodel b = "b"\n', 1, 13),
        (MODELS + 'save weighted_sum(a, b) to "out/\0mix.safetensors"\n', 3, 33),
        (MODELS + "# a comment\0\n", 3, 12),
        ("\0" + GOOD, 1, 1),
    ],
)
def test_nul_character_is_refused_with_its_place(
    verb: str,
    text: str,
    line: int,
    column: int,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    recipe = write_bytes(tmp_path, text.encode("utf-8"))
    err = fails(argv(verb, recipe, tmp_path), tmp_path, capsys)
    assert f"{recipe}:{line}:{column}: error: the recipe holds a NUL character (U+0000)" in err


@pytest.mark.parametrize("char", ["\x1b", "\x07", "\x7f", "\x85", "\x0c"])
def test_control_characters_are_refused_and_never_echoed(
    char: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = MODELS + f'save a to "out/{char}[31mred.safetensors"\n'
    recipe = write_bytes(tmp_path, text.encode("utf-8"))
    err = fails(["check", str(recipe)], tmp_path, capsys)
    code = f"U+{ord(char):04X}"
    assert f"{recipe}:3:16: error: the recipe holds the control character {code}" in err
    assert char not in err  # shown as "?" under the caret, never sent to the terminal
    assert '   3 | save a to "out/?[31mred.safetensors"' in err


def test_a_no_break_space_is_named_by_its_code_point(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = write_bytes(tmp_path, (MODELS + "x =\u00a0a\n").encode("utf-8"))
    err = fails(["check", str(recipe)], tmp_path, capsys)
    assert f"{recipe}:3:4: error: unexpected character U+00A0" in err


def test_line_separators_inside_strings_keep_later_lines_in_place(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # U+2028 is a line break to str.splitlines, not to the parser: line 4 must show line 4.
    text = MODELS + 'save a to "x\u2028y.safetensors"\nsave zz to "o.safetensors"\n'
    recipe = write_bytes(tmp_path, text.encode("utf-8"))
    err = fails(["check", str(recipe)], tmp_path, capsys)
    assert f"{recipe}:4:6: error: undefined name 'zz'" in err
    assert '   4 | save zz to "o.safetensors"' in err


# ---- size ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def huge_recipes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """20 MB of comments, and 10^5 statements (about 3 MB)."""
    folder = tmp_path_factory.mktemp("huge")
    comments = MODELS + ("# " + "c" * 97 + "\n") * 200_000 + 'save a to "o.safetensors"\n'
    statements = MODELS + "".join(f"x{i} = weighted_sum(a, b)\n" for i in range(100_000))
    return {
        "comments": write_bytes(folder, comments.encode(), "comments.merge"),
        "statements": write_bytes(folder, statements.encode(), "statements.merge"),
    }


@pytest.mark.parametrize("verb", VERBS)
@pytest.mark.parametrize("kind", ["comments", "statements"])
def test_huge_recipe_is_refused_at_once(
    verb: str,
    kind: str,
    huge_recipes: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    recipe = huge_recipes[kind]
    before = snapshot(recipe.parent)
    err = fails(argv(verb, recipe, tmp_path), tmp_path, capsys)
    assert f"{recipe}: error: the recipe is too large (over 256 KiB)" in err
    assert snapshot(recipe.parent) == before


def test_the_limit_is_256_kib() -> None:
    assert MAX_RECIPE_SIZE == 256 * KIB


@pytest.mark.parametrize("verb", ["check", "fmt"])
def test_a_recipe_just_under_the_limit_works(
    verb: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    comment = "# " + "c" * 97 + "\n"
    filler = comment * ((MAX_RECIPE_SIZE - len(GOOD) - 200) // len(comment))
    recipe = write_bytes(tmp_path, (MODELS + filler + GOOD[len(MODELS) :]).encode())
    assert MAX_RECIPE_SIZE - 300 < recipe.stat().st_size <= MAX_RECIPE_SIZE
    assert main([verb, str(recipe)]) == 0
    out = capsys.readouterr().out
    if verb == "check":
        assert out == (
            f"{recipe}: ok (inputs not checked: model 'a' not found, and 1 more): "
            "2 models, 0 steps, 1 output\n"
        )
    else:
        assert out.endswith('\nsave weighted_sum(a, b) to "out/mix.safetensors"\n')


@pytest.mark.parametrize("verb", ["check", "fmt", "convert"])
@pytest.mark.parametrize("stream", ["bytes", "text"])
def test_huge_stdin_is_refused(
    verb: str,
    stream: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = b"# comment\n" * (3 * MAX_RECIPE_SIZE // 10)
    if stream == "bytes":
        feed_stdin(monkeypatch, data)
    else:  # a text stream in place of stdin, as an embedding application may set
        monkeypatch.setattr(sys, "stdin", io.StringIO(data.decode()))
    err = fails([verb, "-"], tmp_path, capsys)
    assert "<stdin>: error: the recipe is too large (over 256 KiB)" in err


def test_thousands_of_errors_stop_at_the_limit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = write_bytes(tmp_path, (MODELS + "x = a\n" * 5000).encode())
    err = fails(["check", str(recipe)], tmp_path, capsys)
    assert err.count(": error: 'x' is already defined on line 3") == MAX_ERRORS
    # The list stops at the statement being checked when the limit was reached.
    assert f"{recipe}:{MAX_ERRORS + 3}:1: error: too many errors: stopped here after 100" in err


# ---- nesting and long lines ---------------------------------------------------------------------


NESTED = [
    # (text of the assignment's value, column of the first expression too deep)
    ("a + (" * 10_000 + "a" + ")" * 10_000, 5 + len("a + (") * MAX_NESTING),
    ("weighted_sum(a, " * 10_000 + "a" + ")" * 10_000, 5 + len("weighted_sum(a, ") * MAX_NESTING),
    ("[" * 10_000 + "1" + "]" * 10_000, 5 + MAX_NESTING),
    ("{IN00: " * 10_000 + "1" + "}" * 10_000, 5 + len("{IN00: ") * MAX_NESTING),
    ("-" * 10_000 + "GRAD_V", 5 + MAX_NESTING),
]


@pytest.mark.parametrize(
    ("verb", "value", "column"),
    [
        *[("check", value, column) for value, column in NESTED],
        *[(verb, *NESTED[0]) for verb in ("fmt", "plan", "run")],
    ],
    ids=["sum", "call", "list", "map", "neg", "fmt", "plan", "run"],
)
def test_deeply_nested_expression_is_a_located_error(
    verb: str, value: str, column: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = write_bytes(tmp_path, (MODELS + f"x = {value}\n").encode())
    err = fails(argv(verb, recipe, tmp_path), tmp_path, capsys)
    message = f"this expression nests more than {MAX_NESTING} levels deep"
    assert f"{recipe}:3:{column}: error: {message}" in err
    assert "RecursionError" not in err


@pytest.mark.parametrize("verb", VERBS)
def test_deeply_nested_loops_are_a_located_error(
    verb: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    depth = MAX_LOOP_NESTING + 5
    lines = [" " * i + f"for v{i} in [1]:" for i in range(depth)]
    text = MODELS + "\n".join(lines) + "\n" + " " * depth + 'save a to "o.safetensors"\n'
    recipe = write_bytes(tmp_path, text.encode())
    err = fails(argv(verb, recipe, tmp_path), tmp_path, capsys)
    line, column = 3 + MAX_LOOP_NESTING, 1 + MAX_LOOP_NESTING
    message = f"for loops nest more than {MAX_LOOP_NESTING} levels deep here"
    assert f"{recipe}:{line}:{column}: error: {message}" in err


def test_loops_that_multiply_past_the_limit_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = MODELS + (
        "for x in IN00..OUT11:\n"
        "    for y in IN00..OUT11:\n"
        "        for z in IN00..OUT11:\n"
        '            save a to "out/{x}-{y}-{z}.safetensors"\n'
    )
    recipe = write_bytes(tmp_path, text.encode())
    err = fails(["check", str(recipe)], tmp_path, capsys)
    # Each x runs the y loop (25 statements) and 25 z loops (25 each): 25 + 650 per x, so
    # the count passes 10000 in a z loop of the 16th x; that loop is reported.
    message = "the for loops would run more than 10000 statements in all"
    assert f"{recipe}:5:9: error: {message}" in err


@pytest.mark.parametrize("verb", ["check", "fmt"])
def test_deep_parentheses_alone_are_fine(
    verb: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = MODELS + "save weighted_sum(a, b, alpha=" + "(" * 10_000 + "0.5" + ")" * 10_000
    recipe = write_bytes(tmp_path, (text + ') to "o.safetensors"\n').encode())
    assert main([verb, str(recipe)]) == 0
    out = capsys.readouterr().out
    if verb == "fmt":
        assert out == MODELS + 'save weighted_sum(a, b, alpha=0.5) to "o.safetensors"\n'


@pytest.mark.parametrize("verb", VERBS)
def test_unclosed_brackets_by_the_thousand(
    verb: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = write_bytes(tmp_path, (MODELS + "x = " + "(" * 10_000 + "a\n").encode())
    err = fails(argv(verb, recipe, tmp_path), tmp_path, capsys)
    assert f"{recipe}:3:{4 + 10_000}: error: '(' is never closed" in err


@pytest.mark.parametrize("verb", ["check", "run"])
def test_very_long_line_is_shown_cut_around_the_error(
    verb: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    values = ", ".join(["0.5"] * 10_000)  # 50 KB on one line
    text = MODELS + f'save weighted_sum(a, b, alpha=[{values}], base=zz) to "o.safetensors"\n'
    recipe = write_bytes(tmp_path, text.encode())
    err = fails(argv(verb, recipe, tmp_path), tmp_path, capsys)
    column = len("save weighted_sum(a, b, alpha=") + 1
    assert f"{recipe}:3:{column}: error: a block weight vector has 25 or 26 values" in err
    zz = text.index("zz)") - len(MODELS) + 1
    assert f"{recipe}:3:{zz}: error: unknown preset or name 'zz'" in err
    shown = [line for line in err.splitlines() if re.match(r" +(\d+ )?\|", line)]
    assert shown and max(len(line) for line in shown) < SHOWN_LINE_WIDTH + 20


@pytest.mark.parametrize("verb", ["check", "fmt"])
def test_very_long_line_with_a_syntax_error(
    verb: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    values = ", ".join(["0.5"] * 10_000) + " 0.5"  # a comma missing at the very end
    text = MODELS + f"x = [{values}]\n"
    recipe = write_bytes(tmp_path, text.encode())
    err = fails(argv(verb, recipe, tmp_path), tmp_path, capsys)
    column = len(text) - len(MODELS) - len("0.5]\n") + 1
    assert f"{recipe}:3:{column}: error: missing ',' between list items" in err
    assert max(len(line) for line in err.splitlines()) < SHOWN_LINE_WIDTH + 20
    assert "   3 | ..." in err  # the start of the line is cut off


# ---- the recipe path ----------------------------------------------------------------------------


@pytest.mark.parametrize("verb", VERBS)
def test_recipe_path_is_a_folder(
    verb: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "recipes.merge"
    folder.mkdir()
    err = fails(argv(verb, folder, tmp_path), tmp_path, capsys)
    assert f"{folder}: error: this is a folder, not a recipe file" in err


@pytest.mark.parametrize("verb", VERBS)
def test_recipe_path_is_missing(
    verb: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.merge"
    err = fails(argv(verb, missing, tmp_path), tmp_path, capsys)
    assert f"{missing}: error: recipe file not found" in err
    inside_a_file = write_bytes(tmp_path, GOOD.encode()) / "x.merge"
    err = fails(argv(verb, inside_a_file, tmp_path), tmp_path, capsys)
    assert f"{inside_a_file}: error: cannot read the recipe: Not a directory" in err


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs file permissions")
@pytest.mark.parametrize("verb", VERBS)
def test_recipe_path_is_unreadable(
    verb: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = write_bytes(tmp_path, GOOD.encode())
    recipe.chmod(0)
    try:
        err = fails(argv(verb, recipe, tmp_path), tmp_path, capsys)
    finally:
        recipe.chmod(0o644)
    assert f"{recipe}: error: cannot read the recipe: Permission denied" in err


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("verb", VERBS)
def test_recipe_path_is_a_fifo_without_a_writer(
    verb: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fifo = tmp_path / "pipe.merge"
    os.mkfifo(fifo)
    err = fails(argv(verb, fifo, tmp_path), tmp_path, capsys)
    assert f"{fifo}: error: this is not a regular file (a FIFO, socket or device)" in err
    assert "hint: to read a recipe from a pipe, give - and feed it on standard input" in err


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_recipe_path_is_a_device(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = fails(["check", "/dev/zero"], tmp_path, capsys)
    assert "/dev/zero: error: this is not a regular file (a FIFO, socket or device)" in err


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_preset_file_that_is_a_fifo_or_a_device(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    os.mkfifo(tmp_path / "presets.tsv")
    text = 'presets "presets.tsv"\npresets "/dev/zero"\n' + GOOD
    recipe = write_bytes(tmp_path, text.encode())
    err = fails(["check", str(recipe)], tmp_path, capsys)
    reason = "this is not a regular file (a FIFO, socket or device)"
    said = f"cannot read preset file: {reason}"
    assert f"{recipe}:1:9: error: cannot load presets from 'presets.tsv': {said}" in err
    assert f"{recipe}:2:9: error: cannot load presets from '/dev/zero': {said}" in err


# ---- flags --------------------------------------------------------------------------------------


@pytest.mark.parametrize("verb", ["check", "plan", "run"])
@pytest.mark.parametrize(
    ("item", "detail"),
    [
        ("x", ""),
        ("=1", ""),
        ("$=1", ""),
        ("1A=x", ", with NAME letters, digits and _, not starting with a digit"),
        ("A-B=x", ", with NAME letters, digits and _, not starting with a digit"),
        ("é=x", ", with NAME letters, digits and _, not starting with a digit"),
        ("__O0__=x", "; __O0__ is a Merge Board output reference, not a variable"),
        ("O12=x", "; __O12__ is a Merge Board output reference, not a variable"),
    ],
)
def test_bad_set_is_a_usage_error(
    verb: str, item: str, detail: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = write_bytes(tmp_path, GOOD.encode())
    err = fails(argv(verb, recipe, tmp_path, "--set", item), tmp_path, capsys, status=2)
    assert f"error: --set {item}: expected NAME=VALUE{detail}\n" in err


def test_o0_in_a_recipe_points_at_output_references(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = write_bytes(tmp_path, b"o = __O0__ + __A__, 0.5\n")
    err = fails(["check", str(recipe), "--set", "A=a.safetensors"], tmp_path, capsys)
    assert f"{recipe}:1:5: error: the variable __O0__ is not bound" in err
    assert "hint: __On__ is the output of Merge Board line n, counted from __O1__" in err


@pytest.mark.parametrize("verb", ["plan", "run"])
@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "expected 1 to 256, not 0"),
        ("-3", "expected 1 to 256, not -3"),
        ("100000", "expected 1 to 256, not 100000"),
        ("two", "expected a whole number, not 'two'"),
        ("1.5", "expected a whole number, not '1.5'"),
    ],
)
def test_bad_workers_is_a_usage_error(
    verb: str, value: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = write_bytes(tmp_path, GOOD.encode())
    err = fails(argv(verb, recipe, tmp_path, f"--workers={value}"), tmp_path, capsys, 2)
    assert f"argument --workers: {message}" in err


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "cuda:-1", ""])
def test_bad_device_is_a_usage_error(
    device: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = write_bytes(tmp_path, GOOD.encode())
    err = fails(argv("run", recipe, tmp_path, f"--device={device}"), tmp_path, capsys, 2)
    assert f"error: unknown device '{device}'" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_absent_cuda_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = write_bytes(tmp_path, GOOD.encode())
    err = fails(argv("run", recipe, tmp_path, "--device", "cuda"), tmp_path, capsys, 2)
    assert "error: --device cuda: CUDA is not available" in err


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_models(tmp_path_factory, ["a", "b"])


@pytest.mark.parametrize("where", ["file", "below-a-file"])
def test_out_dir_that_cannot_be_a_folder(
    where: str,
    models: Path,
    tmp_path_factory: pytest.TempPathFactory,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    recipe = write_bytes(tmp_path, (declare(models, "a", "b") + GOOD[len(MODELS) :]).encode())
    blocker = write_bytes(tmp_path, b"not a folder", "blocker")
    out_dir = blocker if where == "file" else blocker / "sub"
    # The cache folder (which remembers the inputs' hashes) is kept out of the snapshot.
    cache = tmp_path_factory.mktemp("cache")
    args = ["run", str(recipe), "--out-dir", str(out_dir), "--cache-dir", str(cache)]
    err = fails(args, tmp_path, capsys, 2)
    # Refused before anything is read: the message names the flag and the path.
    assert f"error: --out-dir {out_dir}: not a folder (a file is in the way)" in err, err


# ---- in a real process ------------------------------------------------------------------------


def test_binary_recipe_in_a_process(tmp_path: Path) -> None:
    recipe = write_bytes(tmp_path, random.Random(3).randbytes(2 * KIB) + b"\0")
    done = run_process(["check", str(recipe)], tmp_path)
    assert done.returncode == 1
    assert done.stdout == ""
    assert re.match(rf"{re.escape(str(recipe))}:1:\d+: error: the recipe is not UTF-8", done.stderr)
    assert "Traceback" not in done.stderr


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_in_a_process_does_not_wait(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.merge"
    os.mkfifo(fifo)
    done = run_process(["fmt", str(fifo)], tmp_path)  # would block on open() without care
    assert done.returncode == 1
    assert f"{fifo}: error: this is not a regular file" in done.stderr
    assert "Traceback" not in done.stderr


def test_bad_flags_in_a_process(tmp_path: Path) -> None:
    recipe = write_bytes(tmp_path, GOOD.encode())
    done = run_process(["run", str(recipe), "--set", "__O0__=x"], tmp_path)
    assert (done.returncode, done.stdout) == (2, "")
    assert "error: --set __O0__=x: expected NAME=VALUE" in done.stderr
    assert "Traceback" not in done.stderr
    assert snapshot(tmp_path) == {"recipe.merge": hashlib.sha256(GOOD.encode()).hexdigest()}


def test_deep_nesting_in_a_process(tmp_path: Path) -> None:
    recipe = write_bytes(tmp_path, (MODELS + "x = " + "-(" * 20_000 + "a" + ")" * 20_000).encode())
    done = run_process(["plan", str(recipe)], tmp_path)
    assert done.returncode == 1
    column = 5 + len("-(") * MAX_NESTING
    assert f"{recipe}:3:{column}: error: this expression nests more than" in done.stderr
    assert "Traceback" not in done.stderr
