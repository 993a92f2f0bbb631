"""The header-first streaming writer and the atomic-output policy."""

from __future__ import annotations

import gc
import os
import re
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mergelang.errors import OutputError
from mergelang.io.safetensors_header import read_safetensors_header
from mergelang.io.writer import OutputEntry, SafetensorsWriter, build_header

PROJECT = Path(__file__).resolve().parents[1]


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def small_file(path: Path, value: float = 1.0) -> Path:
    with SafetensorsWriter(path, [OutputEntry("w", "F32", (4,))]) as writer:
        writer.write("w", torch.full((4,), value))
    return path


def output_error(excinfo: pytest.ExceptionInfo[OutputError]) -> tuple[str, str, str | None]:
    diag = excinfo.value.diagnostics[0]
    return diag.code, diag.message, diag.hint


ENTRIES = [
    OutputEntry("w", "F16", (2, 3)),
    OutputEntry("i", "I64", (2,)),
    OutputEntry("b", "BOOL", (3,)),
]


def test_header_layout_is_exact_and_deterministic(tmp_path: Path) -> None:
    expected = (
        b'{"__metadata__":{"a":"2","z":"1"},'
        b'"w":{"dtype":"F16","shape":[2,3],"data_offsets":[16,28]},'
        b'"i":{"dtype":"I64","shape":[2],"data_offsets":[0,16]},'
        b'"b":{"dtype":"BOOL","shape":[3],"data_offsets":[28,31]}}'
    )
    expected += b" " * (-len(expected) % 8)
    header, offsets = build_header(ENTRIES, {"z": "1", "a": "2"})
    assert header == expected
    assert offsets == {"w": (16, 28), "i": (0, 16), "b": (28, 31)}

    first = SafetensorsWriter(tmp_path / "one.safetensors", ENTRIES, metadata={"z": "1", "a": "2"})
    second = SafetensorsWriter(tmp_path / "two.safetensors", ENTRIES, metadata={"a": "2", "z": "1"})
    assert first.header_bytes == second.header_bytes == struct.pack("<Q", len(expected)) + expected
    assert first.data_offset % 8 == 0
    first.abort()
    second.abort()
    assert files_in(tmp_path) == []


def test_header_without_metadata_has_no_metadata_entry() -> None:
    header, _ = build_header([OutputEntry("x", "U8", (1,))])
    assert header.rstrip() == b'{"x":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}'
    assert len(header) % 8 == 0


def test_every_tensor_is_aligned_to_its_item_size(tmp_path: Path) -> None:
    entries = [
        OutputEntry("u8", "U8", (3,)),
        OutputEntry("f16", "F16", (5,)),
        OutputEntry("f64", "F64", (1,)),
        OutputEntry("i32", "I32", (3,)),
    ]
    sizes = {"U8": 1, "F16": 2, "F64": 8, "I32": 4}
    path = tmp_path / "aligned.safetensors"
    with SafetensorsWriter(path, entries) as writer:
        for entry in entries:
            writer.write(entry.key, torch.zeros(entry.shape, dtype=_dtype(entry.dtype)))
    header = read_safetensors_header(path)
    assert list(header.tensors) == ["u8", "f16", "f64", "i32"]
    for key, info in header.tensors.items():
        assert (header.data_offset + info.start) % sizes[info.dtype] == 0, key


def _dtype(code: str) -> torch.dtype:
    return {
        "U8": torch.uint8,
        "F16": torch.float16,
        "F64": torch.float64,
        "I32": torch.int32,
        "F32": torch.float32,
    }[code]


def test_keys_in_any_order_and_in_parts(tmp_path: Path) -> None:
    values = torch.arange(10, dtype=torch.float32) * 1.5
    other = torch.arange(6, dtype=torch.int64).reshape(2, 3)
    path = tmp_path / "parts.safetensors"
    entries = [OutputEntry("first", "F32", (2, 5)), OutputEntry("second", "I64", (2, 3))]
    with SafetensorsWriter(path, entries) as writer:
        writer.write("second", other)
        writer.write_part("first", 7, values[7:])
        writer.write_part("first", 0, values[:3].reshape(3, 1))
        writer.write_part("first", 3, values[3:7])
    loaded = load_file(path)
    assert torch.equal(loaded["first"], values.reshape(2, 5))
    assert torch.equal(loaded["second"], other)


def test_non_contiguous_tensor_is_written_in_logical_order(tmp_path: Path) -> None:
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    path = tmp_path / "t.safetensors"
    with SafetensorsWriter(path, [OutputEntry("t", "F32", (4, 3))]) as writer:
        writer.write("t", base.t())
    assert torch.equal(load_file(path)["t"], base.t().contiguous())


def test_empty_tensors_need_no_write(tmp_path: Path) -> None:
    path = tmp_path / "e.safetensors"
    entries = [OutputEntry("empty", "F16", (0, 4)), OutputEntry("one", "F32", ())]
    with SafetensorsWriter(path, entries) as writer:
        writer.write("one", torch.tensor(2.5))
    loaded = load_file(path)
    assert loaded["empty"].shape == (0, 4)
    assert loaded["one"].item() == 2.5


def test_concurrent_parts_from_threads(tmp_path: Path) -> None:
    values = torch.randn(4000, generator=torch.Generator().manual_seed(3))
    path = tmp_path / "threads.safetensors"
    with SafetensorsWriter(path, [OutputEntry("v", "F32", (4000,))]) as writer:

        def work(part: int) -> None:
            writer.write_part("v", part * 1000, values[part * 1000 : (part + 1) * 1000])

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert torch.equal(load_file(path)["v"], values)


def test_partial_file_is_named_recognisably_and_replaced_on_commit(tmp_path: Path) -> None:
    target = tmp_path / "out.safetensors"
    writer = SafetensorsWriter(target, [OutputEntry("w", "F32", (2,))])
    lock, name = files_in(tmp_path)
    found = re.fullmatch(r"\.out\.safetensors\.mergelang-partial-(\d+)-([0-9a-f]{8})", name)
    assert found is not None and int(found.group(1)) == os.getpid()
    # The lock that says the writer is alive lies beside it, under the same token.
    assert lock == f".mergelang-partial-{found.group(1)}-{found.group(2)}.lock"
    assert not target.exists()
    writer.write("w", torch.ones(2))
    assert writer.commit() == target
    assert files_in(tmp_path) == ["out.safetensors"]
    assert target.stat().st_size == writer.total_size


def test_missing_parent_folders_are_created(tmp_path: Path) -> None:
    target = small_file(tmp_path / "a" / "b" / "c.safetensors")
    assert load_file(target)["w"].tolist() == [1.0] * 4


def test_exception_inside_with_leaves_no_file(tmp_path: Path) -> None:
    entries = [OutputEntry("a", "F32", (2,)), OutputEntry("b", "F32", (2,))]
    with (
        pytest.raises(RuntimeError, match="boom"),
        SafetensorsWriter(tmp_path / "x.safetensors", entries) as writer,
    ):
        writer.write("a", torch.ones(2))
        raise RuntimeError("boom")
    assert files_in(tmp_path) == []


def test_keyboard_interrupt_inside_with_leaves_no_file(tmp_path: Path) -> None:
    entries = [OutputEntry("a", "F32", (2,)), OutputEntry("b", "F32", (2,))]
    with (
        pytest.raises(KeyboardInterrupt),
        SafetensorsWriter(tmp_path / "x.safetensors", entries) as writer,
    ):
        writer.write("a", torch.ones(2))
        raise KeyboardInterrupt
    assert files_in(tmp_path) == []


def test_dropped_writer_removes_its_file(tmp_path: Path) -> None:
    writer = SafetensorsWriter(tmp_path / "x.safetensors", [OutputEntry("a", "F32", (2,))])
    assert len(files_in(tmp_path)) == 2  # the partial file and its lock
    del writer
    gc.collect()
    assert files_in(tmp_path) == []


def test_commit_refuses_an_incomplete_file(tmp_path: Path) -> None:
    entries = [OutputEntry("a", "F32", (4,)), OutputEntry("b", "F32", (2,))]
    writer = SafetensorsWriter(tmp_path / "x.safetensors", entries)
    writer.write_part("a", 0, torch.ones(3))
    assert writer.missing() == ["a", "b"]
    with pytest.raises(OutputError) as caught:
        writer.commit()
    code, message, _ = output_error(caught)
    assert code == "incomplete"
    assert "2 keys were not completely written (a, b)" in message
    assert files_in(tmp_path) == []


def test_incomplete_with_block_leaves_no_file(tmp_path: Path) -> None:
    with (
        pytest.raises(OutputError, match="not completely written"),
        SafetensorsWriter(tmp_path / "x.safetensors", [OutputEntry("a", "F32", (4,))]),
    ):
        pass
    assert files_in(tmp_path) == []


@pytest.mark.parametrize(
    ("action", "code", "fragment"),
    [
        (lambda w: w.write("a", torch.ones(4, dtype=torch.float16)), "wrong-dtype", "'a'"),
        (lambda w: w.write("a", torch.ones(2, 2)), "wrong-shape", "'a' is declared with shape"),
        (lambda w: w.write("zz", torch.ones(4)), "unknown-key", "'zz' is not a key"),
        (lambda w: w.write_part("a", 3, torch.ones(2)), "out-of-range", "elements 3..5"),
        (lambda w: w.write_part("a", -1, torch.ones(1)), "out-of-range", "key 'a'"),
    ],
)
def test_bad_writes_name_the_key(tmp_path: Path, action, code: str, fragment: str) -> None:  # type: ignore[no-untyped-def]
    writer = SafetensorsWriter(tmp_path / "x.safetensors", [OutputEntry("a", "F32", (4,))])
    with pytest.raises(OutputError) as caught:
        action(writer)
    assert caught.value.diagnostics[0].code == code
    assert fragment in caught.value.diagnostics[0].message
    writer.write("a", torch.ones(4))
    writer.commit()


def test_overlapping_writes_are_refused(tmp_path: Path) -> None:
    writer = SafetensorsWriter(tmp_path / "x.safetensors", [OutputEntry("a", "F32", (4,))])
    writer.write_part("a", 0, torch.ones(2))
    with pytest.raises(OutputError) as caught:
        writer.write_part("a", 1, torch.ones(2))
    assert caught.value.diagnostics[0].code == "duplicate-write"
    writer.abort()


def test_bad_entries_and_metadata_are_refused_before_creating_anything(tmp_path: Path) -> None:
    target = tmp_path / "x.safetensors"
    twice = [OutputEntry("a", "F32", (1,)), OutputEntry("a", "F32", (1,))]
    with pytest.raises(OutputError, match="names key 'a' twice"):
        SafetensorsWriter(target, twice)
    with pytest.raises(OutputError, match="unknown dtype 'F17'"):
        SafetensorsWriter(target, [OutputEntry("a", "F17", (1,))])
    with pytest.raises(OutputError, match="not a string"):
        SafetensorsWriter(target, [OutputEntry("a", "F32", (1,))], metadata={"n": 1})  # type: ignore[dict-item]
    assert files_in(tmp_path) == []


def test_commit_and_abort_lifecycle(tmp_path: Path) -> None:
    target = tmp_path / "x.safetensors"
    writer = SafetensorsWriter(target, [OutputEntry("a", "F32", (1,))])
    writer.write("a", torch.ones(1))
    writer.commit()
    assert writer.committed
    with pytest.raises(ValueError, match="already committed"):
        writer.commit()
    writer.abort()
    writer.abort()
    assert target.exists()


def test_existing_target_is_refused_unless_overwrite(tmp_path: Path) -> None:
    target = small_file(tmp_path / "x.safetensors", 1.0)
    before = target.read_bytes()
    with pytest.raises(OutputError) as caught:
        small_file(target, 2.0)
    code, message, hint = output_error(caught)
    assert (code, message) == ("exists", "the output file already exists")
    assert hint is not None and "--force" in hint
    assert target.read_bytes() == before
    assert files_in(tmp_path) == ["x.safetensors"]

    with SafetensorsWriter(target, [OutputEntry("w", "F32", (4,))], overwrite=True) as writer:
        writer.write("w", torch.full((4,), 2.0))
    assert load_file(target)["w"].tolist() == [2.0] * 4
    assert files_in(tmp_path) == ["x.safetensors"]


def test_target_appearing_during_the_write_is_not_replaced(tmp_path: Path) -> None:
    target = tmp_path / "x.safetensors"
    writer = SafetensorsWriter(target, [OutputEntry("w", "F32", (1,))])
    writer.write("w", torch.ones(1))
    target.write_bytes(b"someone else's")
    with pytest.raises(OutputError) as caught:
        writer.commit()
    assert caught.value.diagnostics[0].code == "exists"
    assert target.read_bytes() == b"someone else's"
    assert files_in(tmp_path) == ["x.safetensors"]


def _refused(target: Path, protected: Path) -> None:
    with pytest.raises(OutputError) as caught:
        SafetensorsWriter(
            target, [OutputEntry("w", "F32", (4,))], overwrite=True, protected=[protected]
        )
    assert caught.value.diagnostics[0].code == "overwrite-input"


def test_inputs_are_never_overwritten(tmp_path: Path) -> None:
    source = small_file(tmp_path / "in.safetensors", 7.0)
    before = source.read_bytes()
    _refused(source, source)

    link = tmp_path / "link.safetensors"
    link.symlink_to(source)
    _refused(link, source)
    _refused(source, link)

    hard = tmp_path / "hard.safetensors"
    os.link(source, hard)
    _refused(hard, source)

    alias = tmp_path / "alias"
    alias.symlink_to(tmp_path, target_is_directory=True)
    _refused(alias / "in.safetensors", source)

    assert source.read_bytes() == before
    names = ["alias", "hard.safetensors", "in.safetensors", "link.safetensors"]
    assert files_in(tmp_path) == names


def test_overwrite_replaces_a_symlink_instead_of_writing_through_it(tmp_path: Path) -> None:
    elsewhere = small_file(tmp_path / "elsewhere.safetensors", 3.0)
    link = tmp_path / "out.safetensors"
    link.symlink_to(elsewhere)
    with SafetensorsWriter(link, [OutputEntry("w", "F32", (4,))], overwrite=True) as writer:
        writer.write("w", torch.full((4,), 9.0))
    assert not link.is_symlink()
    assert load_file(link)["w"].tolist() == [9.0] * 4
    assert load_file(elsewhere)["w"].tolist() == [3.0] * 4


def test_a_folder_is_not_a_target(tmp_path: Path) -> None:
    (tmp_path / "d.safetensors").mkdir()
    with pytest.raises(OutputError) as caught:
        small_file(tmp_path / "d.safetensors")
    assert caught.value.diagnostics[0].code == "is-directory"


FILE_SIZE_LIMIT_SCRIPT = """
import os, resource, signal, sys
import torch
from mergelang.errors import OutputError
from mergelang.io.writer import OutputEntry, SafetensorsWriter

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
target, when = sys.argv[1], sys.argv[2]
_, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
entries = [OutputEntry("big", "F32", (65536,))]
if when == "before":
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
try:
    writer = SafetensorsWriter(target, entries)
    if when == "during":
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
    writer.write("big", torch.ones(65536))
    writer.commit()
    print("written")
except OutputError as exc:
    print(exc.diagnostics[0].code)
    print(exc.diagnostics[0].message)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_FSIZE behaviour checked on Linux")
@pytest.mark.parametrize("when", ["before", "during"])
def test_file_size_limit_gives_a_clean_error_and_no_file(tmp_path: Path, when: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", FILE_SIZE_LIMIT_SCRIPT, str(out / "x.safetensors"), when],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=PROJECT,
    )
    assert result.returncode == 0, result.stderr
    code, message = result.stdout.strip().splitlines()
    assert code == "disk-full"
    assert "file size limit" in message and "partial file was removed" in message
    assert files_in(out) == []
