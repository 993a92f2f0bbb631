"""Hostile files: preset files that are secrets, terminal escapes in what is printed from a
file, and zip and pickle bombs in ``.ckpt`` files. Every hostile file is made here."""

from __future__ import annotations

import io
import os
import pickle
import struct
import time
import zipfile
from pathlib import Path

import pytest
import torch

from mergelang.cli import main
from mergelang.cli.console import print_diagnostics
from mergelang.errors import (
    CheckpointError,
    Diagnostic,
    RecipeError,
    Span,
    format_diagnostic,
    printable,
)
from mergelang.io.ckpt import CkptReader
from mergelang.io.pickle_bounds import BOMB_CODE, MAX_PICKLE_BYTES, MAX_PICKLE_OPCODES
from mergelang.presets import PRESET_FILE_CODE, load_preset_file
from mergelang.testing import make_checkpoint

ESCAPES = "\x1b]0;pwned\x07\x1b[2J\x00\x9b31m\u202eevil"
"""Set the window title, clear the screen, a NUL, a C1 CSI and a right-to-left override."""


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MERGELANG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("NO_COLOR", "1")


def _no_controls(text: str) -> None:
    bad = [c for c in text if (ord(c) < 0x20 and c not in "\n\t") or 0x7F <= ord(c) <= 0x9F]
    assert bad == []
    assert "\u202e" not in text


# -- item 1: a preset file never echoes what does not look like a preset line ------------


SECRETS = [
    "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY",
    "root:$6$saltsalt$hashhashhash:19000:0:99999:7:::",
    "-----BEGIN OPENSSH PRIVATE KEY-----",
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW",
    "token: ghp_abcdefghijklmnopqrstuvwxyz0123456789",
]


def test_a_secret_file_named_as_presets_is_not_echoed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = tmp_path / "secrets.env"
    secret.write_text("\n".join(SECRETS) + "\n", encoding="utf-8")
    with pytest.raises(RecipeError) as info:
        load_preset_file(secret)
    diags = info.value.diagnostics
    assert [(d.line, d.column, d.message) for d in diags] == [
        (n, 1, "cannot read this line as a preset") for n in range(1, 6)
    ]
    assert all(d.source_line is None and d.code == PRESET_FILE_CODE for d in diags)
    rendered = str(info.value)
    for fragment in ("wJalr", "saltsalt", "OPENSSH", "b3Blbn", "ghp_", "AWS", "99999"):
        assert fragment not in rendered

    recipe = tmp_path / "r.merge"
    recipe.write_text(f'presets "{secret}"\n', encoding="utf-8")
    assert main(["check", str(recipe)]) == 1
    captured = capsys.readouterr()
    for fragment in ("wJalr", "saltsalt", "OPENSSH", "b3Blbn", "ghp_"):
        assert fragment not in captured.out + captured.err


def test_a_preset_like_line_is_still_quoted(tmp_path: Path) -> None:
    path = tmp_path / "p.tsv"
    path.write_text("NUM: 1, 2, abc, 4\n", encoding="utf-8")
    with pytest.raises(RecipeError) as info:
        load_preset_file(path)
    (diag,) = info.value.diagnostics
    assert (diag.line, diag.column, diag.message) == (1, 12, "'abc' is not a number")
    assert diag.source_line == "NUM: 1, 2, abc, 4"


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="no /proc")
@pytest.mark.parametrize("name", ["/proc/self/environ", "/proc/self/cmdline", "/sys/kernel"])
def test_proc_and_sys_files_are_refused_unread(name: str) -> None:
    if not Path(name).exists():
        pytest.skip(f"{name} is missing here")
    with pytest.raises(RecipeError) as info:
        load_preset_file(Path(name))
    (diag,) = info.value.diagnostics
    assert diag.code == PRESET_FILE_CODE
    assert "is a system file under /proc or /sys, not a preset file" in diag.message
    assert diag.span is None


def test_a_symlink_into_proc_is_refused(tmp_path: Path) -> None:
    if not Path("/proc/self/environ").exists():
        pytest.skip("no /proc")
    link = tmp_path / "presets.tsv"
    link.symlink_to("/proc/self/environ")
    with pytest.raises(RecipeError) as info:
        load_preset_file(link)
    assert "under /proc or /sys" in info.value.diagnostics[0].message


def test_a_binary_file_is_refused_without_quoting(tmp_path: Path) -> None:
    path = tmp_path / "blob.tsv"
    path.write_bytes(b"GOOD: 1, 2\nKEY=hunter2\x00more\n")
    with pytest.raises(RecipeError) as info:
        load_preset_file(path)
    (diag,) = info.value.diagnostics
    assert diag.message == (
        "cannot read preset file: it is not a text file (control character 0x00 at offset 22)"
    )
    assert "hunter2" not in str(info.value)


# -- item 2: one escaping function for everything printed from a file ---------------------


def test_printable_escapes_c0_c1_and_bidi_controls() -> None:
    assert printable("a\x1b[2Jb") == "a\\x1b[2Jb"
    assert printable("\x00\x07\x7f\x9b") == "\\x00\\x07\\x7f\\x9b"
    assert printable("x\u202ey\u2066z\u200f") == "x\\u202ey\\u2066z\\u200f"
    assert printable("tab\tand\nnewline é ü 漢字") == "tab\tand\nnewline é ü 漢字"
    assert printable("a\x1b\u202eb\tc", one_column=True) == "a??b?c"


def test_diagnostics_escape_messages_keys_hints_and_source_lines(
    capsys: pytest.CaptureFixture[str],
) -> None:
    diag = Diagnostic(
        f"bad {ESCAPES}",
        "x",
        path=f"m{ESCAPES}.safetensors",
        span=Span(1, 3, 1, 5),
        hint=f"h{ESCAPES}",
        source_line=f"ab{ESCAPES}",
        key=f"k{ESCAPES}",
    )
    text = format_diagnostic(diag)
    _no_controls(text)
    assert "\\x1b]0;pwned\\x07" in text
    assert "\\u202eevil" in text
    from rich.console import Console

    console = Console(file=io.StringIO(), highlight=False, soft_wrap=True, no_color=True)
    print_diagnostics(console, [diag])
    shown = console.file.getvalue()  # type: ignore[attr-defined]
    _no_controls(shown)
    assert "\\x1b[2J" in shown


def test_show_escapes_metadata_values_keys_and_embedded_recipes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    metadata = {
        "mergelang.recipe": f"model a = 'x'\n# {ESCAPES}\n",
        "mergelang.version": f"0.1{ESCAPES}",
        f"key{ESCAPES}": f"value{ESCAPES}",
        "modelspec.title": ESCAPES,
    }
    path = make_checkpoint(tmp_path / f"m{ESCAPES[:9]}.safetensors", "sd1", metadata=metadata)
    assert main(["show", str(path), "--no-hashes"]) == 0
    out = capsys.readouterr().out
    _no_controls(out)
    assert "\\x1b]0;pwned\\x07\\x1b[2J\\x00\\x9b31m\\u202eevil" in out


def test_plan_text_escapes_names_from_files(tmp_path: Path) -> None:
    from mergelang.api import plan
    from mergelang.plan.text import render_plan

    folder = tmp_path / "x\x1b[2J\u202e"
    folder.mkdir()
    make_checkpoint(folder / "a.safetensors", "sd1", seed=1)
    recipe = folder / "r.merge"
    recipe.write_text('model a = "a.safetensors"\nsave a to "o.safetensors"\n', encoding="utf-8")
    text = render_plan(plan(recipe))
    _no_controls(text)
    assert "x\\x1b[2J\\u202e/r.merge" in text


# -- item 3: zip and pickle bombs ---------------------------------------------------------


def _rewrite_zip(source: Path, target: Path, *, compress: str | None = None) -> None:
    """Copy the archive ``source`` to ``target``, deflating the records named ``compress``."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for record in old.infolist():
            data = old.read(record)
            kind = zipfile.ZIP_DEFLATED if record.filename == compress else zipfile.ZIP_STORED
            new.writestr(record.filename, data, compress_type=kind)


def _refused(path: Path) -> Diagnostic:
    with pytest.raises(CheckpointError) as caught:
        CkptReader(path)
    diag = caught.value.diagnostics[0]
    assert diag.code == BOMB_CODE
    assert diag.path == str(path)
    return diag


def test_a_deflated_data_pkl_is_refused_before_it_is_inflated(tmp_path: Path) -> None:
    plain = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {"w": torch.ones(4)}}, plain)
    bomb = tmp_path / "deflated.ckpt"
    _rewrite_zip(plain, bomb, compress="plain/data.pkl")
    diag = _refused(bomb)
    assert diag.message == (
        "the archive record 'plain/data.pkl' is compressed; torch.save never compresses, "
        "and a compressed record can inflate to any size"
    )
    assert CkptReader(plain).keys() == ["w"]


def test_declared_sizes_above_the_file_size_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "liar.ckpt"
    torch.save({"state_dict": {"w": torch.ones(4)}}, path)
    data = bytearray(path.read_bytes())
    # Raise the uncompressed and compressed sizes of the first central directory entry.
    central = data.find(b"PK\x01\x02")
    struct.pack_into("<II", data, central + 20, 2**31, 2**31)
    path.write_bytes(bytes(data))
    diag = _refused(path)
    assert diag.message.startswith("the archive's records declare ")
    assert f"more than the file's {len(data):,}" in diag.message


def test_an_oversized_data_pkl_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.ckpt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("big/data.pkl", b"\x80\x02N." + b"\x00" * MAX_PICKLE_BYTES)
    diag = _refused(path)
    assert diag.message == (
        f"its data.pkl is {MAX_PICKLE_BYTES + 4:,} bytes, over the 16 MiB a checkpoint's "
        "pickle needs at most"
    )


def _opcode_bomb(count: int) -> bytes:
    """A pickle of about ``count`` operations: a list grown one None at a time."""
    return b"\x80\x02]q\x00" + b"Na" * (count // 2) + b"."


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_a_pickle_of_too_many_operations_is_refused_quickly(tmp_path: Path, layout: str) -> None:
    body = _opcode_bomb(MAX_PICKLE_OPCODES + 10)
    path = tmp_path / "ops.ckpt"
    if layout == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("ops/data.pkl", body)
            archive.writestr("ops/version", b"3\n")
    else:
        path.write_bytes(body)
    started = time.monotonic()
    diag = _refused(path)
    assert time.monotonic() - started < 30
    assert diag.message == (
        f"the pickle holds more than {MAX_PICKLE_OPCODES:,} operations "
        "(a checkpoint needs about 20 per tensor)"
    )


def test_a_stride_0_expanded_tensor_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "expanded.ckpt"
    small = torch.ones(4, dtype=torch.float16)
    expanded = small.expand(1000, 4)  # 4000 elements over a 4-element storage
    torch.save({"state_dict": {"ok": torch.ones(3), "big": expanded}}, path)
    diag = _refused(path)
    assert diag.key == "big"
    assert diag.message == (
        "the tensor has 4,000 elements but its storage holds 4 (expanded with a stride of 0 "
        "or overlapping strides); mergelang reads only tensors stored element by element"
    )


def test_views_and_transposes_are_still_read(tmp_path: Path) -> None:
    path = tmp_path / "views.ckpt"
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    torch.save({"t": base.t(), "row": base[1], "base": base}, path)
    reader = CkptReader(path)
    assert reader.shapes() == {"t": (4, 3), "row": (4,), "base": (3, 4)}
    assert torch.equal(reader.get("row"), torch.tensor([4.0, 5.0, 6.0, 7.0]))


def test_pickle_bounds_do_not_import_torch() -> None:
    import subprocess
    import sys

    code = "import sys, mergelang.io.pickle_bounds; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ
    ).stdout
    assert out.strip() == "False"


def test_plain_pickle_is_still_loaded(tmp_path: Path) -> None:
    path = tmp_path / "plain.pt"
    path.write_bytes(pickle.dumps({"w": 1}, protocol=2))
    with pytest.raises(CheckpointError) as caught:
        CkptReader(path)
    assert caught.value.diagnostics[0].code != BOMB_CODE


def test_progress_notes_and_key_details_are_escaped() -> None:
    from rich.console import Console

    from mergelang.cli.progress import RichReporter

    stream = io.StringIO()
    console = Console(file=stream, force_terminal=False, no_color=True, width=200)
    with RichReporter(console, enabled=True) as reporter:
        reporter.note(f"note {ESCAPES}")
        reporter.phase("merge", 10, f"key{ESCAPES}")
        reporter.advance(10, f"key{ESCAPES}")
    shown = stream.getvalue()
    assert "note \\x1b]0;pwned\\x07\\x1b[2J" in shown
    assert "\x1b" not in shown and "\u202e" not in shown and "\x9b" not in shown


def test_preset_files_are_bounded_like_recipes() -> None:
    from mergelang.lang.parser import MAX_RECIPE_SIZE
    from mergelang.presets import MAX_PRESET_FILE_SIZE

    assert MAX_PRESET_FILE_SIZE == MAX_RECIPE_SIZE
