"""Model hashes against hashlib, and the hash cache."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from mergelang.errors import CheckpointError
from mergelang.io import hashing
from mergelang.io.hashing import (
    CACHE_FILE,
    FileHashes,
    compute_hashes,
    default_cache_dir,
    file_hashes,
)


def pattern(size: int) -> bytes:
    """Deterministic, non-repeating bytes (so that offsets matter)."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(counter.to_bytes(8, "little")).digest()
        counter += 1
    return bytes(out[:size])


def expected(data: bytes) -> FileHashes:
    full = hashlib.sha256(data).hexdigest()
    legacy = hashlib.sha256(data[0x100000 : 0x100000 + 0x10000]).hexdigest()
    return FileHashes(full, full[:10], legacy[:8], len(data))


SIZES = [0, 1000, 0x100000, 0x100000 + 100, 0x110000, 0x110000 + 4321]


@pytest.mark.parametrize("size", SIZES)
def test_hashes_match_hashlib(tmp_path: Path, size: int) -> None:
    data = pattern(size)
    path = tmp_path / "model.safetensors"
    path.write_bytes(data)
    assert compute_hashes(path) == expected(data)


def test_small_file_legacy_hash_is_of_what_is_there(tmp_path: Path) -> None:
    path = tmp_path / "tiny.bin"
    path.write_bytes(b"abc")
    empty_sha = hashlib.sha256(b"").hexdigest()
    assert compute_hashes(path).legacy == empty_sha[:8]


@pytest.mark.parametrize("block", [4096, 65537, 0x100000 - 7])
def test_block_boundaries_inside_the_legacy_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int
) -> None:
    monkeypatch.setattr(hashing, "BLOCK_SIZE", block)
    data = pattern(0x110000 + 999)
    path = tmp_path / "m.ckpt"
    path.write_bytes(data)
    assert compute_hashes(path) == expected(data)


def test_known_sha256_prefixes(tmp_path: Path) -> None:
    path = tmp_path / "hello.safetensors"
    path.write_bytes(b"hello world")
    hashes = compute_hashes(path)
    assert hashes.sha256 == "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
    assert hashes.autov2 == "b94d27b993"
    assert hashes.size == 11


def test_cache_is_used_until_the_file_changes(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    path = tmp_path / "m.safetensors"
    data = pattern(5000)
    path.write_bytes(data)
    first = file_hashes(path, cache_dir=cache)
    assert first == expected(data)
    document = json.loads((cache / CACHE_FILE).read_text())
    entry = document["files"][os.path.realpath(path)]
    assert entry["sha256"] == first.sha256 and entry["size"] == 5000

    # Prove the second call answers from the cache: doctor the cached digest.
    fake = "f" * 64
    entry["sha256"] = fake
    (cache / CACHE_FILE).write_text(json.dumps(document))
    second = file_hashes(path, cache_dir=cache)
    assert second.sha256 == fake and second.autov2 == "f" * 10

    # A changed modification time invalidates the entry: the real hash comes back.
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert file_hashes(path, cache_dir=cache) == first
    refreshed = json.loads((cache / CACHE_FILE).read_text())["files"][os.path.realpath(path)]
    assert refreshed["sha256"] == first.sha256


def test_changed_content_is_rehashed(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    path = tmp_path / "m.safetensors"
    path.write_bytes(b"one")
    file_hashes(path, cache_dir=cache)
    path.write_bytes(b"three")
    assert file_hashes(path, cache_dir=cache) == expected(b"three")


def test_corrupt_cache_is_ignored_and_rewritten(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / CACHE_FILE).write_text("{not json")
    path = tmp_path / "m.safetensors"
    path.write_bytes(b"data")
    assert file_hashes(path, cache_dir=cache) == expected(b"data")
    document = json.loads((cache / CACHE_FILE).read_text())
    assert document["format"] == 2
    assert os.path.realpath(path) in document["files"]
    assert sorted(p.name for p in cache.iterdir()) == [CACHE_FILE]


def test_cache_keeps_other_files_entries(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    one, two = tmp_path / "one.ckpt", tmp_path / "two.ckpt"
    one.write_bytes(b"1")
    two.write_bytes(b"2")
    file_hashes(one, cache_dir=cache)
    file_hashes(two, cache_dir=cache)
    files = json.loads((cache / CACHE_FILE).read_text())["files"]
    assert set(files) == {os.path.realpath(one), os.path.realpath(two)}


def test_without_cache_nothing_is_written(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    path = tmp_path / "m.safetensors"
    path.write_bytes(b"x")
    assert file_hashes(path, cache_dir=cache, use_cache=False) == expected(b"x")
    assert not cache.exists()


def test_unwritable_cache_does_not_fail_the_hash(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    path = tmp_path / "m.safetensors"
    path.write_bytes(b"x")
    assert file_hashes(path, cache_dir=blocker / "cache") == expected(b"x")


def test_missing_file_is_a_checkpoint_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError) as caught:
        file_hashes(tmp_path / "absent.safetensors", cache_dir=tmp_path / "cache")
    assert caught.value.diagnostics[0].code == "not-found"


def test_default_cache_dir_precedence(tmp_path: Path) -> None:
    assert default_cache_dir({"MERGELANG_CACHE": str(tmp_path / "a")}) == tmp_path / "a"
    assert default_cache_dir({"XDG_CACHE_HOME": str(tmp_path / "xdg"), "MERGELANG_CACHE": ""}) == (
        tmp_path / "xdg" / "mergelang"
    )
    assert default_cache_dir({}) == Path.home() / ".cache" / "mergelang"


def test_default_cache_dir_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MERGELANG_CACHE", str(tmp_path / "envcache"))
    path = tmp_path / "m.safetensors"
    path.write_bytes(b"y")
    file_hashes(path)
    assert (tmp_path / "envcache" / CACHE_FILE).exists()
