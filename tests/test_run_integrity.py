"""A run's inputs kept honest: an input written to, truncated or replaced while a run reads
it never yields a silently mixed output, and the hash cache tells every state of a file
from another (device, inode, size, modification and change time)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from run_helpers import (
    assert_same_tensors,
    declare,
    expected_output,
    files_under,
    load,
    partial_files,
    sha256,
    shared_models,
    uniform,
    weighted_sum,
    write_recipe,
)

import mergelang.api as api
from mergelang.errors import CheckpointError
from mergelang.io.hashing import CACHE_FILE, FileIdentity, file_hashes, known_hashes
from mergelang.io.safetensors_header import read_safetensors_header as read_header
from mergelang.plan.cache import CACHE_VERSION, DATA_DIGEST
from mergelang.plan.text import human_bytes, render_plan
from mergelang.run.executor import RunResult


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MERGELANG_CACHE", str(tmp_path / "env-cache"))


@pytest.fixture
def models(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Path:
    """Private copies of the shared fixtures: these tests write to their inputs."""
    shared = shared_models(tmp_path_factory, ("a", "b", "c"))
    folder = tmp_path / "models"
    folder.mkdir()
    for name in ("a", "b", "c"):
        shutil.copy2(shared / f"{name}.safetensors", folder / f"{name}.safetensors")
    return folder


class OnFirstAdvance:
    """A reporter that calls ``action`` once, when the first key is done."""

    def __init__(self, action: Callable[[], None]) -> None:
        self.action = action
        self.called = False
        self.finished: list[bool] = []

    def phase(self, name: str, total: int, detail: str = "") -> None:
        return None

    def advance(self, done: int, detail: str = "") -> None:
        if not self.called:
            self.called = True
            self.action()

    def note(self, text: str) -> None:
        return None

    def finish(self, ok: bool) -> None:
        self.finished.append(ok)


def recipe(tmp_path: Path, models: Path) -> Path:
    return write_recipe(
        tmp_path,
        declare(models, "a", "b")
        + 'save weighted_sum(a, b, alpha=0.25) to "out/ab.safetensors" as fp16\n',
    )


def run(path: Path, folder: Path, **kwargs: Any) -> RunResult:
    return api.run(path, cache_dir=folder / "cache", workers=1, **kwargs)


def data_offset(path: Path) -> int:
    return read_header(path).data_offset


def test_an_input_rewritten_in_place_during_the_run_fails_it_and_writes_nothing(
    tmp_path: Path, models: Path
) -> None:
    target = models / "b.safetensors"
    stat = target.stat()

    def rewrite() -> None:
        # Same size, same bytes count, mtime put back: only the change time tells.
        with open(target, "r+b") as handle:
            handle.seek(data_offset(target) + 64)
            handle.write(b"\x00" * 256)
        os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    reporter = OnFirstAdvance(rewrite)
    with pytest.raises(CheckpointError) as caught:
        run(recipe(tmp_path, models), tmp_path, reporter=reporter)
    diag = caught.value.diagnostics[0]
    assert diag.code == "input-changed"
    assert diag.path == str(target)
    assert diag.message.startswith("input changed during the run (ctime_ns ")
    assert diag.message.endswith("); no output was written")
    assert reporter.finished == [False]
    assert files_under(tmp_path / "out") == []
    assert partial_files(tmp_path) == []


def test_an_input_truncated_during_the_run_is_a_clean_error_not_sigbus(
    tmp_path: Path, models: Path
) -> None:
    target = models / "b.safetensors"

    def truncate() -> None:
        os.truncate(target, data_offset(target) + 16)

    with pytest.raises(CheckpointError) as caught:
        run(recipe(tmp_path, models), tmp_path, reporter=OnFirstAdvance(truncate))
    diag = caught.value.diagnostics[0]
    assert diag.code == "input-changed"
    assert diag.path == str(target)
    assert "was it truncated after it was opened?" in diag.message or (
        diag.message.startswith("input changed during the run (size ")
    )
    assert files_under(tmp_path / "out") == []
    assert partial_files(tmp_path) == []


def test_an_input_replaced_by_name_during_the_run_is_not_mixed_in(
    tmp_path: Path, models: Path
) -> None:
    """``mv new old`` while the run reads (a download finishing): the run reads the file it
    opened to the end, and the output records that file's hash, never the new one's."""
    target = models / "b.safetensors"
    old = load(target)
    old_sha = sha256(target)

    def replace() -> None:
        shutil.copy2(models / "c.safetensors", models / "new.safetensors")
        os.replace(models / "new.safetensors", target)

    run(recipe(tmp_path, models), tmp_path, reporter=OnFirstAdvance(replace))
    out = tmp_path / "out" / "ab.safetensors"
    expected = expected_output(
        "sd1", [load(models / "a.safetensors"), old], weighted_sum(uniform("sd1", 0.25)), "fp16"
    )
    assert_same_tensors(load(out), expected)
    recorded = json.loads(read_header(out).metadata["mergelang.inputs"])
    assert [entry["sha256"] for entry in recorded] == [sha256(models / "a.safetensors"), old_sha]


def test_an_input_whose_mode_changed_during_the_run_fails_it(tmp_path: Path, models: Path) -> None:
    """A change time moved without a link change cannot be told from an in-place edit whose
    modification time was put back: the run fails rather than guess."""
    target = models / "b.safetensors"
    with pytest.raises(CheckpointError) as caught:
        run(
            recipe(tmp_path, models), tmp_path, reporter=OnFirstAdvance(lambda: target.chmod(0o600))
        )
    assert caught.value.diagnostics[0].code == "input-changed"
    assert files_under(tmp_path / "out") == []


def test_the_hash_cache_sees_an_edit_that_keeps_size_and_mtime(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(b"a" * 4096)
    cache = tmp_path / "cache"
    first = file_hashes(path, cache_dir=cache)
    stat = path.stat()
    with open(path, "r+b") as handle:  # what ``rsync --inplace -t`` does
        handle.write(b"b")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns
    assert known_hashes(path, cache_dir=cache) is None
    second = file_hashes(path, cache_dir=cache)
    assert second.sha256 != first.sha256
    assert second.sha256 == sha256(path)
    entry = json.loads((cache / CACHE_FILE).read_text())["files"][os.path.realpath(path)]
    now = FileIdentity.of(path.stat())
    assert {k: entry[k] for k in now.fields()} == now.fields()
    assert set(now.fields()) == {"device", "inode", "size", "mtime_ns", "ctime_ns"}


def test_a_hash_cache_of_the_first_format_is_not_trusted(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(b"a" * 4096)
    cache = tmp_path / "cache"
    cache.mkdir()
    st = path.stat()
    entry = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}
    entry |= {"sha256": "0" * 64, "legacy": "0" * 8}
    document = {"format": 1, "files": {os.path.realpath(path): entry}}
    (cache / CACHE_FILE).write_text(json.dumps(document))
    assert known_hashes(path, cache_dir=cache) is None
    assert file_hashes(path, cache_dir=cache).sha256 == sha256(path)


# ---- the cache's objects verified --------------------------------------------------------------


def cached_recipe(tmp_path: Path, models: Path) -> Path:
    return write_recipe(
        tmp_path,
        declare(models, "a", "b")
        + "cache ab = weighted_sum(a, b, alpha=0.3)\n"
        + 'save ab to "out/ab.safetensors" as fp16\n',
    )


def only_object(folder: Path) -> Path:
    (name,) = files_under(folder / "cache" / "objects")
    return folder / "cache" / "objects" / name


def test_a_cached_object_records_the_sha256_of_its_data(tmp_path: Path, models: Path) -> None:
    run(cached_recipe(tmp_path, models), tmp_path)
    stored = only_object(tmp_path)
    header = read_header(stored)
    data = stored.read_bytes()[header.data_offset :]
    assert header.metadata[DATA_DIGEST] == hashlib.sha256(data).hexdigest()
    assert CACHE_VERSION == 2


def test_a_cached_object_whose_data_changed_is_recomputed_with_a_warning(
    tmp_path: Path, models: Path
) -> None:
    path = cached_recipe(tmp_path, models)
    run(path, tmp_path)
    out = tmp_path / "out" / "ab.safetensors"
    fresh = load(out)
    stored = only_object(tmp_path)
    offset = read_header(stored).data_offset
    with open(stored, "r+b") as handle:  # flip bits in the middle of the data
        handle.seek(offset + (stored.stat().st_size - offset) // 2)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0xFF]))
    out.unlink()
    result = run(path, tmp_path)
    assert result.cache_hits == ()
    assert result.cache_stores == ("ab",)
    (warning,) = [w for w in result.warnings if w.code == "cache-corrupt"]
    assert warning.severity == "warning"
    assert warning.path == str(stored)
    assert warning.message == (
        "the cached value of ab failed its check (its data does not match the digest stored "
        "with it, or it has none); it is computed again and stored anew"
    )
    assert_same_tensors(load(out), fresh)
    header = read_header(stored)
    data = stored.read_bytes()[header.data_offset :]
    assert header.metadata[DATA_DIGEST] == hashlib.sha256(data).hexdigest()
    out.unlink()
    again = run(path, tmp_path)
    assert again.cache_hits == ("ab",)
    assert [w for w in again.warnings if w.code == "cache-corrupt"] == []
    assert_same_tensors(load(out), fresh)


# ---- hashing inside the streaming pass -------------------------------------------------------


class Totals:
    def __init__(self) -> None:
        self.phases: list[tuple[str, int, str]] = []
        self.done: list[int] = []

    def phase(self, name: str, total: int, detail: str = "") -> None:
        self.phases.append((name, total, detail))
        self.done.append(0)

    def advance(self, done: int, detail: str = "") -> None:
        self.done[-1] += done

    def note(self, text: str) -> None:
        return None

    def finish(self, ok: bool) -> None:
        return None


def test_a_first_run_hashes_its_inputs_during_the_merge_and_writes_what_a_warm_run_writes(
    tmp_path: Path, models: Path
) -> None:
    path = recipe(tmp_path, models)
    inputs = [models / "a.safetensors", models / "b.safetensors"]
    first_plan = api.plan(path, cache_dir=tmp_path / "cache")
    assert first_plan.hashes == {}
    first_plan.close()
    reporter = Totals()
    result = run(path, tmp_path, reporter=reporter)
    out = tmp_path / "out" / "ab.safetensors"
    ((name, total, detail),) = reporter.phases
    merged = result.outputs[0].nbytes
    assert (name, detail) == ("merging", "1 outputs, hashing 2 new inputs")
    assert total == merged + sum(p.stat().st_size for p in inputs)
    assert reporter.done == [total]
    # The hashes were computed (and cached) during the run, and the header holds them.
    recorded = json.loads(read_header(out).metadata["mergelang.inputs"])
    assert [entry["sha256"] for entry in recorded] == [sha256(p) for p in inputs]
    for p in inputs:
        cached = known_hashes(p, cache_dir=tmp_path / "cache")
        assert cached is not None and cached.sha256 == sha256(p)
    first = out.read_bytes()
    # A run with the hashes warm hashes before planning ends: the same bytes, up to date.
    again = run(path, tmp_path)
    assert [o.status for o in again.outputs] == ["up-to-date"]
    out.unlink()
    warm = Totals()
    run(path, tmp_path, reporter=warm)
    assert warm.phases == [("merging", merged, "1 outputs")]
    assert out.read_bytes() == first


def test_a_run_with_a_cached_step_on_new_inputs_hashes_them_first(
    tmp_path: Path, models: Path
) -> None:
    """A cache address must never name a hash that was not computed: such a run hashes its
    new inputs before the merge, as before."""
    reporter = Totals()
    run(cached_recipe(tmp_path, models), tmp_path, reporter=reporter)
    # The hashing is a phase of its own before the merge, with every byte of each input.
    (hashing, hashed, _), (_, total, detail) = reporter.phases
    assert hashing == "hashing"
    assert hashed == sum(p.stat().st_size for p in models.glob("[ab].safetensors"))
    assert detail == "2 outputs"
    assert reporter.done == [hashed, total]


def test_a_copy_of_an_input_under_another_name_is_hashed_before_the_merge(
    tmp_path: Path, models: Path
) -> None:
    """Two inputs of the same content share their hash, and records keyed by hash merge: the
    cheap samples find the copy, and the run hashes first (the stand-ins would differ)."""
    shutil.copy2(models / "a.safetensors", models / "b.safetensors")
    reporter = Totals()
    result = run(recipe(tmp_path, models), tmp_path, reporter=reporter)
    (hashing, _, _), (_, total, detail) = reporter.phases
    assert hashing == "hashing"
    assert detail == "1 outputs"
    assert total == result.outputs[0].nbytes
    header = read_header(tmp_path / "out" / "ab.safetensors")
    assert list(json.loads(header.metadata["sd_merge_models"])) == [
        sha256(models / "b.safetensors")
    ]


def test_plan_says_when_and_how_much_a_run_hashes(tmp_path: Path, models: Path) -> None:
    plan = api.plan(recipe(tmp_path, models), cache_dir=tmp_path / "cache")
    try:
        text = render_plan(plan)
    finally:
        plan.close()
    size = sum((models / f"{n}.safetensors").stat().st_size for n in ("a", "b"))
    assert text.endswith(f"the run hashes 2 inputs ({human_bytes(size)}) while the merge streams\n")
    plan = api.plan(cached_recipe(tmp_path, models), cache_dir=tmp_path / "cache")
    try:
        text = render_plan(plan)
    finally:
        plan.close()
    assert text.endswith(
        f"the run hashes 2 inputs ({human_bytes(size)}) before the merge (a cached step or an "
        "existing output needs their hashes)\n"
    )
