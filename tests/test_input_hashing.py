"""Hashing spread over threads and processes: a file hashed block by block, the work moving
between threads, gives the hashes of a single pass; a child process hashing the run's own
descriptor gives them too, and a run whose children cannot start or fail hashes in its own
process."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import mergelang
from mergelang.api import load
from mergelang.io.hashing import BLOCK_SIZE, CachedHasher, FileHasher, known_hashes
from mergelang.io.locate import ModelLocator
from mergelang.io.safetensors_header import read_safetensors_header as read_header
from mergelang.plan.planner import PlanOptions, build_plan
from mergelang.run import input_hashing
from mergelang.testing import make_checkpoint


def _file(tmp_path: Path, size: int) -> tuple[Path, bytes]:
    data = bytes((i * 7 + i // 251) % 256 for i in range(size))
    path = tmp_path / "model.safetensors"
    path.write_bytes(data)
    return path, data


def test_a_file_hashed_in_two_threads_by_turns_gives_one_pass_hashes(tmp_path: Path) -> None:
    path, data = _file(tmp_path, 3 * BLOCK_SIZE + 12345)
    with path.open("rb") as file:
        hasher = FileHasher(file)
        worker = threading.Thread(target=hasher.step)
        worker.start()
        worker.join()
        assert hasher.position == BLOCK_SIZE  # one block in the other thread
        found = hasher.digests()  # the rest here
    assert found.sha256 == hashlib.sha256(data).hexdigest()
    assert found.legacy == hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]
    assert found.size == len(data)


def test_a_cached_hasher_stores_its_hashes_only_for_an_unchanged_file(tmp_path: Path) -> None:
    path, data = _file(tmp_path, BLOCK_SIZE + 10)
    cache = tmp_path / "cache"
    with path.open("rb") as file:
        CachedHasher(path, file, cache).finish()
    known = known_hashes(path, cache_dir=cache)
    assert known is not None and known.sha256 == hashlib.sha256(data).hexdigest()

    other = tmp_path / "other"
    with path.open("r+b") as file:
        hasher = CachedHasher(path, file, other)
        hasher.step()
        file.seek(0)
        file.write(b"changed")  # written to while it is hashed
        file.flush()
        os.utime(path, ns=(1, 1))
        hasher.finish()
    assert known_hashes(path, cache_dir=other) is None


def _child(fd: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-S", "-I", str(input_hashing.CHILD_SCRIPT), str(fd)],
        pass_fds=(fd,),
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.skipif(not input_hashing.can_start_children(), reason="no child interpreter here")
def test_the_hashing_child_hashes_the_descriptor_it_is_given_not_the_name(tmp_path: Path) -> None:
    path, data = _file(tmp_path, 2 * BLOCK_SIZE + 999)
    with path.open("rb") as file:
        (tmp_path / "new").write_bytes(b"another file now has the name")
        os.replace(tmp_path / "new", path)
        done = _child(file.fileno())
    assert done.returncode == 0, done.stderr
    *counts, last = done.stdout.splitlines()
    assert [int(c) for c in counts] == [BLOCK_SIZE, BLOCK_SIZE, 999]
    whole = hashlib.sha256(data).hexdigest()
    legacy = hashlib.sha256(data[0x100000:0x110000]).hexdigest()
    assert last.split() == ["done", whole, legacy, str(len(data))]


@pytest.mark.skipif(not input_hashing.can_start_children(), reason="no child interpreter here")
def test_the_hashing_child_fails_on_a_descriptor_it_cannot_read(tmp_path: Path) -> None:
    with (tmp_path / "w").open("wb") as file:  # open for writing only
        fd = file.fileno()
        done = _child(fd)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith(f"cannot hash descriptor {fd}: ")


RECIPE = """model a = "{a}"
model b = "{b}"
save weighted_sum(a, b, alpha=0.5) to "out.safetensors"
"""


def _first_run_hashes(tmp_path: Path) -> tuple[list[str], list[str]]:
    """A first run's recorded input hashes, and those of hashlib."""
    models = tmp_path / "models"
    a = make_checkpoint(models / "a.safetensors", "sd1", scale=1 / 64, seed=1)
    b = make_checkpoint(models / "b.safetensors", "sd1", scale=1 / 64, seed=2)
    recipe = tmp_path / "r.merge"
    recipe.write_text(RECIPE.format(a=a.as_posix(), b=b.as_posix()), encoding="utf-8")
    mergelang.run(recipe, cache_dir=tmp_path / "cache")
    recorded = json.loads(read_header(tmp_path / "out.safetensors").metadata["mergelang.inputs"])
    for path in (a, b):
        assert known_hashes(path, cache_dir=tmp_path / "cache") is not None
    expected = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (a, b)]
    return [entry["sha256"] for entry in recorded], expected


def test_a_run_that_cannot_start_children_hashes_in_its_own_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(input_hashing, "can_start_children", lambda: False)
    found, expected = _first_run_hashes(tmp_path)
    assert found == expected


@pytest.mark.skipif(not input_hashing.can_start_children(), reason="no child interpreter here")
def test_a_run_whose_hashing_children_fail_hashes_in_its_own_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("import sys\nprint(123)\nsys.exit(3)\n", encoding="utf-8")
    monkeypatch.setattr(input_hashing, "CHILD_SCRIPT", broken)
    found, expected = _first_run_hashes(tmp_path)
    assert found == expected


@pytest.mark.skipif(not input_hashing.can_start_children(), reason="no child interpreter here")
def test_stopping_the_hashing_ends_its_children(tmp_path: Path) -> None:
    models = tmp_path / "models"
    a = make_checkpoint(models / "a.safetensors", "sd1", scale=1 / 4, seed=1)
    b = make_checkpoint(models / "b.safetensors", "sd1", scale=1 / 4, seed=2)
    recipe = tmp_path / "r.merge"
    recipe.write_text(RECIPE.format(a=a.as_posix(), b=b.as_posix()), encoding="utf-8")
    plan = build_plan(
        load(recipe),
        ModelLocator(()),
        PlanOptions(cache_dir=tmp_path / "cache", hash_during_run=True),
    )
    try:
        assert len(plan.hashed_during_run) == 2
        hashing = input_hashing.InputHashing(plan)
        hashing.start()
        children = [job.child for job in hashing._jobs if job.child is not None]
        assert children
        hashing.stop()
        assert all(child.returncode is not None for child in children)
    finally:
        plan.close()
    assert known_hashes(a, cache_dir=tmp_path / "cache") is None
