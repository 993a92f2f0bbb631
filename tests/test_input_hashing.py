"""Hashing spread over threads: a file hashed block by block, the work moving between
threads, gives the hashes of a single pass; the hashing thread runs at the lowest priority
without lowering the rest of the process."""

from __future__ import annotations

import hashlib
import os
import sys
import threading
from pathlib import Path

import pytest

from mergelang.io.hashing import BLOCK_SIZE, CachedHasher, FileHasher, known_hashes
from mergelang.run.input_hashing import LOWEST_PRIORITY, lower_this_threads_priority


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


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="threads' own nice is Linux's")
def test_the_hashing_thread_alone_runs_at_the_lowest_priority() -> None:
    seen: list[int] = []

    def body() -> None:
        lower_this_threads_priority()
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    worker = threading.Thread(target=body)
    worker.start()
    worker.join()
    assert seen == [LOWEST_PRIORITY]
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before
