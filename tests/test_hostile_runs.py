"""Hostile runs: integer weights, --force on devices and on the recipe itself, deep chains,
overflowing shapes, outputs too large for memory, odd file names, closed pipes, symlinked
recipes, bidirectional controls and ``convert`` onto its own input."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from run_helpers import cli_environment, load, run_cli, save_tensors

from mergelang.cli import main
from mergelang.errors import CheckpointError, OutputError, RecipeError
from mergelang.io.ckpt import CkptSink
from mergelang.io.metadata import InputRecord
from mergelang.io.readers import open_checkpoint
from mergelang.io.safetensors_header import read_safetensors_header
from mergelang.io.writer import OutputEntry, partial_stem
from mergelang.testing import make_checkpoint

SAVE_ONE = 'model a = "a.safetensors"\nsave a to "out.safetensors"\n'


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MERGELANG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("NO_COLOR", "1")


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return make_checkpoint(tmp_path / "a.safetensors", "sd1", seed=1)


def error_heads(err: str) -> list[str]:
    return [line for line in err.splitlines() if ": error: " in line]


# -- item 10: integer tensors where the architecture has float weights --------------------


def test_an_integer_weight_is_refused_naming_the_key(tmp_path: Path, model: Path) -> None:
    tensors = load(model)
    key = "model.diffusion_model.input_blocks.0.0.weight"
    tensors[key] = tensors[key].to(torch.int32)
    save_tensors(model, tensors)
    (tmp_path / "r.merge").write_text(SAVE_ONE, encoding="utf-8")
    status, _, err = run_cli(tmp_path, "check", "r.merge", "--inputs")
    assert status == 1, err
    assert error_heads(err) == [
        f"r.merge:1:11: error: model 'a': {model}: the sd1 architecture has a floating-point "
        "weight here, but the file stores it as I32 (integers); integers are not merged as "
        f"weights (key {key})"
    ]
    status, _, err = run_cli(tmp_path, "run", "r.merge")
    assert status == 1 and not (tmp_path / "out.safetensors").exists()
    assert "integers are not merged as weights" in err


def test_integer_position_ids_are_still_merged(tmp_path: Path, model: Path) -> None:
    assert load(model)["cond_stage_model.transformer.text_model.embeddings.position_ids"].dtype in (
        torch.int64,
    )
    (tmp_path / "r.merge").write_text(SAVE_ONE, encoding="utf-8")
    status, _, err = run_cli(tmp_path, "run", "r.merge")
    assert status == 0, err


# -- item 14: --force never replaces devices, FIFOs, the recipe or its presets --------------


def test_force_refuses_fifos_and_the_recipe_and_its_presets(tmp_path: Path, model: Path) -> None:
    os.mkfifo(tmp_path / "fifo.safetensors")
    presets = tmp_path / "p.safetensors"
    presets.write_text("MINE: " + ",".join(["0.5"] * 25) + "\n", encoding="utf-8")
    recipe = tmp_path / "r.safetensors"
    recipe.write_text(
        'model a = "a.safetensors"\npresets "p.safetensors"\nsave a to "fifo.safetensors"\n'
        'save a to "p.safetensors"\nsave a to "r.safetensors"\n',
        encoding="utf-8",
    )
    before = (presets.read_bytes(), recipe.read_bytes())
    status, out, err = run_cli(tmp_path, "run", "r.safetensors", "--force")
    assert (status, out) == (1, ""), err
    refusal = "refusing to write over an input of this run"
    assert error_heads(err) == [
        f"r.safetensors:3:1: error: {tmp_path / 'fifo.safetensors'}: the output path is not "
        "a regular file (a device, FIFO or socket); it is never replaced, even with --force",
        f"r.safetensors:4:1: error: {presets}: {refusal} (p.safetensors)",
        f"r.safetensors:5:1: error: {recipe}: {refusal} (r.safetensors)",
    ]
    assert (presets.read_bytes(), recipe.read_bytes()) == before
    assert (tmp_path / "fifo.safetensors").is_fifo()


def test_the_writer_refuses_a_device_even_when_overwriting(tmp_path: Path) -> None:
    from mergelang.io.writer import check_target

    with pytest.raises(OutputError) as caught:
        check_target(Path("/dev/null"), overwrite=True)
    assert caught.value.diagnostics[0].code == "not-a-file"


# -- item 15: deep chains, overflowing shapes, outputs too big for memory -------------------


def _chain(length: int) -> str:
    lines = ['model a = "a.safetensors"', "s0 = a"]
    lines += [f"s{i} = s{i - 1} * 0.999" for i in range(1, length + 1)]
    lines.append(f'save s{length} to "chain.safetensors"')
    return "\n".join(lines) + "\n"


def test_a_330_step_chain_plans_without_recursing_along_it(tmp_path: Path, model: Path) -> None:
    from mergelang.api import load as load_recipe
    from mergelang.api import plan
    from mergelang.plan.text import render_plan

    recipe = tmp_path / "chain.merge"
    recipe.write_text(_chain(330), encoding="utf-8")
    checked = load_recipe(recipe)
    limit = sys.getrecursionlimit()
    # Far below the chain's depth: planning, its content keys and its text never recurse
    # from step to step.
    sys.setrecursionlimit(250)
    try:
        made = plan(checked)
        text = render_plan(made)
    finally:
        sys.setrecursionlimit(limit)
    assert "#1 a, s0 = load a.safetensors" in text
    assert text.count("\n") > 330


def test_a_330_step_chain_runs(tmp_path: Path, model: Path) -> None:
    from mergelang.api import run

    recipe = tmp_path / "chain.merge"
    recipe.write_text(_chain(330), encoding="utf-8")
    run(recipe)
    out = load(tmp_path / "chain.safetensors")
    key = "model.diffusion_model.input_blocks.0.0.bias"
    expected = load(model)[key].float() * (0.999**330)
    assert torch.allclose(out[key].float(), expected, rtol=2e-2, atol=1e-3)


def test_a_zero_size_shape_whose_product_overflows_is_refused(tmp_path: Path) -> None:
    header = {
        "w": {"dtype": "F16", "shape": [2**63 - 1, 2**63 - 1, 0], "data_offsets": [0, 0]},
        "ok": {"dtype": "F16", "shape": [2], "data_offsets": [0, 4]},
    }
    raw = json.dumps(header).encode()
    path = tmp_path / "overflow.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 4)
    with pytest.raises(CheckpointError) as caught:
        read_safetensors_header(path)
    diag = caught.value.diagnostics[0]
    assert (diag.code, diag.key) == ("bad-shape", "w")
    assert diag.message == (
        "shape [9223372036854775807, 9223372036854775807, 0] has dimensions whose product "
        "(zeros left out) is over 2**63 - 1"
    )
    with pytest.raises(CheckpointError):
        open_checkpoint(path)


def test_a_ckpt_output_that_cannot_be_allocated_is_a_clean_error(tmp_path: Path) -> None:
    entries = [OutputEntry("k", "F32", (2**48,))]
    with pytest.raises(OutputError) as caught:
        CkptSink(tmp_path / "huge.ckpt", entries, overwrite=False, protected=())
    diag = caught.value.diagnostics[0]
    assert diag.code == "out-of-memory"
    assert diag.message == (
        "cannot hold the checkpoint in memory: it needs 1,125,899,906,842,624 bytes at once, "
        "and the allocation failed"
    )
    assert list(tmp_path.iterdir()) == []


# -- smaller ------------------------------------------------------------------------------


def test_a_model_file_name_that_is_not_utf8_is_merged_and_stored_losslessly(
    tmp_path: Path, model: Path
) -> None:
    odd = Path(os.fsdecode(b"caf\xe9.safetensors"))
    os.link(model, tmp_path / odd)
    (tmp_path / "r.merge").write_text(
        'model a = "a.safetensors"\nmodel b = $B\n'
        'save weighted_sum(a, b, alpha=0.5) to "out.safetensors"\n',
        encoding="utf-8",
    )
    proc = subprocess.run(
        [sys.executable, "-m", "mergelang", "run", "r.merge", "--set", b"B=caf\xe9.safetensors"],
        cwd=tmp_path,
        capture_output=True,
        env=cli_environment(tmp_path / "cache"),
    )
    assert proc.returncode == 0, proc.stderr
    metadata = read_safetensors_header(tmp_path / "out.safetensors").metadata
    records = json.loads(metadata["mergelang.inputs"])
    assert records[1]["file"] == "caf\ufffd.safetensors"
    assert records[1]["file_bytes"] == b"caf\xe9.safetensors".hex()
    restored = InputRecord.from_json(records[1])
    assert restored is not None and os.fsencode(restored.file_name) == b"caf\xe9.safetensors"
    assert json.loads(metadata["mergelang.set"]) == {"B": os.fsdecode(b"caf\xe9.safetensors")}
    again = subprocess.run(
        [sys.executable, "-m", "mergelang", "run", "r.merge", "--set", b"B=caf\xe9.safetensors"],
        cwd=tmp_path,
        capture_output=True,
        env=cli_environment(tmp_path / "cache"),
    )
    assert b"up to date" in again.stdout + again.stderr


def test_an_output_name_near_255_bytes_gets_a_temporary_name_that_fits(
    tmp_path: Path, model: Path
) -> None:
    name = "n" * (255 - len(".safetensors")) + ".safetensors"
    assert len(name) == 255
    assert len(os.fsencode("." + partial_stem(name) + ".mergelang-partial-4194304-abcdef01")) <= 255
    (tmp_path / "r.merge").write_text(
        f'model a = "a.safetensors"\nsave a to "{name}"\n', encoding="utf-8"
    )
    status, _, err = run_cli(tmp_path, "run", "r.merge")
    assert status == 0, err
    assert (tmp_path / name).is_file()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_a_closed_stderr_pipe_does_not_fail_a_successful_run(tmp_path: Path, model: Path) -> None:
    (tmp_path / "r.merge").write_text(SAVE_ONE, encoding="utf-8")
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "mergelang", "run", "r.merge"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=write_end,
            env=cli_environment(tmp_path / "cache"),
        )
    finally:
        os.close(write_end)
    assert proc.returncode == 0
    assert (tmp_path / "out.safetensors").is_file()


def test_fmt_write_keeps_a_symlinked_recipe_a_symlink(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    real_folder = tmp_path / "real"
    real_folder.mkdir()
    target = real_folder / "recipe.merge"
    target.write_text('model   a="a.safetensors"\nsave a   to "o.safetensors"\n', encoding="utf-8")
    target.chmod(0o640)
    link = tmp_path / "link.merge"
    link.symlink_to(target)
    assert main(["fmt", "--write", str(link)]) == 0
    assert link.is_symlink() and link.resolve() == target
    assert target.read_text(encoding="utf-8") == (
        'model a = "a.safetensors"\nsave a to "o.safetensors"\n'
    )
    assert oct(target.stat().st_mode & 0o777) == oct(0o640)
    assert sorted(p.name for p in real_folder.iterdir()) == ["recipe.merge"]
    assert capsys.readouterr().err == f"reformatted {link}\n"


def test_bidi_controls_are_refused_in_save_paths_and_warned_in_comments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_checkpoint(tmp_path / "a.safetensors", "sd1", seed=1)
    recipe = tmp_path / "r.merge"
    recipe.write_text(
        'model a = "a.safetensors"\nsave a to "x\u202ey.safetensors"\n', encoding="utf-8"
    )
    assert main(["check", str(recipe)]) == 1
    err = capsys.readouterr().err
    assert (
        f"{recipe}:2:11: error: the save path holds the bidirectional control U+202E, which "
        "makes the name show in another order than it has"
    ) in err
    assert "\u202e" not in err

    recipe.write_text(
        'model a = "a.safetensors"  # ok \u202e evil\nsave a to "o.safetensors"\n',
        encoding="utf-8",
    )
    assert main(["check", str(recipe)]) == 0
    err = capsys.readouterr().err
    assert (
        f"{recipe}:1:28: warning: this comment holds the bidirectional control U+202E, "
        "which makes the text around it show in another order than it has"
    ) in err
    assert "\u202e" not in err


def test_convert_refuses_to_overwrite_its_own_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "mix.txt"
    text = ",".join(["0.5"] * 25) + "\n"
    source.write_text(text, encoding="utf-8")
    link = tmp_path / "link.txt"
    link.symlink_to(source)
    for output in (source, link):
        assert main(["convert", str(source), "-o", str(output), "--force"]) == 1
        err = capsys.readouterr().err
        assert f"{output}: error: refusing to overwrite the file being converted" in err
        assert source.read_text(encoding="utf-8") == text


def test_recipe_errors_name_no_traceback_for_a_bidi_path_in_a_loop(tmp_path: Path) -> None:
    from mergelang.api import load as load_recipe

    recipe = tmp_path / "r.merge"
    recipe.write_text(
        'model a = "a.safetensors"\nfor v in ["p", "q"]:\n    save a to "{v}\u2066.safetensors"\n',
        encoding="utf-8",
    )
    with pytest.raises(RecipeError) as caught:
        load_recipe(recipe)
    assert {d.code for d in caught.value.diagnostics} == {"save-path"}
