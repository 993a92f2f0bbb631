"""The safetensors header parser: valid headers, and one error code per kind of corruption."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import pytest

from mergelang.errors import CheckpointError
from mergelang.io.safetensors_header import TensorInfo, read_safetensors_header


def raw_file(path: Path, header: Any, data: bytes = b"", *, pad: bool = True) -> Path:
    """Write a safetensors file by hand: ``header`` is a JSON-able object or raw bytes."""
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    if pad:
        text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


def entry(dtype: str, shape: list[int], start: int, end: int) -> dict[str, Any]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [start, end]}


def error_of(path: Path) -> CheckpointError:
    with pytest.raises(CheckpointError) as caught:
        read_safetensors_header(path)
    return caught.value


def test_valid_header_keeps_file_order_and_metadata(tmp_path: Path) -> None:
    header = {
        "zeta": entry("F16", [2, 3], 0, 12),
        "__metadata__": {"format": "pt", "note": "é"},
        "alpha": entry("I64", [1], 12, 20),
        "scalar": entry("F32", [], 20, 24),
        "empty": entry("BF16", [0, 5], 24, 24),
    }
    path = raw_file(tmp_path / "m.safetensors", header, bytes(24))
    parsed = read_safetensors_header(path)
    assert list(parsed.tensors) == ["zeta", "alpha", "scalar", "empty"]
    assert parsed.tensors["zeta"] == TensorInfo("F16", (2, 3), 0, 12)
    assert parsed.tensors["scalar"].numel == 1
    assert parsed.tensors["empty"].nbytes == 0
    assert parsed.metadata == {"format": "pt", "note": "é"}
    header_len = struct.unpack("<Q", path.read_bytes()[:8])[0]
    assert parsed.data_offset == 8 + header_len
    assert parsed.file_size == path.stat().st_size
    assert parsed.data_size == 24
    assert parsed.shapes() == {"zeta": (2, 3), "alpha": (1,), "scalar": (), "empty": (0, 5)}


def test_tensors_may_tile_the_data_in_any_order(tmp_path: Path) -> None:
    header = {
        "b": entry("U8", [3], 2, 5),
        "a": entry("U8", [2], 0, 2),
        "e": entry("F32", [0], 5, 5),
    }
    parsed = read_safetensors_header(raw_file(tmp_path / "t.safetensors", header, bytes(5)))
    assert parsed.tensors["b"].start == 2


@pytest.mark.parametrize(
    ("header", "size", "fragment", "key"),
    [
        (
            {"a": entry("U8", [2], 0, 2), "b": entry("U8", [2], 6, 8)},
            8,
            "the 4 bytes before the tensor's data (from byte 2 of the data section)",
            "b",
        ),
        ({"a": entry("U8", [2], 2, 4)}, 4, "the 2 bytes before the tensor's data", "a"),
        (
            {"a": entry("U8", [2], 0, 2)},
            7,
            "the last 5 bytes of the file belong to no tensor",
            None,
        ),
        ({}, 3, "the last 3 bytes of the file belong to no tensor", None),
    ],
    ids=["hole", "hole-at-start", "after-the-last", "no-tensors"],
)
def test_bytes_of_no_tensor_are_refused(
    tmp_path: Path, header: Any, size: int, fragment: str, key: str | None
) -> None:
    path = raw_file(tmp_path / "g.safetensors", header, bytes(size))
    (diag,) = error_of(path).diagnostics
    assert diag.code == "data-gap"
    assert fragment in diag.message
    assert diag.key == key


def test_trailing_nul_padding_is_accepted(tmp_path: Path) -> None:
    text = json.dumps({"a": entry("U8", [1], 0, 1)}).encode()
    text += b"\x00" * (-len(text) % 8 or 8)
    parsed = read_safetensors_header(raw_file(tmp_path / "n.safetensors", text, b"x", pad=False))
    assert parsed.tensors["a"].shape == (1,)


GOOD = entry("F32", [2], 0, 8)

CORRUPTIONS: list[tuple[str, Any, bytes, str, str | None]] = [
    # (code, header, data, message fragment, key named)
    ("header-not-utf8", b'{"a\xff": 1}', b"", "not valid UTF-8", None),
    ("header-not-json", b'{"a": ', b"", "not valid JSON", None),
    ("header-not-object", [1, 2], b"", "JSON array, not an object", None),
    ("duplicate-key", b'{"a": {}, "a": {}}', b"", "names 'a' twice", "a"),
    ("metadata-not-object", {"__metadata__": ["x"]}, b"", "__metadata__ is JSON array", None),
    ("metadata-not-string", {"__metadata__": {"n": 3}}, b"", "value 'n' is JSON number", None),
    ("entry-not-object", {"w": 5}, b"", "entry is JSON number", "w"),
    ("entry-missing-field", {"w": {"dtype": "F32", "shape": [2]}}, bytes(8), "data_offsets", "w"),
    ("unknown-dtype", {"w": entry("F12", [2], 0, 8)}, bytes(8), "unknown dtype 'F12'", "w"),
    ("bad-shape", {"w": {**GOOD, "shape": ["2"]}}, bytes(8), "not a list of integers", "w"),
    ("bad-shape", {"w": entry("F32", [True], 0, 4)}, bytes(8), "not a list of integers", "w"),
    ("negative-dimension", {"w": entry("F32", [-2], 0, 8)}, bytes(8), "negative", "w"),
    ("bad-offsets", {"w": entry("F32", [2], 8, 0)}, bytes(8), "data_offsets [8, 0]", "w"),
    ("bad-offsets", {"w": {**GOOD, "data_offsets": [0]}}, bytes(8), "data_offsets [0]", "w"),
    ("size-mismatch", {"w": entry("F32", [3], 0, 8)}, bytes(12), "needs 12", "w"),
    ("out-of-bounds", {"w": GOOD}, bytes(6), "holds only 6 bytes", "w"),
    (
        "overlapping-offsets",
        {"a": entry("F32", [2], 0, 8), "b": entry("F32", [2], 4, 12)},
        bytes(12),
        "overlap those of 'a'",
        "b",
    ),
]


@pytest.mark.parametrize(
    ("code", "header", "data", "fragment", "key"),
    CORRUPTIONS,
    ids=[f"{c[0]}-{i}" for i, c in enumerate(CORRUPTIONS)],
)
def test_each_corruption_has_its_own_code(
    tmp_path: Path, code: str, header: Any, data: bytes, fragment: str, key: str | None
) -> None:
    path = raw_file(tmp_path / "bad.safetensors", header, data)
    error = error_of(path)
    (diag,) = error.diagnostics
    assert diag.code == code
    assert fragment in diag.message
    assert diag.path == str(path)
    assert diag.key == key


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.safetensors"
    path.write_bytes(b"")
    assert error_of(path).diagnostics[0].code == "empty-file"


def test_shorter_than_length_field(tmp_path: Path) -> None:
    path = tmp_path / "short.safetensors"
    path.write_bytes(b"\x01\x02\x03")
    error = error_of(path)
    assert error.diagnostics[0].code == "truncated-header"
    assert "3 bytes long" in error.diagnostics[0].message


def test_absurd_header_length(tmp_path: Path) -> None:
    path = tmp_path / "huge.safetensors"
    path.write_bytes(struct.pack("<Q", 200_000_000) + b"{}")
    error = error_of(path)
    assert error.diagnostics[0].code == "header-too-large"


def test_header_longer_than_file(tmp_path: Path) -> None:
    path = tmp_path / "cut.safetensors"
    path.write_bytes(struct.pack("<Q", 1000) + b'{"a": 1}')
    error = error_of(path)
    assert error.diagnostics[0].code == "header-out-of-bounds"
    assert "1000 bytes but only 8 bytes follow" in error.diagnostics[0].message


def test_truncated_data_is_caught_from_the_header(tmp_path: Path) -> None:
    header = {"a": entry("F32", [4], 0, 16), "b": entry("F32", [4], 16, 32)}
    path = raw_file(tmp_path / "t.safetensors", header, bytes(32))
    with path.open("r+b") as handle:
        handle.truncate(path.stat().st_size - 1)
    error = error_of(path)
    assert error.diagnostics[0].code == "out-of-bounds"
    assert error.diagnostics[0].key == "b"
    assert "truncated" in error.diagnostics[0].message


def test_missing_file(tmp_path: Path) -> None:
    assert error_of(tmp_path / "nope.safetensors").diagnostics[0].code == "not-found"


def test_directory(tmp_path: Path) -> None:
    folder = tmp_path / "dir.safetensors"
    folder.mkdir()
    assert error_of(folder).diagnostics[0].code == "is-directory"


def test_device_is_refused() -> None:
    if not Path("/dev/null").exists():
        pytest.skip("no /dev/null")
    assert error_of(Path("/dev/null")).diagnostics[0].code == "not-a-file"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    assert error_of(fifo).diagnostics[0].code == "not-a-file"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(tmp_path: Path) -> None:
    path = raw_file(tmp_path / "locked.safetensors", {"a": GOOD}, bytes(8))
    path.chmod(0)
    try:
        assert error_of(path).diagnostics[0].code == "permission-denied"
    finally:
        path.chmod(0o644)


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to switch users"
)
def test_unreadable_file_for_another_user() -> None:
    """Root reads any file, so the check runs in a child process that drops to 'nobody'."""
    import shutil
    import subprocess
    import sys
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="mergelang-perm-"))
    try:
        folder.chmod(0o755)
        path = raw_file(folder / "locked.safetensors", {"a": GOOD}, bytes(8))
        path.chmod(0o600)
        code = (
            "import os, sys\n"
            "from mergelang.errors import CheckpointError\n"
            "from mergelang.io.safetensors_header import read_safetensors_header\n"
            "os.setgid(65534); os.setuid(65534)\n"
            "try:\n"
            "    read_safetensors_header(sys.argv[1])\n"
            "except CheckpointError as exc:\n"
            "    print(exc.diagnostics[0].code)\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", code, str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=folder,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        )
        assert result.stdout.strip() == "permission-denied", result.stderr
    finally:
        shutil.rmtree(folder)
