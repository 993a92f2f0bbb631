"""Checking a recipe against its input checkpoints' headers (``mergelang check --inputs``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import mergelang
from mergelang.check import check
from mergelang.check.checked_recipe import InputRef, ModelSource, StepRef
from mergelang.cli import main
from mergelang.errors import Diagnostic, RecipeError
from mergelang.io.formats import sniff_format
from mergelang.io.locate import ModelLocator
from mergelang.io.writer import OutputEntry, SafetensorsWriter
from mergelang.lang.parser import parse
from mergelang.plan.input_checks import InputInfo, InputsReport, check_inputs
from mergelang.plan.inputs import resolve_inputs
from mergelang.testing import make_checkpoint, make_ckpt

SCALE = 1 / 80
V19 = "[1, 1, 1, 1, 1, 1, 1, 1, 1, 0.5, 0, 0, 0, 0, 0, 0, 0, 0, 0]"
V20 = "[0.3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0.5, 0, 0, 0, 0, 0, 0, 0, 0, 0]"
V25 = "[1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0.5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]"
SD_ONLY_HINT = "give 25 values (26 with BASE first) for SD1/SD2 models"
SDXL_19 = "IN00..IN08, M00, OUT00..OUT08"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """sd1.safetensors and sd1b.safetensors (SD1), xl.safetensors (SDXL)."""
    root = tmp_path_factory.mktemp("models")
    make_checkpoint(root / "sd1.safetensors", "sd1", scale=SCALE)
    make_checkpoint(root / "sd1b.safetensors", "sd1", scale=SCALE, seed=1)
    make_checkpoint(root / "xl.safetensors", "sdxl", scale=SCALE)
    return root


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def inspect(recipe: Path, *dirs: Path) -> InputsReport:
    text = recipe.read_text(encoding="utf-8")
    checked = check(parse(text, path=str(recipe)))
    with resolve_inputs(checked, ModelLocator(list(dirs), env={})) as inputs:
        return check_inputs(checked, inputs)


def problems(recipe: Path, *dirs: Path) -> list[Diagnostic]:
    with pytest.raises(RecipeError) as caught:
        inspect(recipe, *dirs)
    return list(caught.value.diagnostics)


def only_error(recipe: Path, *dirs: Path) -> Diagnostic:
    found = [d for d in problems(recipe, *dirs) if d.severity == "error"]
    assert len(found) == 1, [d.headline() for d in found]
    return found[0]


# ---- a clean recipe -----------------------------------------------------------------------------


def test_clean_sd1_recipe_reports_each_input(tmp_path: Path, models: Path) -> None:
    recipe = write(
        tmp_path / "r.merge",
        'model a = "sd1"\nmodel b = "sd1b.safetensors"\n'
        f"mix = weighted_sum(a, b, alpha={V25})\n"
        'save mix to "o.safetensors"\n',
    )
    report = inspect(recipe, models)
    assert list(report.inputs) == ["a", "b"]
    first = report.inputs["a"]
    assert first == InputInfo(
        ModelSource("a", "path", "sd1"),
        models / "sd1.safetensors",
        "safetensors",
        "sd1",
        "normal",
    )
    assert first.inspected
    assert report.inputs["b"].path == models / "sd1b.safetensors"
    assert report.architectures == ("sd1",)
    assert report.not_inspected == ()
    checked = check(parse(recipe.read_text(), path=str(recipe)))
    saved = checked.saves[0].model
    assert saved == StepRef("mix")
    assert report.inputs_of(saved) == ("a", "b")
    assert report.architectures_of(saved) == ("sd1",)
    assert report.architecture_of(saved) == "sd1"
    assert report.architecture_of(InputRef("a")) == "sd1"


def test_cli_summary_names_the_architecture(
    tmp_path: Path, models: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = write(
        tmp_path / "r.merge",
        'model a = "sd1"\nmodel b = "sd1b"\n'
        'mix = weighted_sum(a, b)\nsave mix to "o.safetensors"\n',
    )
    assert main(["check", str(recipe), "--models-dir", str(models)]) == 0
    captured = capsys.readouterr()
    assert captured.out == f"{recipe}: ok: 2 models (sd1), 1 step, 1 output\n"
    assert captured.err == ""


def test_cli_summary_lists_every_architecture_in_order(
    tmp_path: Path, models: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = write(
        tmp_path / "r.merge",
        'model x = "xl"\nmodel a = "sd1"\n'
        'save x * 0.5 + x * 0.5 to "x.safetensors"\nsave a to "a.safetensors"\n',
    )
    assert main(["check", str(recipe), "--models-dir", str(models)]) == 0
    assert capsys.readouterr().out == f"{recipe}: ok: 2 models (sdxl, sd1), 0 steps, 2 outputs\n"


# ---- weights against the architecture -------------------------------------------------------


def test_sdxl_vector_with_sd1_models_is_located_at_the_vector(tmp_path: Path, models: Path) -> None:
    recipe = write(
        tmp_path / "r.merge",
        'model a = "sd1"\nmodel b = "sd1b"\n'
        f"mix = weighted_sum(a, b, alpha={V19})\n"
        'save mix to "o.safetensors"\n',
    )
    diag = only_error(recipe, models)
    assert diag.location() == f"{recipe}:3:32"
    assert diag.code == "weights-architecture"
    assert diag.message == (
        f"alpha of weighted_sum with sd1 models: a 19-value vector is SDXL's ({SDXL_19}); "
        "this SD1/SD2 model also has IN09..IN11, OUT09..OUT11"
    )
    assert diag.hint == SD_ONLY_HINT
    assert diag.source_line == f"mix = weighted_sum(a, b, alpha={V19})"


def test_cli_prints_the_weights_error_with_its_place(
    tmp_path: Path, models: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = write(
        tmp_path / "r.merge",
        f'model a = "sd1"\nsave weighted_sum(a, a, alpha={V19}) to "o.safetensors"\n',
    )
    assert main(["check", str(recipe), "--models-dir", str(models)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"{recipe}:2:31: error: alpha of weighted_sum with sd1 models: " in captured.err
    assert "Traceback" not in captured.err


@pytest.mark.parametrize("vector", [V19, V20, V25])
def test_sdxl_takes_19_20_and_25_values(tmp_path: Path, models: Path, vector: str) -> None:
    recipe = write(
        tmp_path / "r.merge",
        f'model x = "xl"\nmix = weighted_sum(x, x, alpha={vector})\nsave mix to "o.safetensors"\n',
    )
    report = inspect(recipe, models)
    assert report.inputs["x"].architecture == "sdxl"
    assert report.architectures == ("sdxl",)


def test_base_argument_supplies_the_missing_base(tmp_path: Path, models: Path) -> None:
    recipe = write(
        tmp_path / "r.merge",
        'model a = "sd1"\nmodel b = "sd1b"\n'
        f"d = add_difference(a, b, a, alpha={V25})\n"
        f"e = add_difference(a, b, a, alpha={V25}, base=0.2)\n"
        'save d to "d.safetensors"\nsave e to "e.safetensors"\n',
    )
    diag = only_error(recipe, models)
    assert diag.location() == f"{recipe}:3:35"
    assert diag.code == "weights-architecture"
    assert diag.message == (
        "alpha of add_difference with sd1 models: a 25-value vector sets no BASE weight "
        "(text encoders and other keys outside the U-Net blocks)"
    )
    assert diag.hint == "give 26 values, a BASE: entry, a default:, or base="


def test_arithmetic_weight_is_checked_at_its_term(tmp_path: Path, models: Path) -> None:
    recipe = write(
        tmp_path / "r.merge",
        f'model a = "sd1"\nmodel b = "sd1b"\nsave b * 0.5 + a * {V19} to "o.safetensors"\n',
    )
    diag = only_error(recipe, models)
    assert diag.location() == f"{recipe}:3:16"
    assert diag.code == "weights-architecture"
    assert diag.message == (
        f"model arithmetic with sd1 models: a 19-value vector is SDXL's ({SDXL_19}); "
        "this SD1/SD2 model also has IN09..IN11, OUT09..OUT11"
    )


def test_arithmetic_weight_must_set_base(tmp_path: Path, models: Path) -> None:
    recipe = write(
        tmp_path / "r.merge",
        f'model a = "sd1"\nsave a * {V25} + a * {{IN00: 0.5, default: 0}} to "o.safetensors"\n',
    )
    diag = only_error(recipe, models)
    assert diag.location() == f"{recipe}:2:6"
    assert diag.message == (
        "model arithmetic with sd1 models: a 25-value vector sets no BASE weight "
        "(text encoders and other keys outside the U-Net blocks)"
    )
    assert diag.hint == "give 26 values, a BASE: entry or a default: entry"


def test_weights_problem_in_a_loop_is_reported_once(tmp_path: Path, models: Path) -> None:
    recipe = write(
        tmp_path / "r.merge",
        'model a = "sd1"\n'
        "for w in [0.25, 0.5]:\n"
        f'    save weighted_sum(a, a, alpha={V19} * w) to "o-{{w}}.safetensors"\n',
    )
    diag = only_error(recipe, models)
    assert diag.location() == f"{recipe}:3:35"
    assert diag.message == (
        "alpha of weighted_sum with sd1 models: 19-value vector * 0.25 sets only SDXL's 19 "
        f"blocks ({SDXL_19}); this SD1/SD2 model also has IN09..IN11, OUT09..OUT11"
    )


# ---- architectures of expressions -------------------------------------------------------------


def test_mixing_architectures_is_an_error_at_the_call(tmp_path: Path, models: Path) -> None:
    recipe = write(
        tmp_path / "r.merge",
        'model sd15 = "sd1"\nmodel xl = "xl"\nmix = weighted_sum(sd15, xl)\n'
        'save mix to "o.safetensors"\n',
    )
    diag = only_error(recipe, models)
    assert diag.location() == f"{recipe}:3:7"
    assert diag.code == "architecture-mismatch"
    assert diag.message == "weighted_sum mixes sd1 (sd15) and sdxl (xl)"
    assert diag.hint == (
        "merge models of one architecture (sd1 is Stable Diffusion 1.x, "
        "sdxl is Stable Diffusion XL)"
    )


def test_mismatch_is_reported_where_it_arises_only(tmp_path: Path, models: Path) -> None:
    recipe = write(
        tmp_path / "r.merge",
        'model a = "sd1"\nmodel b = "sd1b"\nmodel x = "xl"\n'
        "inner = a * 0.5 + x * 0.5\n"
        "outer = weighted_sum(inner, b)\n"
        'save weighted_sum(outer, weighted_sum(b, x)) to "o.safetensors"\n'
        "for k in [1, 2]:\n"
        '    save weighted_sum(a, x, alpha=0.1 * k) to "l-{k}.safetensors"\n',
    )
    found = [(d.location(), d.code, d.message) for d in problems(recipe, models)]
    assert found == [
        (f"{recipe}:4:9", "architecture-mismatch", "model arithmetic mixes sd1 (a) and sdxl (x)"),
        (
            f"{recipe}:6:26",
            "architecture-mismatch",
            "weighted_sum mixes sd1 (b) and sdxl (x)",
        ),
        (f"{recipe}:8:10", "architecture-mismatch", "weighted_sum mixes sd1 (a) and sdxl (x)"),
    ]


def test_mismatch_names_every_model_of_each_architecture(tmp_path: Path, models: Path) -> None:
    recipe = write(
        tmp_path / "r.merge",
        'model a = "sd1"\nmodel x = "xl"\nmodel b = "sd1b"\n'
        'save add_difference(a, x, b) to "o.safetensors"\n',
    )
    diag = only_error(recipe, models)
    assert diag.location() == f"{recipe}:4:6"
    assert diag.message == "add_difference mixes sd1 (a, b) and sdxl (x)"


# ---- files that cannot be used ------------------------------------------------------------------


def test_truncated_input_is_reported_at_its_declaration(tmp_path: Path, models: Path) -> None:
    cut = tmp_path / "cut.safetensors"
    shutil.copyfile(models / "sd1.safetensors", cut)
    with cut.open("r+b") as handle:
        handle.truncate(cut.stat().st_size // 2)
    recipe = write(
        tmp_path / "r.merge",
        'model a = "sd1"\nmodel b = "cut.safetensors"\nsave b to "o.safetensors"\n',
    )
    diag = only_error(recipe, models)
    assert diag.location() == f"{recipe}:2:11"
    assert diag.code == "out-of-bounds"
    assert diag.message.startswith(f"model 'b': {cut}: the tensor's data ends at byte ")
    assert diag.message.endswith("(the file is truncated)")
    assert diag.key is not None


def test_input_cut_inside_its_header(tmp_path: Path, models: Path) -> None:
    stub = tmp_path / "stub.safetensors"
    stub.write_bytes((models / "sd1.safetensors").read_bytes()[:5])
    recipe = write(
        tmp_path / "r.merge", 'model b = "stub.safetensors"\nsave b to "o.safetensors"\n'
    )
    diag = only_error(recipe)
    assert diag.location() == f"{recipe}:1:11"
    assert diag.code == "truncated-header"
    assert diag.message == (
        f"model 'b': {stub}: the file is 5 bytes long, too short for a safetensors header "
        "(8-byte length field)"
    )


def test_file_that_is_no_checkpoint(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a model at all\n")
    recipe = write(tmp_path / "r.merge", 'model a = "notes.txt"\nsave a to "o.safetensors"\n')
    diag = only_error(recipe)
    assert diag.location() == f"{recipe}:1:11"
    assert diag.code == "unknown-format"
    assert diag.message == (
        f"model 'a': {notes}: not a checkpoint: neither a safetensors header nor a torch pickle"
    )


def write_random_keys(path: Path) -> Path:
    entries = [
        OutputEntry("encoder.layer.0.weight", "F32", (4, 4)),
        OutputEntry("encoder.layer.0.bias", "F32", (4,)),
        OutputEntry("head.weight", "F32", (2, 4)),
    ]
    with SafetensorsWriter(path, entries) as writer:
        for entry in entries:
            writer.write(entry.key, torch.zeros(entry.shape))
    return path


def test_unknown_layout_is_reported_at_its_declaration(tmp_path: Path, models: Path) -> None:
    odd = write_random_keys(tmp_path / "odd.safetensors")
    recipe = write(
        tmp_path / "r.merge",
        'model a = "sd1"\nmodel odd = "odd.safetensors"\n'
        'save weighted_sum(a, odd) to "o.safetensors"\n',
    )
    diag = only_error(recipe, models)
    assert diag.location() == f"{recipe}:2:13"
    assert diag.code == "unknown-architecture"
    assert diag.message.startswith(
        f"model 'odd': {odd}: unknown checkpoint layout; the closest known architecture is "
    )
    assert diag.hint is not None
    assert diag.hint.startswith("mergelang knows sd1 (Stable Diffusion 1.x)")


def test_missing_model_lists_the_places_searched(
    tmp_path: Path, models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    recipe = write(
        tmp_path / "r.merge", 'model gone = "gone.safetensors"\nsave gone to "o.safetensors"\n'
    )
    diag = only_error(recipe, models)
    assert diag.location() == f"{recipe}:1:14"
    assert diag.code == "model-not-found"
    assert diag.message == (
        "model 'gone': cannot find this model; searched:\n"
        f"  {tmp_path / 'gone.safetensors'}\n"
        f"  {models} (and its sub-folders)"
    )


def test_every_problem_is_reported_with_the_warnings(tmp_path: Path, models: Path) -> None:
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(b"")
    recipe = write(
        tmp_path / "r.merge",
        'model a = "sd1"\nmodel x = "xl"\nmodel c = "cut.safetensors"\nmodel g = "gone"\n'
        "unused = weighted_sum(a, a)\n"
        f'save weighted_sum(a, x, alpha={V19}) to "o.safetensors"\n'
        'save weighted_sum(c, g) to "p.safetensors"\n',
    )
    found = [(d.location(), d.severity, d.code) for d in problems(recipe, models)]
    assert found == [
        (f"{recipe}:3:11", "error", "empty-file"),
        (f"{recipe}:4:11", "error", "model-not-found"),
        (f"{recipe}:5:1", "warning", "unused"),
        (f"{recipe}:6:6", "error", "architecture-mismatch"),
    ]


# ---- files that are found but not inspected ----------------------------------------------------


def test_ckpt_input_is_located_not_inspected(tmp_path: Path, models: Path) -> None:
    ckpt = make_ckpt(tmp_path / "old.ckpt", "sdxl", scale=SCALE)
    recipe = write(
        tmp_path / "r.merge",
        'model a = "sd1"\nmodel old = "old"\nsave weighted_sum(a, old) to "o.safetensors"\n',
    )
    report = inspect(recipe, models)
    assert report.inputs["old"] == InputInfo(
        ModelSource("old", "path", "old"), ckpt, "pickle", None, None
    )
    assert not report.inputs["old"].inspected
    assert report.not_inspected == ("old",)
    assert report.architectures == ("sd1",)
    assert sniff_format(ckpt) == "pickle"


def test_cli_summary_counts_ckpt_inputs(
    tmp_path: Path, models: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_ckpt(tmp_path / "old.ckpt", "sd1", scale=SCALE)
    recipe = write(tmp_path / "r.merge", 'model old = "old.ckpt"\nsave old to "o.safetensors"\n')
    assert main(["check", "--inputs", str(recipe)]) == 0
    assert capsys.readouterr().out == (
        f"{recipe}: ok: 1 model (1 .ckpt not inspected), 0 steps, 1 output\n"
    )


def test_vae_files_are_validated_but_not_detected(tmp_path: Path, models: Path) -> None:
    vae = write_random_keys(tmp_path / "vae.safetensors")
    write_random_keys(tmp_path / "declared-vae.safetensors")
    recipe = write(
        tmp_path / "r.merge",
        'model a = "sd1"\nmodel v = "declared-vae.safetensors"\n'
        'save a to "o.safetensors" with vae="vae.safetensors"\n'
        'save a to "p.safetensors" with vae=v\n',
    )
    report = inspect(recipe, models)
    assert report.vaes["vae.safetensors"].path == vae
    assert report.vaes["vae.safetensors"].architecture is None
    assert report.inputs["v"].architecture is None
    assert report.architectures == ("sd1",)


def test_missing_vae_is_reported_at_the_option(tmp_path: Path, models: Path) -> None:
    recipe = write(
        tmp_path / "r.merge",
        'model a = "sd1"\nsave a to "o.safetensors" with vae="nope.safetensors"\n',
    )
    diag = only_error(recipe, models)
    assert diag.location() == f"{recipe}:2:36"
    assert diag.code == "model-not-found"
    assert diag.message.startswith("VAE 'nope.safetensors': cannot find this model; searched:\n")


# ---- the command line ---------------------------------------------------------------------------


def test_check_inputs_resolves_paths_from_the_recipe_folder(
    tmp_path: Path,
    models: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    project = tmp_path / "project"
    (project / "models").mkdir(parents=True)
    shutil.copyfile(models / "sd1.safetensors", project / "models" / "a.safetensors")
    shutil.copyfile(models / "sd1b.safetensors", project / "models" / "b.safetensors")
    recipe = write(
        project / "r.merge",
        'model a = "models/a.safetensors"\nmodel b = "models/b.safetensors"\n'
        'save weighted_sum(a, b) to "out/o.safetensors"\n',
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("MERGELANG_MODELS", raising=False)
    assert main(["check", "--inputs", str(recipe)]) == 0
    assert capsys.readouterr().out == f"{recipe}: ok: 2 models (sd1), 0 steps, 1 output\n"
    # Plain check checks the inputs too when it finds them all.
    assert main(["check", str(recipe)]) == 0
    assert capsys.readouterr().out == f"{recipe}: ok: 2 models (sd1), 0 steps, 1 output\n"


def test_check_without_inputs_flag_opens_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MERGELANG_MODELS", raising=False)
    recipe = write(
        tmp_path / "r.merge", 'model a = "nowhere.safetensors"\nsave a to "o.safetensors"\n'
    )
    assert main(["check", str(recipe)]) == 0
    assert main(["check", "--inputs", str(recipe)]) == 1
    err = capsys.readouterr().err
    assert f"{recipe}:1:11: error: model 'a': cannot find this model; searched:" in err


def test_check_inputs_never_imports_torch(tmp_path: Path, models: Path) -> None:
    recipe = write(
        tmp_path / "r.merge",
        f'model a = "{models / "sd1.safetensors"}"\nmodel b = "{models / "sd1b.safetensors"}"\n'
        f'save weighted_sum(a, b, alpha={V25}) to "o.safetensors"\n',
    )
    script = (
        "import sys\n"
        "from mergelang.cli import main\n"
        "code = main(['check', '--inputs', sys.argv[1]])\n"
        "print(code, 'torch' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "MERGELANG_MODELS"}
    result = subprocess.run(
        [sys.executable, "-c", script, str(recipe)],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"{recipe}: ok: 2 models (sd1), 0 steps, 1 output",
        "0 False",
    ]


# ---- recipe lines as the parser counts them ------------------------------------------------------

LINE_SEPARATOR_COMMENT = "# weights from the\u2028forum thread, see\u2029below\n"
"""A comment holding U+2028 and U+2029: ``str.splitlines`` would see three lines in it."""


def test_a_missing_model_after_a_line_separator_quotes_its_own_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = write(
        tmp_path / "r.merge",
        LINE_SEPARATOR_COMMENT + 'model a = "nowhere.safetensors"\nsave a to "o.safetensors"\n',
    )
    diag = only_error(recipe)
    assert diag.location() == f"{recipe}:2:11"
    assert diag.source_line == 'model a = "nowhere.safetensors"'
    assert main(["check", "--inputs", str(recipe)]) == 1
    err = capsys.readouterr().err
    assert f"{recipe}:2:11: error: model 'a': cannot find this model" in err
    assert '   2 | model a = "nowhere.safetensors"\n' in err


@pytest.mark.parametrize("verb", ["check", "plan"])
def test_a_19_value_vector_after_a_line_separator_quotes_its_own_line(
    tmp_path: Path, models: Path, verb: str, capsys: pytest.CaptureFixture[str]
) -> None:
    call = f"mix = weighted_sum(a, b, alpha={V19})"
    recipe = write(
        tmp_path / "r.merge",
        LINE_SEPARATOR_COMMENT
        + f'model a = "{models / "sd1.safetensors"}"\nmodel b = "{models / "sd1b.safetensors"}"\n'
        + f'{call}\nsave mix to "o.safetensors"\n',
    )
    argv = ["check", "--inputs"] if verb == "check" else ["plan", "--cache-dir", str(tmp_path)]
    assert main([*argv, str(recipe)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{recipe}:4:32: error: alpha of weighted_sum with sd1 models: "), err
    assert f"   4 | {call}\n" in err


def test_an_existing_output_after_a_line_separator_quotes_the_save(
    tmp_path: Path, models: Path
) -> None:
    save = 'save a to "o.safetensors"'
    recipe = write(
        tmp_path / "r.merge",
        LINE_SEPARATOR_COMMENT + f'model a = "{models / "sd1.safetensors"}"\n{save}\n',
    )
    (tmp_path / "o.safetensors").write_bytes(b"someone else's file")
    with pytest.raises(RecipeError) as caught:
        mergelang.plan(recipe, cache_dir=tmp_path / "cache", hash_inputs=True)
    (diag,) = caught.value.diagnostics
    assert (diag.code, diag.location()) == ("exists", f"{recipe}:3:1")
    assert diag.source_line == save
