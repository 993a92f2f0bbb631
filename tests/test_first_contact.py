"""What a new user trips over first: a checkpoint given where a recipe goes and the other way
round, and the options every verb that plans takes."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from mergelang.cli import main


def tiny_safetensors(path: Path, size: int = 300_000) -> Path:
    """A safetensors file larger than a recipe may be: one uint8 tensor of ``size`` bytes."""
    header = json.dumps({"w": {"dtype": "U8", "shape": [size], "data_offsets": [0, size]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(size))
    return path


@pytest.mark.parametrize("verb", ["run", "check", "plan", "fmt"])
def test_a_checkpoint_given_as_the_recipe_is_named_a_checkpoint(
    verb: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    tiny_safetensors(tmp_path / "model.safetensors")

    status = main([verb, "model.safetensors"])

    captured = capsys.readouterr()
    assert status == 1
    assert captured.out == ""
    assert captured.err == (
        "model.safetensors: error: this is a model checkpoint, not a recipe\n"
        "  hint: a recipe is a .merge text file; to see what the checkpoint holds: "
        "mergelang show model.safetensors\n"
    )


def test_a_small_checkpoint_is_named_a_checkpoint_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    tiny_safetensors(tmp_path / "small.safetensors", size=4)
    assert main(["check", "small.safetensors"]) == 1
    assert "error: this is a model checkpoint, not a recipe" in capsys.readouterr().err


def test_show_of_a_recipe_says_it_is_a_recipe(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mix.merge").write_text(
        'model a = "a.safetensors"\nsave a to "out.safetensors"\n', encoding="utf-8"
    )

    status = main(["show", "mix.merge"])

    captured = capsys.readouterr()
    assert status == 1
    assert captured.err == (
        "mix.merge: error: this is a mergelang recipe, not a checkpoint\n"
        "  hint: to see what it would make: mergelang plan mix.merge\n"
    )


@pytest.mark.parametrize(
    ("target", "message", "hint"),
    [
        (
            "out/x.safetensor",
            "the save path 'out/x.safetensor' has the extension '.safetensor', which names no "
            "model format; it is written as safetensors",
            "did you mean '.safetensors'?",
        ),
        (
            "out/noext",
            "the save path 'out/noext' has no extension, which names no model format; it is "
            "written as safetensors",
            "end the path with .safetensors",
        ),
    ],
)
def test_a_save_path_without_a_model_extension_warns(target: str, message: str, hint: str) -> None:
    from mergelang.api import load

    checked = load(f'model a = "a.safetensors"\nsave a to "{target}"\n')

    (warning,) = checked.warnings
    assert (warning.code, warning.message, warning.hint) == ("save-extension", message, hint)
    assert warning.span is not None and (warning.span.line, warning.span.column) == (2, 11)


def test_a_save_path_with_a_format_option_does_not_warn() -> None:
    from mergelang.api import load

    checked = load('model a = "a.safetensors"\nsave a to "out/noext" with format=safetensors\n')
    assert checked.warnings == ()


PLANNED = 'model a = "a.safetensors"\nsave a to "out/x.safetensor"\n'


def test_plan_takes_device_and_quiet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mergelang.testing import make_checkpoint

    monkeypatch.chdir(tmp_path)
    make_checkpoint(tmp_path / "a.safetensors", "sd1", scale=0.05)
    (tmp_path / "r.merge").write_text(PLANNED, encoding="utf-8")
    cache = ["--cache-dir", str(tmp_path / "cache")]

    assert main(["plan", "r.merge", *cache]) == 0
    loud = capsys.readouterr()
    assert "warning: the save path 'out/x.safetensor'" in loud.err

    assert main(["plan", "r.merge", *cache, "--quiet", "--device", "cuda"]) == 0
    quiet = capsys.readouterr()
    assert quiet.err == ""
    assert "out/x.safetensor" in quiet.out


def test_check_takes_set_like_the_other_calls_and_variables_with_a_warning() -> None:
    import mergelang

    tree = mergelang.parse('model a = $A\nsave a to "out/a.safetensors"\n')
    assert mergelang.check(tree, set={"A": "a.safetensors"}).models["a"].ref == "a.safetensors"
    with pytest.warns(DeprecationWarning, match=r"check\(set=\.\.\.\)"):
        old = mergelang.check(tree, variables={"A": "b.safetensors"})
    assert old.models["a"].ref == "b.safetensors"


def test_a_model_not_found_suggests_the_near_match_among_the_files_searched(
    tmp_path: Path,
) -> None:
    from mergelang.errors import CheckpointError
    from mergelang.io.locate import ModelLocator

    models = tmp_path / "models"
    (models / "sd15").mkdir(parents=True)
    tiny_safetensors(models / "sd15" / "sd15-anime.safetensors", size=4)
    tiny_safetensors(models / "sd15-base.safetensors", size=4)

    with pytest.raises(CheckpointError) as caught:
        ModelLocator([models], env={}).find("sd15-anme")

    (diag,) = caught.value.diagnostics
    assert diag.code == "model-not-found"
    assert diag.hint == f"did you mean 'sd15-anime'? ({models / 'sd15' / 'sd15-anime.safetensors'})"

    with pytest.raises(CheckpointError) as far:
        ModelLocator([models], env={}).find("realistic")
    assert far.value.diagnostics[0].hint is None


def test_evaluate_refuses_an_unknown_input_name_with_the_near_match(tmp_path: Path) -> None:
    import torch

    from mergelang import evaluate
    from mergelang.errors import UsageError

    recipe = (
        'model anime = "anime.safetensors"\nmodel base = "base.safetensors"\n'
        'save weighted_sum(base, anime, alpha=0.5) to "out.safetensors"\n'
    )
    with pytest.raises(UsageError) as caught:
        evaluate(recipe, inputs={"anmie": {"w": torch.zeros(1)}})

    (diag,) = caught.value.diagnostics
    assert diag.message == "inputs= names 'anmie', which is no model of the recipe"
    assert diag.hint == "did you mean 'anime'? models: anime, base"


SWEEP = """\
model a = "a.safetensors"
model b = "b.safetensors"

for t in 0.25..0.75 step 0.25:
    save weighted_sum(a, b, alpha=t) to "out/t-{t}.safetensors"
"""


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mergelang import run
    from mergelang.testing import make_checkpoint

    folder = tmp_path_factory.mktemp("sweep")
    make_checkpoint(folder / "a.safetensors", "sd1", scale=0.05)
    make_checkpoint(folder / "b.safetensors", "sd1", scale=0.05, seed=1)
    (folder / "sweep.merge").write_text(SWEEP, encoding="utf-8")
    run(folder / "sweep.merge", cache_dir=folder / "cache")
    return folder


def test_convert_gives_back_the_recipe_of_an_output_its_loop_values_bound(
    sweep: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from mergelang import run
    from mergelang.io.safetensors_header import read_safetensors_header

    output = sweep / "out" / "t-0.5.safetensors"
    assert main(["convert", str(output)]) == 0
    text = capsys.readouterr().out
    assert text == (
        "# the loop values of this output: t = 0.5\n"
        'model a = "a.safetensors"\n'
        'model b = "b.safetensors"\n'
        "\n"
        "for t in [0.5]:\n"
        '    save weighted_sum(a, b, alpha=t) to "out/t-{t}.safetensors"\n'
    )
    # Run again from a folder of its own, the recipe makes that one output, the same.
    for name in ("a", "b"):
        (tmp_path / f"{name}.safetensors").symlink_to(sweep / f"{name}.safetensors")
    (tmp_path / "again.merge").write_text(text, encoding="utf-8")
    result = run(tmp_path / "again.merge", cache_dir=tmp_path / "cache")
    assert [o.path for o in result.outputs] == [tmp_path / "out" / "t-0.5.safetensors"]
    made = read_safetensors_header(tmp_path / "out" / "t-0.5.safetensors")
    first = read_safetensors_header(output)
    assert made.metadata["mergelang.output_key"] == first.metadata["mergelang.output_key"]


def test_show_prints_the_loop_values_of_an_output(
    sweep: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = sweep / "out" / "t-0.75.safetensors"
    assert main(["show", str(output), "--no-hashes"]) == 0
    assert "\nloop values t = 0.75\n" in capsys.readouterr().out
    assert main(["show", str(output), "--no-hashes", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["recipe"]["loop_values"] == {"t": "0.75"}


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("model a = models/x.safetensors\n", 'paths go in double quotes: "models/x.safetensors"'),
        (
            'model a = "a.safetensors"\nsave a "out/a.safetensors"\n',
            'write to before the path: save MODEL to "out/mix.safetensors"',
        ),
        (
            'model a = "a.safetensors"\nmodel b = "b.safetensors"\nfor t in [0.1, 0.2]:\n'
            '    x = weighted_sum(a, b, alpha=t)\n\tsave x to "out/{t}.safetensors"\n',
            "this line and the one above are indented with a different mix of tabs and spaces: "
            "indent every line of a loop body the same way",
        ),
        (
            'model a = "a.safetensors"\nmodel b = "b.safetensors"\n'
            'save weighted_sum(a, b, alpha=$W) to "o.safetensors"\n',
            "bind it on the command line: --set W=0.5",
        ),
        (
            'model a = $M\nsave a to "o.safetensors"\n',
            "bind it on the command line: --set M=path/to/model.safetensors",
        ),
        ("x = a b\n", "two values in a row: is an operator missing?"),
    ],
)
def test_hints_point_the_right_way(text: str, hint: str) -> None:
    from mergelang.api import load
    from mergelang.errors import RecipeError

    with pytest.raises(RecipeError) as caught:
        load(text)
    assert caught.value.diagnostics[0].hint == hint


@pytest.mark.parametrize(
    ("text", "code", "message", "hint", "column"),
    [
        (
            "mix = __A__ + __B__\n",
            "merge-board",
            "a Merge Board line needs its multiplier after a comma",
            "write mix = __A__ + __B__, 0.5 (a weighted sum, 0.5 of the second model); a plain "
            "+ would add the models' weights",
            7,
        ),
        (
            "mix = __A__, 0.5\n",
            "merge-board",
            "a Merge Board line merges 2 models (weighted sum) or 3 (add difference), not 1",
            "OUTPUT = A + B, 0.5 (or OUTPUT = A + B + C, 1 to add a difference)",
            12,
        ),
    ],
)
def test_merge_board_mistakes_are_told_in_merge_board_terms(
    text: str, code: str, message: str, hint: str, column: int
) -> None:
    from mergelang.api import load
    from mergelang.errors import RecipeError

    with pytest.raises(RecipeError) as caught:
        load(text, set={"A": "a.safetensors", "B": "b.safetensors"})
    (diag,) = caught.value.errors
    assert (diag.code, diag.message, diag.hint) == (code, message, hint)
    assert diag.span is not None and (diag.span.line, diag.span.column) == (1, column)


CANONICAL = 'model a = "a.safetensors"\nsave a to "o.safetensors"\n'


def test_fmt_check_sets_line_endings_and_a_bom_aside(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "crlf.merge").write_bytes(CANONICAL.replace("\n", "\r\n").encode())
    (tmp_path / "bom.merge").write_bytes(b"\xef\xbb\xbf" + CANONICAL.encode())
    both = b"\xef\xbb\xbf" + CANONICAL.replace("\n", "\r\n").encode()
    (tmp_path / "both.merge").write_bytes(both)
    assert main(["fmt", "--check", "crlf.merge", "bom.merge", "both.merge"]) == 0
    assert capsys.readouterr().out == ""


def test_fmt_write_keeps_the_files_line_endings_and_bom(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    messy = CANONICAL.replace("model a", "model  a")
    (tmp_path / "crlf.merge").write_bytes(b"\xef\xbb\xbf" + messy.replace("\n", "\r\n").encode())
    (tmp_path / "mixed.merge").write_bytes(CANONICAL.replace("\n", "\r\n", 1).encode())

    assert main(["fmt", "--check", "crlf.merge", "mixed.merge"]) == 1
    assert capsys.readouterr().out == (
        "would reformat crlf.merge\n"
        "would reformat mixed.merge (mixed line endings: all made CRLF)\n"
    )
    assert main(["fmt", "--write", "crlf.merge", "mixed.merge"]) == 0
    crlf = b"\xef\xbb\xbf" + CANONICAL.replace("\n", "\r\n").encode()
    assert (tmp_path / "crlf.merge").read_bytes() == crlf
    assert (tmp_path / "mixed.merge").read_bytes() == CANONICAL.replace("\n", "\r\n").encode()
    assert main(["fmt", "--check", "crlf.merge", "mixed.merge"]) == 0


@pytest.fixture
def sd1_pair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from mergelang.testing import make_checkpoint

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MERGELANG_MODELS", raising=False)
    make_checkpoint(tmp_path / "sd15-anime.safetensors", "sd1", scale=0.05)
    make_checkpoint(tmp_path / "sd15-base.safetensors", "sd1", scale=0.05, seed=1)
    return tmp_path


def test_plain_check_checks_the_inputs_it_finds(
    sd1_pair: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sdxl_vector = ", ".join(["1"] * 19)
    (sd1_pair / "r.merge").write_text(
        'model a = "sd15-anime.safetensors"\nmodel b = "sd15-base.safetensors"\n'
        f'save weighted_sum(a, b, alpha=[{sdxl_vector}]) to "o.safetensors"\n',
        encoding="utf-8",
    )
    assert main(["check", "r.merge"]) == 1
    err = capsys.readouterr().err
    assert "r.merge:3:31: error: alpha of weighted_sum with sd1 models: a 19-value vector" in err


def test_plain_check_says_when_the_inputs_were_not_checked(
    sd1_pair: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (sd1_pair / "r.merge").write_text(
        'model a = "sd15-anme.safetensors"\nmodel b = "sd15-base.safetensors"\n'
        'save weighted_sum(a, b, alpha=0.5) to "o.safetensors"\n',
        encoding="utf-8",
    )
    assert main(["check", "r.merge"]) == 0
    assert capsys.readouterr().out == (
        "r.merge: ok (inputs not checked: model 'a' not found (did you mean 'sd15-anime'? "
        "(sd15-anime.safetensors))): 2 models, 0 steps, 1 output\n"
    )


@pytest.mark.parametrize("flags", [[], ["--inputs"]])
def test_check_refuses_a_save_over_an_input_whatever_the_flags(
    flags: list[str], sd1_pair: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (sd1_pair / "r.merge").write_text(
        'model a = "sd15-anime.safetensors"\nmodel b = "sd15-base.safetensors"\n'
        'save weighted_sum(a, b, alpha=0.5) to "sd15-base.safetensors"\n',
        encoding="utf-8",
    )
    assert main(["check", "r.merge", *flags]) == 1
    err = capsys.readouterr().err
    assert err.startswith(
        "r.merge:3:1: error: sd15-base.safetensors: this save would write over an input of "
        f"the recipe ({sd1_pair / 'sd15-base.safetensors'})\n"
    )
    assert "  hint: choose another output path; inputs are never modified\n" in err
