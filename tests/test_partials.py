"""Partial files: liveness by a lock held on a lock file beside them, never by process id,
and a sweep of every stale partial file, of any name, in the folders a run writes to.

The holders here are real processes: one that holds a lock while the process id in its
files' names is of a process long gone (as a run in another PID namespace, or on another
host sharing the folder, looks from here), and writers killed with ``SIGKILL``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from run_helpers import declare, files_under, run_cli, shared_models, write_recipe

from mergelang.io.partials import sweep

HOLDER = r"""
import fcntl, os, sys
folder, token = sys.argv[1], sys.argv[2]
lock = os.open(os.path.join(folder, f".mergelang-partial-{token}.lock"), os.O_RDWR | os.O_CREAT)
fcntl.flock(lock, fcntl.LOCK_EX)
for name in sys.argv[3:]:
    with open(os.path.join(folder, f".{name}.mergelang-partial-{token}"), "wb") as f:
        f.write(b"being written")
print("ready", flush=True)
sys.stdin.read()
"""
"""A process holding the lock of partial files whose names carry another process id."""

KILLED_WRITER = r"""
import os, signal, sys
from mergelang.io.writer import OutputEntry, SafetensorsWriter
writer = SafetensorsWriter(sys.argv[1], [OutputEntry("w", "F32", (1024,))])
print(writer._file.temp_path, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""
"""A writer killed with SIGKILL in the middle of its output: it leaves its partial file."""


def finished_pid() -> int:
    """The process id of a process that has ended and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", ""])
    proc.wait()
    return proc.pid


def hold(folder: Path, token: str, *names: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder), token, *names],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    return proc


def killed_writer(target: Path) -> Path:
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, str(target)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    partial = Path(proc.stdout.strip())
    assert partial.is_file()
    return partial


@pytest.fixture
def project(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    models = shared_models(tmp_path_factory, ("a", "b"))
    text = (
        declare(models, "a", "b") + 'save weighted_sum(a, b, alpha=0.3) to "out/mix.safetensors"\n'
    )
    write_recipe(tmp_path, text)
    (tmp_path / "out").mkdir()
    return tmp_path


def warnings_of(err: str) -> list[str]:
    return sorted(line for line in err.splitlines() if ": warning: " in line)


def test_a_live_holder_keeps_its_partial_files_whatever_pid_their_names_carry(
    project: Path,
) -> None:
    dead = finished_pid()
    out = project / "out"
    token = f"{dead}-0123abcd"
    holder = hold(out, token, "mix.safetensors", "other.safetensors")
    held = sorted(
        [
            f".mix.safetensors.mergelang-partial-{token}",
            f".other.safetensors.mergelang-partial-{token}",
            f".mergelang-partial-{token}.lock",
        ]
    )
    try:
        status, _, err = run_cli(project, "run", "recipe.merge")
        assert status == 0, err
        assert warnings_of(err) == []
        assert files_under(out) == sorted(["mix.safetensors", *held])
    finally:
        holder.kill()
        holder.wait()
    # Its holder gone, the lock is free: the next run sweeps them, and says so.
    status, _, err = run_cli(project, "run", "recipe.merge", "--rebuild")
    assert status == 0, err
    assert warnings_of(err) == [
        f"out/{name}: warning: removed a partial file left by an interrupted run (process {dead})"
        for name in held
        if not name.endswith(".lock")
    ]
    assert files_under(out) == ["mix.safetensors"]


def test_partials_of_any_name_left_by_killed_writers_are_swept(project: Path) -> None:
    out = project / "out"
    # Outputs the recipe no longer writes (it was edited after the kill).
    left = [killed_writer(out / "old.safetensors"), killed_writer(out / "older.safetensors")]
    assert len([n for n in files_under(out) if n.endswith(".lock")]) == 2

    status, _, err = run_cli(project, "run", "recipe.merge")

    assert status == 0, err
    pids = [int(p.name.rsplit("-", 2)[1]) for p in left]
    assert warnings_of(err) == sorted(
        f"out/{p.name}: warning: removed a partial file left by an interrupted run (process {pid})"
        for p, pid in zip(left, pids, strict=True)
    )
    assert files_under(out) == ["mix.safetensors"]


def test_sweep_removes_only_regular_files_without_a_live_holder(tmp_path: Path) -> None:
    dead = finished_pid()
    lockless = tmp_path / f".a.safetensors.mergelang-partial-{dead}-00000001"
    lockless.write_bytes(b"no lock beside it: no live writer")
    orphan_lock = tmp_path / f".mergelang-partial-{dead}-00000002.lock"
    orphan_lock.write_bytes(b"")
    kept = {
        "folder": tmp_path / f".b.safetensors.mergelang-partial-{dead}-00000003",
        "link": tmp_path / f".c.safetensors.mergelang-partial-{dead}-00000004",
        "other name": tmp_path / f".d.safetensors.mergelang-partial-{dead}-0000000G",
        "plain": tmp_path / "e.safetensors",
    }
    kept["folder"].mkdir()
    kept["link"].symlink_to(kept["plain"])
    kept["other name"].write_bytes(b"not of the form")
    kept["plain"].write_bytes(b"a model")
    holder = hold(tmp_path, f"{os.getpid()}-00000005", "f.safetensors")
    try:
        removed = sweep(tmp_path)
        held = tmp_path / f".f.safetensors.mergelang-partial-{os.getpid()}-00000005"
        assert held.is_file()
    finally:
        holder.kill()
        holder.wait()
    assert removed == [(lockless, dead)]
    assert not orphan_lock.exists()
    assert all(os.path.lexists(p) for p in kept.values())
    assert sweep(tmp_path) == [(held, os.getpid())]
    assert sweep(tmp_path) == []
