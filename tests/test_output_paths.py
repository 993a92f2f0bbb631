"""Where ``mergelang run`` may write, through the command line in a subprocess.

A relative save path stays inside the output folder (the recipe's folder, or ``--out-dir``);
an absolute path may go anywhere, and symlinked folders are followed. An output never
replaces an input, whatever the path (symlink, hard link, ``..``, ``--out-dir``) and even with
``--force``; another existing file is replaced only with ``--force``; two saves may not name
one file.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from run_helpers import (
    assert_same_tensors,
    declare,
    expected_output,
    files_under,
    load,
    partial_files,
    run_cli,
    sha256,
    shared_models,
    uniform,
    weighted_sum,
    write_recipe,
)

HINT_OUTSIDE = (
    "  hint: relative paths stay inside the recipe's folder (or --out-dir); "
    "write an absolute path to save elsewhere"
)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_models(tmp_path_factory, ("a", "b", "c"))


def input_state(models: Path) -> dict[str, tuple[str, int]]:
    """Each input's sha256 and inode."""
    paths = [models / f"{name}.safetensors" for name in "abc"]
    return {p.name: (sha256(p), p.stat().st_ino) for p in paths}


def error_heads(err: str) -> list[str]:
    """The ``place: error: message`` lines of the standard error."""
    return [line for line in err.splitlines() if ": error: " in line]


# ---- relative paths stay inside the output folder ---------------------------------------------


def test_relative_paths_that_leave_the_output_folder_are_refused_at_their_literal(
    tmp_path: Path, models: Path
) -> None:
    project = tmp_path / "project"
    write_recipe(
        project,
        declare(models, "a", "b")
        + 'save a to "../up.safetensors"\n'
        + 'save b to "out/../../up2.safetensors"\n'
        + 'for d in ["ok", "..", "../.."]:\n'
        + '    save a to "{d}/../{d}.safetensors"\n'
        + 'save weighted_sum(a, b, alpha=0.5) to "in/../inside.safetensors"\n',
    )
    expected = [
        "recipe.merge:3:11: error: the save path '../up.safetensors' leads out of the output "
        "folder",
        "recipe.merge:4:11: error: the save path 'out/../../up2.safetensors' leads out of the "
        "output folder",
        # Once for the literal, with its first value that leaves (d = "..").
        "recipe.merge:6:15: error: the save path '../../...safetensors' leads out of the "
        "output folder",
    ]

    for argv in (["check"], ["run", "--force", "--out-dir", "elsewhere"]):
        status, out, err = run_cli(project, argv[0], "recipe.merge", *argv[1:])

        assert status == 1, err
        assert error_heads(err) == expected
        assert err.count(HINT_OUTSIDE) == 3
        assert '   6 |     save a to "{d}/../{d}.safetensors"\n     |               ^^^^' in err
        assert err.endswith("3 errors\n")
        if argv[0] == "run":
            assert out == ""
    assert files_under(tmp_path) == ["project/recipe.merge"]


# ---- inputs are never replaced ----------------------------------------------------------------


def test_an_output_that_is_an_input_is_refused_even_with_force(
    tmp_path: Path, models: Path
) -> None:
    link = tmp_path / "link.safetensors"
    link.symlink_to(models / "b.safetensors")
    hard = tmp_path / "hard.safetensors"
    os.link(models / "b.safetensors", hard)
    dotted = f"{models}/sub/../a.safetensors"
    write_recipe(
        tmp_path,
        declare(models, "a", "b", "c")
        + f'save weighted_sum(a, c, alpha=0.5) to "{link}"\n'
        + f'save weighted_sum(a, c, alpha=0.5) to "{hard}"\n'
        + f'save weighted_sum(b, c, alpha=0.5) to "{dotted}"\n'
        # Relative, and --out-dir is the models' folder.
        + 'save weighted_sum(a, b, alpha=0.5) to "c.safetensors"\n',
    )
    before = input_state(models)

    status, out, err = run_cli(tmp_path, "run", "recipe.merge", "--force", "--out-dir", str(models))

    assert (status, out) == (1, ""), err
    refusal = "refusing to write over an input of this run"
    assert error_heads(err) == [
        f"recipe.merge:4:1: error: {link}: {refusal} ({models / 'b.safetensors'})",
        f"recipe.merge:5:1: error: {hard}: {refusal} ({models / 'b.safetensors'})",
        f"recipe.merge:6:1: error: {models / 'a.safetensors'}: {refusal} "
        f"({models / 'a.safetensors'})",
        f"recipe.merge:7:1: error: {models / 'c.safetensors'}: {refusal} "
        f"({models / 'c.safetensors'})",
    ]
    assert err.count("  hint: choose another output path; inputs are never modified\n") == 4
    assert input_state(models) == before
    assert link.is_symlink() and link.resolve() == models / "b.safetensors"
    assert hard.stat().st_ino == before["b.safetensors"][1]
    assert partial_files(tmp_path) == [] and partial_files(models) == []


# ---- two saves, one file ----------------------------------------------------------------------


def test_a_file_where_the_output_folder_should_be_is_an_error_at_the_save(
    tmp_path: Path, models: Path
) -> None:
    (tmp_path / "out").write_bytes(b"a file, not a folder")
    write_recipe(tmp_path, declare(models, "a") + 'save a to "out/x/a.safetensors"\n')

    status, out, err = run_cli(tmp_path, "run", "recipe.merge")

    assert (status, out) == (1, ""), err
    assert error_heads(err) == [
        "recipe.merge:2:1: error: cannot save to 'out/x/a.safetensors': "
        f"{tmp_path / 'out'} is a file, not a folder"
    ]
    assert (tmp_path / "out").read_bytes() == b"a file, not a folder"
    assert partial_files(tmp_path) == []


def test_two_saves_naming_one_file_are_an_error(tmp_path: Path, models: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "same").symlink_to(tmp_path / "out", target_is_directory=True)
    write_recipe(
        tmp_path,
        declare(models, "a", "b")
        + 'save a to "out/x.safetensors"\n'
        + f'save b to "{tmp_path}/out/x.safetensors"\n'
        + 'save weighted_sum(a, b, alpha=0.5) to "same/x.safetensors"\n',
    )

    status, out, err = run_cli(tmp_path, "run", "recipe.merge")

    assert (status, out) == (1, ""), err
    target = tmp_path / "out" / "x.safetensors"
    assert error_heads(err) == [
        f"recipe.merge:4:1: error: '{target}' is the same file as 'out/x.safetensors', "
        f"saved on line 3 ({target})",
        "recipe.merge:5:1: error: 'same/x.safetensors' is the same file as "
        f"'out/x.safetensors', saved on line 3 ({tmp_path / 'same' / 'x.safetensors'})",
    ]
    assert files_under(tmp_path / "out") == []


# ---- existing files, --force, absolute paths, --out-dir, symlinked folders --------------------


@dataclass(frozen=True)
class ForcedRun:
    """The same recipe run without ``--force`` (refused), then with it."""

    folder: Path
    first: tuple[int, str, str]
    after_first: dict[str, str]
    second: tuple[int, str, str]
    absolute: Path


PRECIOUS = b"an existing file, not made by mergelang"


@pytest.fixture(scope="module")
def forced(tmp_path_factory: pytest.TempPathFactory, models: Path) -> ForcedRun:
    """Outputs (with ``--out-dir built``): ``out/mix`` over an existing file, ``out/pointer``
    over a symlink to a file that must not change, an absolute path with ``..`` in it, and
    ``linked/half`` through a symlinked folder."""
    folder = tmp_path_factory.mktemp("forced")
    built = folder / "built"
    (built / "out").mkdir(parents=True)
    (built / "out" / "mix.safetensors").write_bytes(PRECIOUS)
    (folder / "keep.bin").write_bytes(PRECIOUS)
    (built / "out" / "pointer.safetensors").symlink_to(folder / "keep.bin")
    (folder / "real").mkdir()
    (built / "linked").symlink_to(folder / "real", target_is_directory=True)
    absolute = folder / "elsewhere" / ".." / "absolute.safetensors"
    write_recipe(
        folder,
        declare(models, "a", "b")
        + 'save weighted_sum(a, b, alpha=0.25, base=0.25) to "out/mix.safetensors" as fp16\n'
        + 'save weighted_sum(a, b, alpha=0.5, base=0.5) to "out/pointer.safetensors" as fp16\n'
        + f'save weighted_sum(a, b, alpha=0.75, base=0.75) to "{absolute}" as fp16\n'
        + 'save weighted_sum(a, b, alpha=1, base=1) to "linked/half.safetensors" as fp16\n',
    )
    first = run_cli(folder, "run", "recipe.merge", "--out-dir", "built")
    after_first = made_files(folder)
    second = run_cli(folder, "run", "recipe.merge", "--out-dir", "built", "--force")
    return ForcedRun(folder, first, after_first, second, folder / "absolute.safetensors")


def made_files(folder: Path) -> dict[str, str]:
    """The sha256 of each file below ``folder`` but the cache, by relative path (a symlink
    to a file counts as a file)."""
    names = [name for name in files_under(folder) if not name.startswith("cache/")]
    return {name: sha256(folder / name) for name in names}


def expected_mix(models: Path, alpha: float) -> dict[str, torch.Tensor]:
    a, b = load(models / "a.safetensors"), load(models / "b.safetensors")
    return expected_output("sd1", [a, b], weighted_sum(uniform("sd1", alpha)), "fp16")


def test_an_existing_output_is_refused_without_force(forced: ForcedRun) -> None:
    status, out, err = forced.first
    built = forced.folder / "built" / "out"

    assert (status, out) == (1, ""), err
    assert error_heads(err) == [
        f"recipe.merge:3:1: error: {built / 'mix.safetensors'}: the output file already exists",
        f"recipe.merge:4:1: error: {built / 'pointer.safetensors'}: the output file already exists",
    ]
    assert err.count("  hint: pass --force to replace it\n") == 2
    # The refused run wrote nothing at all, and changed nothing.
    precious = hashlib.sha256(PRECIOUS).hexdigest()
    after = dict(forced.after_first)
    assert after.pop("recipe.merge")
    assert after == {
        "built/out/mix.safetensors": precious,
        "built/out/pointer.safetensors": precious,
        "keep.bin": precious,
    }


def test_force_replaces_existing_files_never_writing_through_a_symlink(
    forced: ForcedRun, models: Path
) -> None:
    status, out, err = forced.second
    built = forced.folder / "built" / "out"

    assert (status, out) == (0, ""), err
    assert err.startswith("wrote 4 outputs ")
    assert err.splitlines()[1:] == [
        "  written  built/out/mix.safetensors",
        "  written  built/out/pointer.safetensors",
        "  written  absolute.safetensors",
        "  written  built/linked/half.safetensors",
    ]
    assert_same_tensors(load(built / "mix.safetensors"), expected_mix(models, 0.25))
    pointer = built / "pointer.safetensors"
    assert not pointer.is_symlink()
    assert_same_tensors(load(pointer), expected_mix(models, 0.5))
    assert (forced.folder / "keep.bin").read_bytes() == PRECIOUS
    assert partial_files(forced.folder) == []


def test_absolute_paths_out_dir_and_symlinked_folders(forced: ForcedRun, models: Path) -> None:
    status, _, err = forced.second
    assert status == 0, err

    # An absolute path is taken as it is (``..`` in it is fine); relative ones go under
    # --out-dir, and a symlinked folder on the way is followed.
    assert_same_tensors(load(forced.absolute), expected_mix(models, 0.75))
    assert (forced.folder / "built" / "linked").is_symlink()
    assert_same_tensors(load(forced.folder / "real" / "half.safetensors"), expected_mix(models, 1))
    assert sorted(made_files(forced.folder)) == [
        "absolute.safetensors",
        "built/out/mix.safetensors",
        "built/out/pointer.safetensors",
        "keep.bin",
        "real/half.safetensors",
        "recipe.merge",
    ]
