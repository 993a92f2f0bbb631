"""``mergelang plan``: the plan as text (golden files) and JSON, reading headers only.

Golden files: tests/golden/plan/*.txt; regenerate with MERGELANG_UPDATE_GOLDEN=1 after a
deliberate change of the plan's text.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mergelang.cli import main
from mergelang.testing import make_checkpoint

GOLDEN = Path(__file__).resolve().parent / "golden" / "plan"
UPDATE = os.environ.get("MERGELANG_UPDATE_GOLDEN") == "1"

TWO_STEPS = """\
model a = "models/a.safetensors"
model b = "models/b.safetensors"
model c = "models/c.safetensors"

cache blend = weighted_sum(a, b, alpha=0.25)
tuned = add_difference(c, blend, a, alpha=0.5)
save tuned to "out/tuned.safetensors" as fp16
"""


def assert_golden(name: str, actual: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual, encoding="utf-8")
        return
    assert path.is_file(), f"missing golden file {path}: run with MERGELANG_UPDATE_GOLDEN=1"
    assert actual == path.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("plan-models")
    for seed, name in enumerate("abc", 1):
        make_checkpoint(folder / f"{name}.safetensors", "sd1", seed=seed)
    return folder


@pytest.fixture
def project(tmp_path: Path, models: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A recipe folder with the models linked in, as the current folder."""
    (tmp_path / "models").symlink_to(models, target_is_directory=True)
    (tmp_path / "two-steps.merge").write_text(TWO_STEPS, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def files_under(folder: Path) -> set[Path]:
    return {p.relative_to(folder) for p in folder.rglob("*") if "models" not in p.parts}


def plan(
    project: Path,
    capsys: pytest.CaptureFixture[str],
    *extra: str,
    recipe: str = "two-steps.merge",
) -> str:
    cache = str(project / "cache")
    argv = ["plan", recipe, "--cache-dir", cache, "--workers", "2", *extra]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    return captured.out


def test_plan_text_matches_golden(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = plan(project, capsys)
    assert "└── #5 tuned = add_difference(#1, #4, #2, alpha=0.5)  [fused]" in text
    assert "#4 blend = weighted_sum(#2, #3, alpha=0.25)" in text
    assert "passes: 1 (merge); each input key is read once for 1 output" in text
    assert "out/tuned.safetensors  (fp16, 1131 keys, 1.9 MB)  write" in text
    assert str(project) not in text  # paths relative to the recipe's folder
    assert_golden("two-steps.txt", text)


def test_plan_hash_decides_the_cache(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = plan(project, capsys, "--hash")
    assert "not hashed yet" not in text
    assert_golden("two-steps-hashed.txt", text)


def test_plan_from_another_folder_shows_paths_relative_to_the_recipe(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = project / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    argv = ["plan", "../two-steps.merge", "--cache-dir", str(project / "cache")]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "  a  models/a.safetensors  sd1  1.9 MB  not hashed yet" in text
    assert "  out/tuned.safetensors  (fp16" in text


def test_plan_json(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = json.loads(plan(project, capsys, "--json"))
    kinds = {step["id"]: step["kind"] for step in data["steps"]}
    assert sorted(kinds.values()) == sorted(
        ["load", "load", "load", "method:weighted_sum", "method:add_difference"]
    )
    (output,) = data["outputs"]
    assert output["path"] == str(project / "out" / "tuned.safetensors")
    assert output["status"] == "write"
    assert output["dtype"] == "fp16"
    assert output["keys"] == 1131
    assert kinds[output["step"]] == "method:add_difference"
    assert data["passes"] == ["merge"]
    assert data["workers"] == 2
    assert data["hashed"] is False


def test_plan_reads_no_tensor_and_writes_nothing(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = files_under(project)
    plan(project, capsys)
    plan(project, capsys, "--json")
    assert files_under(project) == before
    assert not (project / "cache").exists()


def test_plan_after_a_run_shows_up_to_date(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = str(project / "cache")
    assert main(["run", "two-steps.merge", "--cache-dir", cache, "--quiet"]) == 0
    text = plan(project, capsys)
    assert "out/tuned.safetensors  (fp16, 1131 keys, 1.9 MB)  up to date" in text
    assert "passes: none (every output is up to date)" in text
    # The same recipe edited: its own output is planned over, saying what changed, reading
    # the cached blend.
    other = TWO_STEPS.replace("alpha=0.5", "alpha=0.75")
    (project / "two-steps.merge").write_text(other, encoding="utf-8")
    again = plan(project, capsys)
    assert (
        "out/tuned.safetensors  (fp16, 1131 keys, 1.9 MB)  write "
        "(replaces its earlier output: step 'tuned' changed)"
    ) in again
    assert "#4 blend = weighted_sum(#2, #3, alpha=0.25)  [cache hit]" in again
    # Another recipe saving to the same file: refused, then planned over it with --force.
    (project / "other.merge").write_text(other, encoding="utf-8")
    assert main(["plan", "other.merge", "--cache-dir", cache]) == 1
    assert "hint: pass --force to replace it" in capsys.readouterr().err
    forced = plan(project, capsys, "--force", recipe="other.merge")
    assert "out/tuned.safetensors  (fp16, 1131 keys, 1.9 MB)  write" in forced
    assert "#4 blend = weighted_sum(#2, #3, alpha=0.25)  [cache hit]" in forced


def test_plan_of_a_missing_model_names_the_recipe_place(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "missing.merge").write_text(
        'model a = "models/a.safetensors"\nmodel z = "models/zzz.safetensors"\n'
        'save weighted_sum(a, z, alpha=0.5) to "out/z.safetensors"\n',
        encoding="utf-8",
    )
    assert main(["plan", "missing.merge", "--cache-dir", str(project / "cache")]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "missing.merge:2:11: error: model 'z': cannot find this model" in captured.err
