"""``mergelang check`` and ``mergelang fmt`` through ``mergelang.cli.main``."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mergelang.cli import main

TESTS = Path(__file__).parent
RECIPES = TESTS / "recipes"
SAMPLE_VARIABLES = [
    "--set",
    "SD14=sd14.ckpt",
    "--set",
    "SD15=sd15.safetensors",
    "--set",
    "F222=f222.ckpt",
    "--set",
    "WD13=wd13.ckpt",
]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def feed_stdin(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    data = text.encode("utf-8")
    stream = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8")
    monkeypatch.setattr(sys, "stdin", stream)


# ---- check -----------------------------------------------------------------------------------


def test_check_merge_board_sample(capsys: pytest.CaptureFixture[str]) -> None:
    recipe = RECIPES / "merge_board_sample.merge"
    assert main(["check", str(recipe), *SAMPLE_VARIABLES]) == 0
    captured = capsys.readouterr()
    assert captured.out == (
        f"{recipe}: ok (inputs not checked: model '__SD14__' not found, and 3 more): "
        "4 models, 6 steps, 6 outputs\n"
    )
    assert captured.err == ""


def test_check_mixed_recipe(capsys: pytest.CaptureFixture[str]) -> None:
    recipe = RECIPES / "mixed.merge"
    assert main(["check", str(recipe), *SAMPLE_VARIABLES]) == 0
    assert capsys.readouterr().out == (
        f"{recipe}: ok (inputs not checked: model '__SD14__' not found, and 6 more): "
        "7 models, 8 steps, 9 outputs\n"
    )


def test_check_reports_warnings_without_failing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = write(
        tmp_path / "r.merge",
        'model a = "a"\nmodel b = "b"\nx = weighted_sum(a, b)\nsave a to "o.safetensors"\n',
    )
    assert main(["check", str(recipe)]) == 0
    captured = capsys.readouterr()
    assert captured.out == (
        f"{recipe}: ok (inputs not checked: model 'a' not found, and 1 more): "
        "2 models, 1 step, 1 output, 1 warning\n"
    )
    assert f"{recipe}:3:1: warning: intermediate 'x' is neither used nor saved" in captured.err


def test_check_errors_go_to_stderr_with_locations(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = write(
        tmp_path / "bad.merge",
        'model a = "a"\nx = weighted_sum(a, zz, alpha=GRAD_W)\nsave x to "o"\n',
    )
    assert main(["check", str(recipe)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err
    assert f"{recipe}:2:21: error: undefined name 'zz'" in err
    assert f"{recipe}:2:31: error: unknown preset or name 'GRAD_W'" in err
    assert "hint: did you mean 'GRAD_V'?" in err
    assert "x = weighted_sum(a, zz, alpha=GRAD_W)" in err
    assert "2 errors" in err
    assert "Traceback" not in err


def test_check_syntax_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = write(tmp_path / "bad.merge", "mix = weighted_sum(a b)\n")
    assert main(["check", str(recipe)]) == 1
    err = capsys.readouterr().err
    assert f"{recipe}:1:22: error: missing ',' between arguments" in err


def test_check_unbound_variables_hint_at_set(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(RECIPES / "merge_board_sample.merge")]) == 1
    err = capsys.readouterr().err
    assert "error: the variable __SD14__ is not bound" in err
    assert "--set SD14=" in err


def test_check_set_accepts_sigils(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--set", "$SD14=a", "--set", "__SD15__=b", "--set", "F222=c", "--set", "WD13=d"]
    assert main(["check", str(RECIPES / "merge_board_sample.merge"), *args]) == 0
    capsys.readouterr()


@pytest.mark.parametrize("bad", ["NOVALUE", "=x", "1A=x", "A B=x"])
def test_malformed_set_is_a_usage_error(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(RECIPES / "issue_example.merge"), "--set", bad]) == 2
    err = capsys.readouterr().err
    assert f"--set {bad}: expected NAME=VALUE" in err


def test_check_reads_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    feed_stdin(monkeypatch, 'model a = "a"\nsave a * 0.5 to "half.safetensors"\n')
    assert main(["check", "-"]) == 0
    assert (
        capsys.readouterr().out
        == "<stdin>: ok (inputs not checked: model 'a' not found): 1 model, 0 steps, 1 output\n"
    )


def test_check_stdin_errors_name_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    feed_stdin(monkeypatch, 'save nothing to "o"\n')
    assert main(["check", "-"]) == 1
    assert "<stdin>:1:6: error: undefined name 'nothing'" in capsys.readouterr().err


def test_check_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.merge"
    assert main(["check", str(missing)]) == 1
    err = capsys.readouterr().err
    assert f"{missing}: error: recipe file not found" in err
    assert "Traceback" not in err


def test_check_non_utf8_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = tmp_path / "latin1.merge"
    recipe.write_bytes(b"# caf\xe9\n")
    assert main(["check", str(recipe)]) == 1
    assert "error: the recipe is not UTF-8 text (byte 5 on line 1)" in capsys.readouterr().err


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs file permissions")
def test_check_unreadable_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = write(tmp_path / "locked.merge", "x = 1\n")
    recipe.chmod(0)
    try:
        assert main(["check", str(recipe)]) == 1
    finally:
        recipe.chmod(0o644)
    assert "cannot read the recipe: Permission denied" in capsys.readouterr().err


def test_check_models_dir_finds_models(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from mergelang.testing import make_checkpoint

    models = tmp_path / "models"
    (models / "sub").mkdir(parents=True)
    make_checkpoint(models / "sub" / "SD1.5.safetensors", "sd1", scale=1 / 80)
    (models / "WD1.3.ckpt").write_bytes(b"x")  # found, but a .ckpt is not inspected
    make_checkpoint(tmp_path / "local.safetensors", "sd1", scale=1 / 80, seed=1)
    recipe = write(
        tmp_path / "r.merge",
        'model local = "local.safetensors"\n'
        "m = SD1.5 + WD1.3, 0.5\n"
        'save weighted_sum(m, local) to "o.safetensors"\n',
    )
    monkeypatch.delenv("MERGELANG_MODELS", raising=False)
    assert main(["check", str(recipe), "--models-dir", str(models)]) == 0
    assert capsys.readouterr().out == (
        f"{recipe}: ok: 3 models (sd1; 1 .ckpt not inspected), 1 step, 2 outputs\n"
    )


def test_check_models_dir_reports_missing_models_at_their_place(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    recipe = write(
        tmp_path / "r.merge", 'model gone = "gone.safetensors"\nsave gone to "o.safetensors"\n'
    )
    assert main(["check", str(recipe), "--models-dir", str(models)]) == 1
    err = capsys.readouterr().err
    assert f"{recipe}:1:14: error: model 'gone': cannot find this model" in err


# ---- fmt ---------------------------------------------------------------------------------------

MESSY = 'model   a="a.safetensors"\nmix=weighted_sum(a,a,alpha=.50)\nsave mix to "o"  # out\n'
CANONICAL = (
    'model a = "a.safetensors"\nmix = weighted_sum(a, a, alpha=0.5)\nsave mix to "o"  # out\n'
)


def test_fmt_prints_canonical_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = write(tmp_path / "r.merge", MESSY)
    assert main(["fmt", str(recipe)]) == 0
    assert capsys.readouterr().out == CANONICAL
    assert recipe.read_text() == MESSY


def test_fmt_several_files_are_labelled(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = write(tmp_path / "a.merge", MESSY)
    second = write(tmp_path / "b.merge", "x=1\n")
    assert main(["fmt", str(first), str(second)]) == 0
    assert capsys.readouterr().out == f"==> {first} <==\n{CANONICAL}==> {second} <==\nx = 1\n"


def test_fmt_write_rewrites_changed_files_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    messy = write(tmp_path / "messy.merge", MESSY)
    messy.chmod(0o640)
    tidy = write(tmp_path / "tidy.merge", CANONICAL)
    before = tidy.stat().st_mtime_ns
    os.utime(tidy, ns=(before - 10**9, before - 10**9))
    assert main(["fmt", "--write", str(messy), str(tidy)]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"reformatted {messy}\n"
    assert messy.read_text() == CANONICAL
    assert stat.S_IMODE(messy.stat().st_mode) == 0o640
    assert tidy.stat().st_mtime_ns == before - 10**9
    assert sorted(p.name for p in tmp_path.iterdir()) == ["messy.merge", "tidy.merge"]


def test_fmt_check_lists_files_and_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    messy = write(tmp_path / "messy.merge", MESSY)
    tidy = write(tmp_path / "tidy.merge", CANONICAL)
    assert main(["fmt", "--check", str(messy), str(tidy)]) == 1
    assert capsys.readouterr().out == f"would reformat {messy}\n"
    assert messy.read_text() == MESSY
    assert main(["fmt", "--check", str(tidy)]) == 0
    assert capsys.readouterr().out == ""


def test_fmt_write_and_check_together(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    messy = write(tmp_path / "messy.merge", MESSY)
    assert main(["fmt", "--write", "--check", str(messy)]) == 1
    assert messy.read_text() == CANONICAL
    assert main(["fmt", "--write", "--check", str(messy)]) == 0
    capsys.readouterr()


def test_fmt_crlf_file_keeps_its_line_endings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = tmp_path / "crlf.merge"
    recipe.write_bytes(CANONICAL.replace("\n", "\r\n").encode())
    assert main(["fmt", "--write", str(recipe)]) == 0
    assert recipe.read_bytes() == CANONICAL.replace("\n", "\r\n").encode()
    assert capsys.readouterr().err == ""


def test_fmt_reports_bad_files_and_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = write(tmp_path / "bad.merge", "x = [1, 2\n")
    messy = write(tmp_path / "messy.merge", MESSY)
    assert main(["fmt", "--write", str(bad), str(messy)]) == 1
    captured = capsys.readouterr()
    assert f"{bad}:1:5: error: '[' is never closed" in captured.err
    assert bad.read_text() == "x = [1, 2\n"
    assert messy.read_text() == CANONICAL


def test_fmt_stdin(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    feed_stdin(monkeypatch, MESSY)
    assert main(["fmt", "-"]) == 0
    assert capsys.readouterr().out == CANONICAL


def test_fmt_cannot_write_stdin(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fmt", "--write", "-"]) == 2
    assert "--write cannot rewrite standard input" in capsys.readouterr().err


def test_fmt_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fmt", str(tmp_path / "nope.merge")]) == 1
    assert "error: recipe file not found" in capsys.readouterr().err


def test_pre_commit_hook_definition() -> None:
    text = (TESTS.parent / ".pre-commit-hooks.yaml").read_text(encoding="utf-8")
    assert "- id: mergelang-fmt\n" in text
    assert "  entry: mergelang-fmt --write\n" in text
    assert "  files: \\.merge$\n" in text


# ---- startup -------------------------------------------------------------------------------------


def test_check_and_fmt_never_import_torch(tmp_path: Path) -> None:
    recipe = write(
        tmp_path / "r.merge",
        'model a = "a.safetensors"\nmodel b = "b.safetensors"\n'
        'save weighted_sum(a, b, alpha=GRAD_V) to "o.safetensors"\n',
    )
    script = (
        "import sys\n"
        "from mergelang.cli import main\n"
        "assert main(['check', sys.argv[1]]) == 0\n"
        "assert main(['fmt', sys.argv[1]]) == 0\n"
        "assert main(['fmt', '--check', sys.argv[1]]) == 0\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print('no torch')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(recipe)],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("no torch\n")
