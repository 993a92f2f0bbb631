"""Several ``mergelang run`` processes writing the same output at once.

The output is moved into place by one atomic rename (or hard link), so whatever the timing
the file afterwards is whole and is exactly one run's result. Without ``--force`` the first
run to finish wins: a run that would write other content fails with a clean error, and a run
that would write the same content finds it up to date. With ``--force`` a run replaces the
file whenever it finishes. No temporary file is ever left behind.

The processes race through the real command line; the same situations with their timing
fixed (another run finishing while this one merges, or before it opens its output) are run
in process.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import subprocess
from pathlib import Path

import pytest
import torch
from run_helpers import (
    assert_same_tensors,
    expected_output,
    finish_cli,
    load,
    partial_files,
    shared_models,
    start_cli,
    uniform,
    weighted_sum,
    write_recipe,
)

from mergelang import api
from mergelang.errors import OutputError
from mergelang.plan.plan import FileOutput, Plan
from mergelang.run.executor import RunResult, execute

KINDS = ("fp16", "bf16")
"""Two recipes that write the same file with different content: the same merge saved in
two dtypes."""

STARTED: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("fp16", ()),
    ("fp16", ()),
    ("bf16", ("--force",)),
)
"""The runs of a round: two with the same content without ``--force``, and one with other
content and ``--force``. Whatever the timing, the forced run's file is the one that stays:
it replaces whatever is there when it finishes, and a run without ``--force`` never replaces
a file. Each run without ``--force`` either made the file (or found it made with the same
content) before the forced run finished, or fails cleanly."""

ROUNDS = int(os.environ.get("MERGELANG_TEST_RACES", "1"))
"""Rounds, each with fresh processes racing for a fresh output. Every run imports torch,
which costs seconds of CPU on a small machine, so one round is the default; set
``MERGELANG_TEST_RACES`` to give the race more chances."""

EXISTS = (
    ": the output file already exists",
    ": the output file already exists and was made from other steps, inputs or options",
    ": the output file appeared while it was being written",
)
"""How a run without ``--force`` that lost the race ends its first error line."""


def recipe(kind: str) -> str:
    return (
        'model a = "models/a.safetensors"\n'
        'model b = "models/b.safetensors"\n'
        f'save weighted_sum(a, b, alpha=0.3, base=0.3) to "out/mix.safetensors" as {kind}\n'
    )


@functools.cache
def expected(models: Path, kind: str) -> dict[str, torch.Tensor]:
    a, b = load(models / "a.safetensors"), load(models / "b.safetensors")
    return expected_output("sd1", [a, b], weighted_sum(uniform("sd1", 0.3)), kind)


def matches(path: Path, tensors: dict[str, torch.Tensor]) -> bool:
    try:
        assert_same_tensors(load(path), tensors)
    except AssertionError:
        return False
    return True


@pytest.mark.parametrize("attempt", range(ROUNDS))
def test_runs_racing_for_one_output_leave_it_whole_and_fail_cleanly(
    tmp_path: Path, big_models: Path, attempt: int
) -> None:
    (tmp_path / "models").symlink_to(big_models, target_is_directory=True)
    for kind in KINDS:
        write_recipe(tmp_path, recipe(kind), f"{kind}.merge")
    procs: list[tuple[str, tuple[str, ...], subprocess.Popen[str]]] = []
    try:
        for kind, argv in STARTED:
            proc = start_cli(tmp_path, "run", f"{kind}.merge", "--workers", "1", *argv)
            procs.append((kind, argv, proc))
    finally:
        results = [(kind, argv, *finish_cli(proc)) for kind, argv, proc in procs]

    output = tmp_path / "out" / "mix.safetensors"
    for kind, argv, status, out, err in results:
        assert out == "", out
        assert "Traceback" not in err, err
        if status == 0 or argv:
            assert status == 0, err
            assert err.startswith(("wrote 1 output", "nothing to do: 1 output up to date")), err
        else:
            assert status == 1, err
            head = err.splitlines()[0]
            assert head.startswith((f"{output}: error: ", f"{kind}.merge:3:1: error: ")), err
            assert head.endswith(EXISTS), err
            assert "  hint: pass --force to replace it\n" in err
    # The output is whole and byte for byte the forced run's result; nothing else is left.
    assert sorted(p.name for p in output.parent.iterdir()) == ["mix.safetensors"]
    assert partial_files(tmp_path) == []
    assert_same_tensors(load(output), expected(big_models, "bf16"))


# ---- the same races, with the timing fixed (in process) ---------------------------------------


class RunsOtherFirst:
    """A reporter that, at the first piece of merging it hears of, runs another plan to the
    end: that run's output appears while this one is writing the same file."""

    def __init__(self, other: Plan) -> None:
        self.other = other
        self.other_result: RunResult | None = None

    def phase(self, name: str, total: int, detail: str = "") -> None:
        return None

    def advance(self, done: int, detail: str = "") -> None:
        if self.other_result is None:
            self.other_result = execute(self.other)

    def note(self, text: str) -> None:
        return None

    def finish(self, ok: bool) -> None:
        return None


def planned(folder: Path, models: Path, kind: str, *, force: bool = False) -> Plan:
    """The plan of a run saving ``weighted_sum(a, b)`` as ``kind`` to ``out/mix``."""
    text = recipe(kind).replace('"models/', f'"{models}/')
    path = write_recipe(folder, text, f"{kind}.merge")
    return api.plan(path, cache_dir=folder / "cache", force=force, workers=1, hash_inputs=True)


def writing_to(plan: Plan, path: Path | None) -> Plan:
    """``plan`` with its one output going to ``path`` instead (plans are frozen)."""
    assert path is not None
    (output,) = plan.outputs
    assert isinstance(output, FileOutput)
    return dataclasses.replace(plan, outputs=(dataclasses.replace(output, path=path),))


@pytest.fixture(scope="module")
def small_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_models(tmp_path_factory, ("a", "b"))


@pytest.mark.parametrize("when", ["while merging", "before opening"])
def test_a_run_whose_output_appears_with_the_same_content_finds_it_up_to_date(
    tmp_path: Path, small_models: Path, when: str
) -> None:
    first, second = (planned(tmp_path / name, small_models, "fp16") for name in ("1", "2"))
    # Both planned before either wrote: each would write the file. Same folder for both.
    second = writing_to(second, first.outputs[0].path)
    if when == "while merging":
        reporter = RunsOtherFirst(first)
        result = execute(second, reporter=reporter)
        assert reporter.other_result is not None
        assert reporter.other_result.outputs[0].status == "written"
    else:
        assert execute(first).outputs[0].status == "written"
        result = execute(second)

    assert [o.status for o in result.outputs] == ["up-to-date"]
    assert [o.status for o in second.outputs] == ["write"]  # the plan itself is unchanged
    output = first.outputs[0].path
    assert output is not None
    assert_same_tensors(load(output), expected(small_models, "fp16"))
    assert partial_files(tmp_path) == []


@pytest.mark.parametrize(
    ("when", "message"),
    [
        ("while merging", "the output file appeared while it was being written"),
        ("before opening", "the output file already exists"),
    ],
)
def test_a_run_whose_output_appears_with_other_content_fails_without_force(
    tmp_path: Path, small_models: Path, when: str, message: str
) -> None:
    first = planned(tmp_path / "1", small_models, "bf16")
    second = planned(tmp_path / "2", small_models, "fp16")
    second = writing_to(second, output := first.outputs[0].path)
    assert output is not None

    with pytest.raises(OutputError) as caught:
        if when == "while merging":
            execute(second, reporter=RunsOtherFirst(first))
        else:
            execute(first)
            execute(second)

    (diag,) = caught.value.diagnostics
    assert (diag.code, diag.path, diag.message) == ("exists", str(output), message)
    assert diag.hint == "pass --force to replace it"
    assert_same_tensors(load(output), expected(small_models, "bf16"))
    assert partial_files(tmp_path) == []


def test_with_force_a_run_replaces_an_output_that_appeared_while_it_was_writing(
    tmp_path: Path, small_models: Path
) -> None:
    first = planned(tmp_path / "1", small_models, "bf16", force=True)
    second = planned(tmp_path / "2", small_models, "fp16", force=True)
    second = writing_to(second, output := first.outputs[0].path)
    assert output is not None

    reporter = RunsOtherFirst(first)
    result = execute(second, reporter=reporter)

    assert reporter.other_result is not None
    assert [o.status for o in reporter.other_result.outputs] == ["written"]
    assert [o.status for o in result.outputs] == ["written"]
    assert_same_tensors(load(output), expected(small_models, "fp16"))
    assert partial_files(tmp_path) == []
