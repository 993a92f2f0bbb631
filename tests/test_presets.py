from __future__ import annotations

import math
import os
from importlib import resources
from pathlib import Path

import pytest
from weights_helpers import SD_SCHEME, SDXL_SCHEME, in_sd_terms, sd_slots, sd_weights

from mergelang.arch.sdxl import SDXL_BLOCKS
from mergelang.block_weights import BlockWeights, WeightsError
from mergelang.errors import RecipeError, Span
from mergelang.presets import (
    BUILTIN_PRESETS,
    PRESET_FILE_CODE,
    PresetTable,
    load_preset_file,
    parse_preset_text,
)


def vec(n: int, value: float = 0.5) -> str:
    return ",".join([str(value)] * n)


# --- built-ins ---------------------------------------------------------------------------


def test_builtin_count_and_order() -> None:
    names = list(BUILTIN_PRESETS)
    assert len(names) == 38
    assert names[:4] == ["GRAD_V", "GRAD_A", "FLAT_25", "FLAT_75"]
    assert names[-2:] == ["ALL_A", "ALL_B"]
    assert {"SMOOTHSTEP*2", "R_SMOOTHSTEP/3", "REVERSE-SMOOTHSTEP", "COSINE"} <= set(names)


def test_builtins_match_the_packaged_table() -> None:
    text = resources.files("mergelang.presets").joinpath("mbw.tsv").read_text(encoding="utf-8")
    rows = [line.split("\t") for line in text.splitlines()[1:] if line.strip()]
    assert len(rows) == 38
    for name, values in rows:
        numbers = tuple(float(v) for v in values.split(","))
        preset = BUILTIN_PRESETS[name]
        if name == "ALL_B":
            assert numbers[0] == preset.base == 1.0
            numbers = numbers[1:]
        else:
            assert preset.base is None
        assert sd_slots(preset) == numbers
        assert preset.origin == name


# SuperMerger's preset file (scripts/mbwpresets_master.txt at 0b1c491): BASE first, then the
# 25 values MBW's table gives. Every preset's BASE there is 0 except ALL_B's.
SUPERMERGER_BASE = {"ALL_B": 1.0}


def test_builtin_base_follows_supermerger_where_it_is_not_zero() -> None:
    for name, preset in BUILTIN_PRESETS.items():
        expected = SUPERMERGER_BASE.get(name)
        # BASE 0 in SuperMerger's table is what an unset BASE gives weighted_sum (base 0)
        assert preset.base == expected, name


def test_all_b_takes_the_text_encoder_from_b_as_supermerger_does() -> None:
    resolved = BUILTIN_PRESETS["ALL_B"].resolve(SD_SCHEME, base=0.0)
    assert resolved.base == 1.0
    assert BUILTIN_PRESETS["ALL_A"].resolve(SD_SCHEME, base=0.0).base == 0.0


def test_builtin_exact_values() -> None:
    grad_v = BUILTIN_PRESETS["GRAD_V"]
    assert sd_slots(grad_v)[0] == 1
    assert sd_slots(grad_v)[12] == 0
    assert sd_slots(grad_v)[24] == 1
    assert sd_slots(grad_v)[1] == 0.9166666667
    assert sd_slots(BUILTIN_PRESETS["ALL_B"]) == (1.0,) * 25
    assert sd_slots(BUILTIN_PRESETS["ALL_A"]) == (0.0,) * 25
    assert sd_slots(BUILTIN_PRESETS["FLAT_25"]) == (0.25,) * 25
    assert sd_slots(BUILTIN_PRESETS["COSINE"])[1] == 0.995722430686905


def test_builtin_gradients_follow_their_formulas() -> None:
    for i in range(25):
        assert sd_slots(BUILTIN_PRESETS["GRAD_V"])[i] == pytest.approx(abs(12 - i) / 12, abs=1e-9)
        assert sd_slots(BUILTIN_PRESETS["GRAD_A"])[i] == pytest.approx(
            1 - abs(12 - i) / 12, abs=1e-9
        )
        cosine = (1 + math.cos(math.pi * i / 24)) / 2
        assert sd_slots(BUILTIN_PRESETS["COSINE"])[i] == pytest.approx(cosine, abs=1e-12)


def test_builtin_presets_need_a_base_to_resolve() -> None:
    r = BUILTIN_PRESETS["GRAD_V"].resolve(SDXL_SCHEME, base=0.0)
    assert r["OUT08"] == sd_slots(BUILTIN_PRESETS["GRAD_V"])[21]
    assert r.base == 0.0


def test_builtins_are_read_only() -> None:
    with pytest.raises(TypeError):
        BUILTIN_PRESETS["GRAD_V"] = BlockWeights.scalar(1)  # type: ignore[index]


# --- user preset files -------------------------------------------------------------------


def test_load_tsv_with_header_comments_and_blanks(tmp_path: Path) -> None:
    path = tmp_path / "mine.tsv"
    text = (
        "preset_name\tpreset_weights\n"
        "# my presets\n"
        "\n"
        f"HALF\t{vec(25)}\n"
        f"WITH_BASE\t0.1,{vec(25, 1)}   # BASE first\n"
    )
    path.write_text(text, encoding="utf-8")
    presets = load_preset_file(path)
    assert list(presets) == ["HALF", "WITH_BASE"]
    assert presets["HALF"] == sd_weights(None, (0.5,) * 25)
    assert presets["WITH_BASE"].base == 0.1
    assert sd_slots(presets["WITH_BASE"]) == (1.0,) * 25
    assert presets["HALF"].origin == "HALF"
    assert path.read_text(encoding="utf-8") == text  # the input is untouched


def test_load_colon_and_equals_forms(tmp_path: Path) -> None:
    path = tmp_path / "mine.txt"
    sdxl = ", ".join(str(i / 10) for i in range(19))
    path.write_text(
        f"COLON: {vec(25, 0.2)}\n"
        f"EQUALS = {sdxl},\n"  # a trailing comma is tolerated
        f"  SDXL_BASE =0.7, {sdxl}\n",
        encoding="utf-8",
    )
    presets = load_preset_file(path)
    assert sd_slots(presets["COLON"]) == (0.2,) * 25
    equals = presets["EQUALS"]
    assert [equals.get(b) for b in SDXL_BLOCKS] == [i / 10 for i in range(19)]
    assert equals.get("IN09") is None
    assert presets["SDXL_BASE"].base == 0.7
    with pytest.raises(WeightsError, match=r"^SDXL_BASE sets only SDXL's 19 blocks"):
        presets["SDXL_BASE"].resolve(SD_SCHEME)


def test_load_handles_bom_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "win.tsv"
    path.write_bytes(("\ufeffX\t" + vec(25, 1) + "\r\nY: " + vec(26, 0) + "\r\n").encode())
    presets = load_preset_file(path)
    assert sd_slots(presets["X"]) == (1.0,) * 25
    assert in_sd_terms(presets["Y"]) == (0.0, (0.0,) * 25)


def test_empty_file_has_no_presets(tmp_path: Path) -> None:
    path = tmp_path / "empty.tsv"
    path.write_text("# nothing yet\n\n", encoding="utf-8")
    assert load_preset_file(path) == {}


def test_every_bad_line_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "bad.tsv"
    lines = [
        f"GOOD\t{vec(25)}",  # 1
        "SHORT\t" + vec(24),  # 2: wrong count
        "NUM: 1, 2, abc, 4",  # 3: bad number at column 12
        f"GOOD\t{vec(25)}",  # 4: duplicate name
        "no separator here",  # 5
        "X = 1,,2",  # 6: empty value at column 7
        "Y = nan," + vec(24),  # 7: not finite at column 5
        "two words: " + vec(25),  # 8: space in name
        f": {vec(25)}",  # 9: no name
        "Z:",  # 10: no values
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(RecipeError) as info:
        load_preset_file(path)
    diags = info.value.diagnostics
    assert all(d.code == PRESET_FILE_CODE for d in diags)
    assert all(d.path == str(path) for d in diags)
    found = [(d.line, d.column, d.message) for d in diags]
    assert found == [
        (
            2,
            7,
            "preset SHORT has 24 values; a preset has 25 or 26 (SD1/SD2), 19 or 20 (SDXL), 61 or "
            "59 (Flux.1), 26 or 27 (SD3/SD3.5 Medium) or 40 or 41 (SD3.5 Large)",
        ),
        (3, 12, "'abc' is not a number"),
        (4, 1, "preset GOOD is defined twice (first on line 1)"),
        (5, 1, "cannot read this line as a preset"),
        (6, 7, "a value is missing here (two commas in a row?)"),
        (7, 5, "'nan' is not a finite number"),
        (8, 1, "preset name 'two words' contains a space"),
        (9, 1, "a preset line needs a name before its values"),
        (10, 2, "preset Z has no values"),
    ]
    by_line = {d.line: d for d in diags}
    assert by_line[3].span == Span(3, 12, 3, 15)
    assert by_line[3].source_line == "NUM: 1, 2, abc, 4"
    assert by_line[2].hint == "26 and 20 and 27 and 41 values put BASE first"
    assert by_line[5].hint is not None
    assert "NAME<TAB>" in by_line[5].hint
    rendered = str(info.value)
    assert f"{path}:3:12: error: 'abc' is not a number" in rendered


def test_column_counts_tabs_as_one_character(tmp_path: Path) -> None:
    path = tmp_path / "tab.tsv"
    path.write_text("AB\t1,x" + "," + vec(23) + "\n", encoding="utf-8")
    with pytest.raises(RecipeError) as info:
        load_preset_file(path)
    (diag,) = info.value.diagnostics
    assert (diag.line, diag.column, diag.message) == (1, 6, "'x' is not a number")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.tsv"
    with pytest.raises(RecipeError) as info:
        load_preset_file(path)
    (diag,) = info.value.diagnostics
    assert diag.message == "cannot read preset file: No such file or directory"
    assert diag.path == str(path)
    assert diag.span is None
    assert diag.code == PRESET_FILE_CODE


def test_directory_is_not_a_preset_file(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="cannot read preset file: this is a folder, not a file"):
        load_preset_file(tmp_path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_is_refused_without_being_opened(tmp_path: Path) -> None:
    fifo = tmp_path / "presets.tsv"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer forever
    with pytest.raises(RecipeError) as info:
        load_preset_file(fifo)
    (diag,) = info.value.diagnostics
    assert diag.message == (
        "cannot read preset file: this is not a regular file (a FIFO, socket or device)"
    )
    assert diag.path == str(fifo)


def test_a_file_over_the_recipe_size_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "huge.tsv"
    line = "CURVE\t" + vec(25) + "\n"
    path.write_text(line * (256 * 1024 // len(line) + 1), encoding="utf-8")
    with pytest.raises(RecipeError, match=r"the file is too large \(over 256 KiB\)"):
        load_preset_file(path)
    path.write_text(line, encoding="utf-8")
    assert set(load_preset_file(path)) == {"CURVE"}


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.tsv"
    path.write_bytes(b"CAF\xc9\t" + vec(25).encode())
    with pytest.raises(RecipeError) as info:
        load_preset_file(path)
    assert info.value.diagnostics[0].message == (
        "cannot read preset file: it is not UTF-8 text (byte 0xc9 at offset 3)"
    )


def test_parse_preset_text_without_a_path() -> None:
    with pytest.raises(RecipeError) as info:
        parse_preset_text("A\t1,2\n")
    (diag,) = info.value.diagnostics
    assert diag.path is None
    assert diag.line == 1
    assert diag.column == 3


# --- preset table ------------------------------------------------------------------------


def test_table_defaults_to_builtins() -> None:
    table = PresetTable()
    assert table.names() == list(BUILTIN_PRESETS)
    assert table.get("GRAD_V") == BUILTIN_PRESETS["GRAD_V"]
    assert table.get("NOPE") is None
    assert "ALL_B" in table
    assert len(table) == 38
    assert table.files == ()


def test_table_with_file_overrides_and_adds(tmp_path: Path) -> None:
    path = tmp_path / "user.tsv"
    path.write_text(f"GRAD_V\t{vec(25, 0.125)}\nMINE: {vec(26, 0.75)}\n", encoding="utf-8")
    base = PresetTable()
    table = base.with_file(path)
    assert table.get("GRAD_V") == sd_weights(None, (0.125,) * 25)
    assert in_sd_terms(table.get("MINE")) == in_sd_terms(BlockWeights.scalar(0.75))
    assert table.names()[0] == "GRAD_V"
    assert table.names()[-1] == "MINE"
    assert len(table) == 39
    assert table.files == (path,)
    # the original table is unchanged
    assert base.get("GRAD_V") == BUILTIN_PRESETS["GRAD_V"]
    assert base.get("MINE") is None


def test_table_with_two_files_later_wins(tmp_path: Path) -> None:
    first = tmp_path / "a.tsv"
    second = tmp_path / "b.tsv"
    first.write_text(f"P\t{vec(25, 0.1)}\n", encoding="utf-8")
    second.write_text(f"P\t{vec(25, 0.2)}\n", encoding="utf-8")
    table = PresetTable().with_file(first).with_file(second)
    preset = table.get("P")
    assert preset is not None
    assert sd_slots(preset) == (0.2,) * 25
    assert table.files == (first, second)


def test_table_with_bad_file_raises(tmp_path: Path) -> None:
    path = tmp_path / "bad.tsv"
    path.write_text("P\t1,2,3\n", encoding="utf-8")
    with pytest.raises(RecipeError, match="preset P has 3 values"):
        PresetTable().with_file(path)


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("grad_v", "GRAD_V"),
        ("GRAD_X", "GRAD_V"),
        ("FLAT25", "FLAT_25"),
        ("cosin", "COSINE"),
        ("completely_different", None),
    ],
)
def test_table_suggest(typed: str, expected: str | None) -> None:
    assert PresetTable().suggest(typed) == expected


def test_table_from_explicit_presets() -> None:
    table = PresetTable({"ONLY": BlockWeights.scalar(1)})
    assert table.names() == ["ONLY"]
    assert table.suggest("only") == "ONLY"
