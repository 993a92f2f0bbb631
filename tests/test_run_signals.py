"""Faults during ``mergelang run``, through the command line in a subprocess.

SIGINT and SIGTERM end a run with 130 and 143 and leave nothing. SIGKILL leaves only
temporary files named as documented, which the model locator ignores and the next run
removes (saying so) before it writes the same bytes as a run never interrupted. A file-size
limit hit while writing an output or a cache object is a clean error that leaves nothing.
"""

from __future__ import annotations

import re
import resource
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from run_helpers import (
    PARTIAL_NAME,
    declare,
    files_under,
    finish_cli,
    partial_files,
    run_cli,
    sha256,
    shared_models,
    signal_when_laid_out,
    start_cli,
    write_recipe,
)

from mergelang.cli import main
from mergelang.errors import CheckpointError
from mergelang.io.locate import ModelLocator
from mergelang.io.partials import parse_partial

RECIPE = """\
model a = "models/a.safetensors"
model b = "models/b.safetensors"
cache blend = weighted_sum(a, b, alpha=0.3, base=0.3)
save blend to "out/mix.safetensors" as fp16
"""
"""A cached step and an output: a run has two files open while it merges."""

SIGNALS = {
    "SIGINT": signal.SIGINT,
    "SIGTERM": signal.SIGTERM,
    "SIGHUP": signal.SIGHUP,
    "SIGQUIT": signal.SIGQUIT,
    "SIGUSR1": signal.SIGUSR1,
    "SIGKILL": signal.SIGKILL,
}


def make_project(folder: Path, big_models: Path) -> Path:
    """A recipe folder with the big models linked in."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "models").symlink_to(big_models, target_is_directory=True)
    write_recipe(folder, RECIPE)
    return folder


def input_digests(models: Path) -> dict[str, str]:
    return {p.name: sha256(p) for p in sorted(models.iterdir())}


def written_files(folder: Path) -> list[str]:
    """Everything a run writes below ``folder``: outputs and cache objects (not the hash
    cache), as sorted relative paths."""
    found = [f"out/{n}" for n in files_under(folder / "out")]
    found += [f"cache/objects/{n}" for n in files_under(folder / "cache" / "objects")]
    return sorted(found)


@dataclass(frozen=True)
class Ended:
    """A run stopped by a signal in the middle of its merge."""

    folder: Path
    pid: int
    status: int
    out: str
    err: str
    left: tuple[str, ...]
    """What it left of its outputs and cache objects (see :func:`written_files`)."""


@pytest.fixture(scope="module")
def inputs_before(big_models: Path) -> dict[str, str]:
    return input_digests(big_models)


@pytest.fixture(scope="module")
def signalled(
    tmp_path_factory: pytest.TempPathFactory, big_models: Path, inputs_before: dict[str, str]
) -> dict[str, Ended]:
    """One run per signal, started together, each signalled once its output file is laid
    out (so the signal lands in the merge, with the cache object's file open too)."""
    root = tmp_path_factory.mktemp("signalled")
    procs: dict[str, subprocess.Popen[str]] = {}
    try:
        for name in SIGNALS:
            folder = make_project(root / name, big_models)
            procs[name] = start_cli(folder, "run", "recipe.merge", "--workers", "1")
        signal_when_laid_out(
            [(procs[name], root / name / "out", signum) for name, signum in SIGNALS.items()]
        )
    finally:
        results = {name: finish_cli(proc) for name, proc in procs.items()}
    return {
        name: Ended(root / name, procs[name].pid, *results[name], tuple(written_files(root / name)))
        for name in SIGNALS
    }


# ---- SIGINT, SIGTERM ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "status", "message"),
    [
        ("SIGINT", 130, "interrupted\n"),
        ("SIGTERM", 143, "terminated\n"),
        ("SIGHUP", 129, "terminated (SIGHUP)\n"),
        ("SIGQUIT", 131, "terminated (SIGQUIT)\n"),
        ("SIGUSR1", 138, "terminated (SIGUSR1)\n"),
    ],
)
def test_sigint_sigterm_sighup_and_sigquit_end_the_run_and_leave_nothing(
    signalled: dict[str, Ended],
    big_models: Path,
    inputs_before: dict[str, str],
    name: str,
    status: int,
    message: str,
) -> None:
    ended = signalled[name]
    assert (ended.status, ended.out, ended.err) == (status, "", message)
    assert ended.left == ()
    assert partial_files(ended.folder) == []
    assert input_digests(big_models) == inputs_before


# ---- SIGKILL -----------------------------------------------------------------------------------


def uninterrupted_outputs(
    folder: Path, big_models: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """sha256 of every file that a run never interrupted writes, by path under ``folder``."""
    make_project(folder, big_models)
    with monkeypatch.context() as patch:
        patch.chdir(folder)
        patch.setenv("MERGELANG_CACHE", str(folder / "cache"))
        assert main(["run", "recipe.merge", "--quiet"]) == 0
    return {name: sha256(folder / name) for name in written_files(folder)}


def test_sigkill_leaves_only_partial_files_named_as_documented(
    signalled: dict[str, Ended],
) -> None:
    killed = signalled["SIGKILL"]
    assert killed.status == -signal.SIGKILL
    # The output's file, and the cache object's unless it was already in place, each with
    # the lock file its run held beside it.
    locks = [n for n in killed.left if n.endswith(".lock")]
    leftovers = [n for n in killed.left if not n.endswith(".lock")]
    assert len([n for n in leftovers if n.startswith("out/")]) == 1
    assert 1 <= len(leftovers) <= 2
    assert len(locks) == len(leftovers)
    for name in locks:
        assert LOCK_NAME.fullmatch(Path(name).name), name
        assert int(LOCK_NAME.fullmatch(Path(name).name)["pid"]) == killed.pid  # type: ignore[index]
    for name in leftovers:
        found = PARTIAL_NAME.fullmatch(Path(name).name)
        assert found is not None, name
        assert int(found.group("pid")) == killed.pid
        target = found.group("target")
        if name.startswith("out/"):
            assert target == "mix.safetensors"
        else:  # cache/objects/<ab>/<ab...>.safetensors
            assert target.endswith(".safetensors") and target[:2] == Path(name).parent.name

    # The model locator never takes one for a model, by name or by path.
    locator = ModelLocator([killed.folder / "out", killed.folder / "cache"], env={})
    assert locator.available() == []
    for name in killed.left:
        with pytest.raises(CheckpointError) as caught:
            locator.find(str(killed.folder / name))
        assert caught.value.diagnostics[0].code == "model-not-found"


def test_the_run_after_a_sigkill_removes_its_partial_files_and_says_so(
    signalled: dict[str, Ended],
    big_models: Path,
    inputs_before: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    killed = signalled["SIGKILL"]
    folder = killed.folder
    assert killed.left and written_files(folder) == list(killed.left)
    leftovers = [n for n in killed.left if not n.endswith(".lock")]
    # Left alone: names that are not exactly a partial file's.
    kept = [
        ".mix.safetensors.mergelang-partial-999999-0123ABCD",
        ".mix.safetensors.mergelang-partial-999999-0123abc",
        "mix.safetensors.mergelang-partial-999999-0123abcd",
        ".mix.safetensors.mergelang-partial-999999-0123abcd.bak",
    ]
    for name in kept:
        (folder / "out" / name).write_bytes(b"not mine")

    status, out, err = run_cli(folder, "run", "recipe.merge")

    assert (status, out) == (0, ""), err
    warnings = sorted(line for line in err.splitlines() if ": warning: " in line)
    assert warnings == [
        f"{name}: warning: removed a partial file left by an interrupted run (process {killed.pid})"
        for name in leftovers
    ]
    assert "wrote 1 output" in err
    # The lock files went with the partial files.
    assert files_under(folder / "out") == sorted(["mix.safetensors", *kept])
    assert partial_files(folder / "cache") == []
    reference = uninterrupted_outputs(
        tmp_path_factory.mktemp("uninterrupted"), big_models, monkeypatch
    )
    assert written_files(folder) == sorted([*reference, *(f"out/{n}" for n in kept)])
    assert {name: sha256(folder / name) for name in reference} == reference
    assert input_digests(big_models) == inputs_before


# ---- partial file names --------------------------------------------------------------------

LOCK_NAME = re.compile(r"\.mergelang-partial-(?P<pid>[0-9]+)-[0-9a-f]{8}\.lock")
"""The documented name of the lock file beside a run's partial files."""


def test_parse_partial_reads_only_the_exact_name() -> None:
    assert parse_partial(".mix.safetensors.mergelang-partial-12-0123abcd") == (
        "mix.safetensors",
        12,
        "12-0123abcd",
    )
    for name in (
        ".mix.safetensors.mergelang-partial-12-0123abcd.bak",
        ".mix.safetensors.mergelang-partial-12-0123ABCD",
        ".mix.safetensors.mergelang-partial-012-0123abcd",
        ".mix.safetensors.mergelang-partial--12-0123abcd",
        ".mix.safetensors.mergelang-partial-x-0123abcd",
        "mix.safetensors.mergelang-partial-12-0123abcd",
        ".mergelang-partial-12-0123abcd.lock",
    ):
        assert parse_partial(name) is None, name


# ---- a file-size limit (a full disk) -----------------------------------------------------------


def file_size_limit(limit: int) -> Callable[[], None]:
    """For ``preexec_fn``: files may grow to ``limit`` bytes; past it a write fails with
    ``EFBIG`` (SIGXFSZ, which would end the process, is ignored)."""

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    return apply


def test_a_file_size_limit_is_a_clean_error_for_outputs_and_cache_objects(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    models = shared_models(tmp_path_factory, ("a", "b"))
    before = input_digests(models)
    head = declare(models, "a", "b")
    cases = {
        "output": head + 'save weighted_sum(a, b, alpha=0.3) to "out/mix.safetensors"\n',
        "cache": head
        + "cache blend = weighted_sum(a, b, alpha=0.3)\n"
        + 'save blend to "out/mix.safetensors"\n',
    }
    procs = {}
    for name, text in cases.items():
        write_recipe(tmp_path / name, text)
        # 256 KiB: room for the hash cache, not for a 2 MB model.
        limit = file_size_limit(256 * 1024)
        procs[name] = start_cli(tmp_path / name, "run", "recipe.merge", preexec_fn=limit)
    for name, proc in procs.items():
        folder = tmp_path / name
        status, out, err = finish_cli(proc)
        assert (status, out) == (1, ""), err
        # A cache object that cannot be stored does not fail a run (test_commit_together.py);
        # the output that cannot be written does.
        where, _, message = err.splitlines()[0].partition(": error: ")
        assert where == str(folder / "out" / "mix.safetensors")
        assert message == (
            "the file is larger than allowed (file size limit) while writing the header; "
            "the partial file was removed"
        ), err
        assert written_files(folder) == []
        assert partial_files(folder) == []
    assert input_digests(models) == before
