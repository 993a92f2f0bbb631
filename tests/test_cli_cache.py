"""``mergelang cache info|verify|clean`` on a real cache made by real runs."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from run_helpers import declare, files_under, run_cli, shared_models, write_recipe

from mergelang.cli.cache import parse_size

RECIPE = """\
cache one = weighted_sum(a, b, alpha=0.25)
cache two = weighted_sum(a, b, alpha=0.5)
cache three = weighted_sum(a, b, alpha=0.75)
save one to "out/one.safetensors"
save two to "out/two.safetensors"
save three to "out/three.safetensors"
"""

DAY = 86400


@pytest.fixture
def cache(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache holding three objects stored by a run."""
    models = shared_models(tmp_path_factory, ("a", "b"))
    write_recipe(tmp_path, declare(models, "a", "b") + RECIPE)
    status, _, err = run_cli(tmp_path, "run", "recipe.merge")
    assert status == 0, err
    return tmp_path / "cache"


def cache_cli(*argv: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MERGELANG_CACHE"}
    done = subprocess.run(
        [sys.executable, "-m", "mergelang", "cache", *argv],
        capture_output=True,
        text=True,
        env={**env, "NO_COLOR": "1", "COLUMNS": "200"},
        check=False,
    )
    return done.returncode, done.stdout, done.stderr


def object_files(cache: Path) -> list[Path]:
    return sorted(cache.glob("objects/*/*.safetensors"))


def test_info_counts_objects_and_sizes(cache: Path) -> None:
    objects = object_files(cache)
    assert len(objects) == 3
    sizes = sum(p.stat().st_size for p in objects)
    total = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())
    status, out, err = cache_cli("info", "--cache-dir", str(cache))
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0] == f"folder: {cache}"
    assert lines[2].startswith("objects: 3 (")
    assert lines[3] == "partial files: 0 (0 bytes)"
    assert lines[4].startswith("oldest last use: ") and lines[5].startswith("newest last use: ")
    assert str(round(total / 1e6, 2)) in lines[1] or f"{total} bytes" in lines[1], (total, out)
    assert sizes <= total


def test_verify_finds_a_flipped_bit_and_deletes_it_on_request(cache: Path) -> None:
    objects = object_files(cache)
    assert cache_cli("verify", "--cache-dir", str(cache))[:2] == (0, "3 objects checked, 0 bad\n")
    damaged = objects[1]
    data = bytearray(damaged.read_bytes())
    data[-3] ^= 0x01  # a bit of the data section, after the header
    damaged.write_bytes(bytes(data))
    status, out, _ = cache_cli("verify", "--cache-dir", str(cache))
    assert status == 1
    assert out.splitlines() == [
        f"{damaged}: bad: its data does not match the digest stored with it",
        "3 objects checked, 1 bad",
    ]
    assert damaged.exists()
    status, out, _ = cache_cli("verify", "--cache-dir", str(cache), "--delete")
    assert status == 0
    assert out.splitlines()[0].endswith("(removed)")
    assert object_files(cache) == [p for p in objects if p != damaged]


def test_clean_by_age_by_size_least_recently_used_first_and_all(cache: Path) -> None:
    objects = object_files(cache)
    size = {p: p.stat().st_size for p in objects}
    now = objects[0].stat().st_mtime
    # Last used 30, 20 and 10 days ago.
    ages = dict(zip(objects, (30, 20, 10), strict=True))
    for path, days in ages.items():
        os.utime(path, (now - days * DAY, now - days * DAY))
    # A partial file left by a killed run, no lock beside it: swept by clean.
    stale = objects[0].parent / f".{objects[0].name}.mergelang-partial-999999-0123abcd"
    stale.write_bytes(b"left over")

    status, out, _ = cache_cli("clean", "--cache-dir", str(cache), "--older-than", "25")
    assert status == 0
    assert out.startswith("removed 1 objects (") and out.endswith(" and 1 partial files\n")
    assert object_files(cache) == objects[1:]
    assert not stale.exists()

    # To fit the newest one only: the least recently used goes first.
    limit = str(size[objects[2]] + size[objects[1]] // 2)
    assert cache_cli("clean", "--cache-dir", str(cache), "--max-size", limit)[0] == 0
    assert object_files(cache) == [objects[2]]

    assert cache_cli("clean", "--cache-dir", str(cache), "--all")[0] == 0
    assert object_files(cache) == []
    assert [n for n in files_under(cache) if n.startswith("objects/")] == []


def test_clean_needs_a_rule_and_sizes_parse() -> None:
    status, _, err = cache_cli("clean", "--cache-dir", "/nonexistent")
    assert status == 2 and "--older-than DAYS, --max-size SIZE or --all" in err
    assert parse_size("500M") == 500 * 10**6
    assert parse_size("1.5GiB") == int(1.5 * 2**30)
    assert parse_size("1000") == 1000


def test_a_file_hashed_for_the_digest_matches_an_independent_sha256(cache: Path) -> None:
    # verify's notion of "intact" is the sha256 of everything after the header.
    path = object_files(cache)[0]
    raw = path.read_bytes()
    header_length = int.from_bytes(raw[:8], "little")
    digest = hashlib.sha256(raw[8 + header_length :]).hexdigest()
    assert f'"mergelang.data_sha256":"{digest}"'.encode() in raw[: 8 + header_length]
