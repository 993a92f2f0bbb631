"""Each input resolved once: one lookup, one open, one header parse, one descriptor that every
later read goes through (``mergelang.plan.inputs``)."""

from __future__ import annotations

import collections
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from run_helpers import (
    assert_same_tensors,
    expected_output,
    load,
    shared_models,
    uniform,
    weighted_sum,
    write_recipe,
)

import mergelang.io.safetensors_header as safetensors_header
from mergelang import api
from mergelang.check import check
from mergelang.cli import main
from mergelang.errors import RecipeError
from mergelang.io.hashing import compute_hashes, known_hashes
from mergelang.io.locate import ModelLocator
from mergelang.lang.parser import parse
from mergelang.plan.input_checks import check_inputs
from mergelang.plan.inputs import InputFile, resolve_inputs
from mergelang.run.executor import execute
from mergelang.testing import make_ckpt

RECIPE = (
    'model a = "models/a.safetensors"\n'
    'model b = "models/b.safetensors"\n'
    "mix = weighted_sum(a, b, alpha=0.3)\n"
    'save mix to "out/mix.safetensors"\n'
    'save add_difference(a, b, mix, alpha=0.5) to "out/diff.safetensors" as fp16\n'
)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_models(tmp_path_factory, ("a", "b"))


@pytest.fixture
def project(tmp_path: Path, shared: Path) -> Path:
    """A folder with ``models/a.safetensors``, ``models/b.safetensors`` and ``r.merge``."""
    (tmp_path / "models").mkdir()
    for name in ("a", "b"):
        shutil.copyfile(shared / f"{name}.safetensors", tmp_path / "models" / f"{name}.safetensors")
    write_recipe(tmp_path, RECIPE, "r.merge")
    return tmp_path


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> Iterator[collections.Counter[str]]:
    """Header parses by file name: the one header-reading function, counted."""
    counted: collections.Counter[str] = collections.Counter()
    real = safetensors_header.parse_header

    def counting(raw: bytes, *, path: Path, file_size: int) -> safetensors_header.SafetensorsHeader:
        counted[Path(path).name] += 1
        return real(raw, path=path, file_size=file_size)

    monkeypatch.setattr(safetensors_header, "parse_header", counting)
    yield counted


def input_parses(counted: collections.Counter[str]) -> dict[str, int]:
    return {name: counted[name] for name in ("a.safetensors", "b.safetensors")}


@pytest.mark.parametrize(
    "argv",
    [
        ["check", "--inputs", "r.merge"],
        ["plan", "r.merge"],
        ["plan", "--hash", "r.merge"],
        ["run", "-q", "r.merge"],
        ["run", "-q", "--dry-run", "r.merge"],
    ],
    ids=["check-inputs", "plan", "plan-hash", "run", "dry-run"],
)
def test_each_input_header_is_parsed_once(
    project: Path,
    parses: collections.Counter[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
) -> None:
    monkeypatch.chdir(project)
    monkeypatch.setenv("MERGELANG_CACHE", str(project / "cache"))
    assert main(argv) == 0, capsys.readouterr().err
    assert input_parses(parses) == {"a.safetensors": 1, "b.safetensors": 1}


def test_a_rerun_parses_each_input_once_and_reads_the_outputs_it_finds(
    project: Path,
    parses: collections.Counter[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(project)
    monkeypatch.setenv("MERGELANG_CACHE", str(project / "cache"))
    assert main(["run", "-q", "r.merge"]) == 0
    parses.clear()
    assert main(["run", "-q", "r.merge"]) == 0
    assert dict(parses) == {
        "a.safetensors": 1,
        "b.safetensors": 1,
        "mix.safetensors": 1,  # the existing outputs' recorded addresses
        "diff.safetensors": 1,
    }


def test_a_file_reached_by_two_names_is_opened_and_parsed_once(
    project: Path, parses: collections.Counter[str]
) -> None:
    os.symlink(project / "models" / "a.safetensors", project / "models" / "again.safetensors")
    text = (
        'model a = "models/a.safetensors"\nmodel again = "models/again.safetensors"\n'
        'save weighted_sum(a, again) to "o.safetensors"\n'
    )
    recipe = write_recipe(project, text, "two.merge")
    checked = check(parse(text, path=str(recipe)))
    with resolve_inputs(checked, ModelLocator([], env={})) as inputs:
        assert inputs.models["a"].file is inputs.models["again"].file
        report = check_inputs(checked, inputs)
    assert [i.path.name for i in report.inputs.values()] == ["a.safetensors", "again.safetensors"]
    assert dict(parses) == {"a.safetensors": 1}
    plan = api.plan(recipe)
    plan.close()
    assert [h.name for h in plan.inputs] == ["a"]


def test_an_input_replaced_after_planning_is_never_mixed_in(project: Path, shared: Path) -> None:
    """The run reads the files it resolved: replacing ``a`` on disk between planning and
    running changes nothing the run writes."""
    plan = api.plan(project / "r.merge", cache_dir=project / "cache", hash_inputs=True)
    replacement = project / "models" / "other.safetensors"
    shutil.copyfile(shared / "b.safetensors", replacement)
    os.replace(replacement, project / "models" / "a.safetensors")

    result = execute(plan)

    assert [o.status for o in result.outputs] == ["written", "written"]
    a, b = load(shared / "a.safetensors"), load(shared / "b.safetensors")
    expected = expected_output("sd1", [a, b], weighted_sum(uniform("sd1", 0.3)), None)
    assert_same_tensors(load(project / "out" / "mix.safetensors"), expected)


def test_the_hashes_are_those_of_the_file_opened(tmp_path: Path, shared: Path) -> None:
    path = tmp_path / "a.safetensors"
    shutil.copyfile(shared / "a.safetensors", path)
    opened = InputFile.open(path)
    try:
        shutil.copyfile(shared / "b.safetensors", tmp_path / "b.safetensors")
        os.replace(tmp_path / "b.safetensors", path)
        hashes = opened.hashes(tmp_path / "cache", compute=True)
        assert hashes == compute_hashes(shared / "a.safetensors")
        assert hashes != compute_hashes(path)
        # Remembered for the file opened (its inode), not for what the name leads to now.
        assert opened.hashes(tmp_path / "cache", compute=False) == hashes
        assert known_hashes(path, cache_dir=tmp_path / "cache") is None
    finally:
        opened.close()


def test_a_pickle_input_is_loaded_through_its_open_file(tmp_path: Path) -> None:
    ckpt = make_ckpt(tmp_path / "old.ckpt", "sd1", scale=1 / 80)
    opened = InputFile.open(ckpt)
    try:
        assert opened.format == "pickle"
        junk = tmp_path / "junk.ckpt"
        junk.write_bytes(b"not a checkpoint at all\n" * 40)
        os.replace(junk, ckpt)
        reader = opened.load()
        assert len(reader.keys()) == 1131
        assert opened.detected().arch.name == "sd1"
        assert isinstance(reader.get(reader.keys()[0]), torch.Tensor)
    finally:
        opened.close()


def test_a_missing_input_is_reported_once_per_name(project: Path) -> None:
    text = 'model a = "models/nowhere.safetensors"\nsave a to "o.safetensors"\n'
    recipe = write_recipe(project, text, "missing.merge")
    with pytest.raises(RecipeError) as caught:
        api.plan(recipe)
    (diag,) = caught.value.diagnostics
    assert (diag.code, diag.location()) == ("model-not-found", f"{recipe}:1:11")
