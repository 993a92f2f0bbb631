"""Finding models by path and by name in the model folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mergelang.errors import CheckpointError
from mergelang.io.locate import ModelLocator, strip_hash_suffix


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


@pytest.fixture
def models(tmp_path: Path) -> Path:
    root = tmp_path / "Stable-diffusion"
    touch(root / "sd15.safetensors")
    touch(root / "anime" / "counterfeit.safetensors")
    touch(root / "anime" / "old" / "counterfeit.ckpt")
    touch(root / "photo" / "real.ckpt")
    touch(root / "dup.safetensors")
    touch(root / "dup.ckpt")
    touch(root / "notes.txt")
    return root


def locator(*dirs: Path, env: dict[str, str] | None = None) -> ModelLocator:
    return ModelLocator(list(dirs), env=env or {})


def failure(loc: ModelLocator, ref: str, **kwargs: object) -> CheckpointError:
    with pytest.raises(CheckpointError) as caught:
        loc.find(ref, **kwargs)  # type: ignore[arg-type]
    return caught.value


def test_existing_paths_win(tmp_path: Path, models: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loc = locator(models)
    absolute = models / "photo" / "real.ckpt"
    assert loc.find(str(absolute)) == absolute

    recipe_dir = tmp_path / "recipes"
    local = touch(recipe_dir / "sd15.safetensors")
    assert loc.find("sd15.safetensors", relative_to=recipe_dir) == local

    monkeypatch.chdir(tmp_path)
    touch(tmp_path / "here.ckpt")
    assert loc.find("here.ckpt") == tmp_path / "here.ckpt"
    assert loc.find("./here") == tmp_path / "here.ckpt"


def test_recipe_folder_is_tried_before_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recipe_dir = tmp_path / "recipes"
    near = touch(recipe_dir / "m.safetensors")
    touch(tmp_path / "m.safetensors")
    monkeypatch.chdir(tmp_path)
    assert locator().find("m.safetensors", relative_to=recipe_dir) == near
    assert locator().find("m.safetensors") == tmp_path / "m.safetensors"


def test_search_by_name_recursively(models: Path) -> None:
    loc = locator(models)
    assert loc.find("sd15") == models / "sd15.safetensors"
    assert loc.find("sd15.safetensors") == models / "sd15.safetensors"
    assert loc.find("real") == models / "photo" / "real.ckpt"
    assert loc.find("photo/real.ckpt") == models / "photo" / "real.ckpt"
    assert loc.find("photo\\real") == models / "photo" / "real.ckpt"


def test_shallowest_match_wins(models: Path) -> None:
    loc = locator(models)
    assert loc.find("counterfeit") == models / "anime" / "counterfeit.safetensors"
    assert loc.find("old/counterfeit") == models / "anime" / "old" / "counterfeit.ckpt"
    assert loc.find("counterfeit.ckpt") == models / "anime" / "old" / "counterfeit.ckpt"


def test_a1111_hash_suffix_is_ignored(models: Path) -> None:
    loc = locator(models)
    assert strip_hash_suffix("sd15 [6ce0161689]") == ("sd15", "6ce0161689")
    assert strip_hash_suffix("plain name") == ("plain name", None)
    assert loc.find("sd15 [6ce0161689]") == models / "sd15.safetensors"
    assert loc.find("anime/counterfeit.safetensors [abcdef12]") == (
        models / "anime" / "counterfeit.safetensors"
    )


def test_ambiguous_names_list_the_candidates(models: Path) -> None:
    error = failure(locator(models), "dup")
    diag = error.diagnostics[0]
    assert diag.code == "model-ambiguous"
    assert str(models / "dup.ckpt") in diag.message
    assert str(models / "dup.safetensors") in diag.message
    assert locator(models).find("dup.ckpt") == models / "dup.ckpt"


def test_not_found_lists_every_place_searched(tmp_path: Path, models: Path) -> None:
    missing_dir = tmp_path / "nowhere"
    loc = locator(models, missing_dir)
    error = failure(loc, "ghost", relative_to=tmp_path / "recipes")
    diag = error.diagnostics[0]
    assert diag.code == "model-not-found"
    assert diag.path == "ghost"
    assert str(tmp_path / "recipes" / "ghost") in diag.message
    assert str(Path.cwd() / "ghost") in diag.message
    assert f"{models} (and its sub-folders)" in diag.message
    assert f"{missing_dir} (no such folder)" in diag.message
    assert diag.hint is None

    bare = failure(locator(), "ghost")
    assert bare.diagnostics[0].hint is not None
    assert "--models-dir" in bare.diagnostics[0].hint


def test_folders_from_the_environment_come_after_arguments(tmp_path: Path) -> None:
    first = tmp_path / "first"
    second = tmp_path / "second"
    third = tmp_path / "third"
    touch(second / "shared.safetensors")
    touch(third / "shared.safetensors")
    touch(third / "only-env.ckpt")
    env = {"MERGELANG_MODELS": os.pathsep.join([str(third), str(second)])}
    loc = ModelLocator([first, second], env=env)
    assert loc.search_dirs == (first, second, third)
    assert loc.find("shared") == second / "shared.safetensors"
    assert loc.find("only-env") == third / "only-env.ckpt"


def test_partial_outputs_and_hidden_folders_are_skipped(tmp_path: Path) -> None:
    root = tmp_path / "models"
    touch(root / ".out.safetensors.mergelang-partial-123-abcdef01")
    touch(root / ".git" / "mix.safetensors")
    touch(root / "mix.safetensors.mergelang-partial-1-00000000.safetensors")
    loc = locator(root)
    assert failure(loc, "mix").diagnostics[0].code == "model-not-found"
    assert loc.available() == []
    touch(root / "sub" / "mix.safetensors")
    assert locator(root).find("mix") == root / "sub" / "mix.safetensors"


def test_names_never_climb_out_of_the_model_folders(tmp_path: Path) -> None:
    root = tmp_path / "models"
    root.mkdir()
    touch(tmp_path / "outside.safetensors")
    error = failure(locator(root), "../outside", relative_to=tmp_path / "elsewhere")
    assert error.diagnostics[0].code == "model-not-found"


def test_symlink_loops_are_scanned_once(tmp_path: Path) -> None:
    root = tmp_path / "models"
    touch(root / "a" / "m.safetensors")
    (root / "a" / "loop").symlink_to(root, target_is_directory=True)
    assert locator(root).find("m") == root / "a" / "m.safetensors"


def test_available_lists_models_only(models: Path) -> None:
    names = sorted(p.relative_to(models).as_posix() for p in locator(models).available())
    assert names == [
        "anime/counterfeit.safetensors",
        "anime/old/counterfeit.ckpt",
        "dup.ckpt",
        "dup.safetensors",
        "photo/real.ckpt",
        "sd15.safetensors",
    ]


def test_recipe_folder_that_is_the_working_folder_is_listed_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError) as caught:
        ModelLocator((), env={}).find("absent.safetensors", relative_to=".")
    searched = caught.value.message.splitlines()[1:]
    assert searched == [f"  {tmp_path / 'absent.safetensors'}"]
