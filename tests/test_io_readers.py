"""Round trips between mergelang's writer and reader and the reference safetensors library."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import pytest
import torch
from safetensors import TensorSpec, serialize_file
from safetensors.torch import load_file

from mergelang.errors import CheckpointError
from mergelang.io.ckpt import CkptReader
from mergelang.io.dtypes import ITEM_SIZES, torch_dtype
from mergelang.io.readers import SafetensorsReader, open_checkpoint, sniff_format
from mergelang.io.writer import OutputEntry, SafetensorsWriter


def available_codes() -> list[str]:
    codes = []
    for code in ITEM_SIZES:
        try:
            torch_dtype(code)
        except TypeError:
            continue
        codes.append(code)
    return codes


def random_tensor(code: str, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Random bit patterns of any dtype (0/1 for BOOL)."""
    generator = torch.Generator().manual_seed(seed)
    numel = 1
    for dim in shape:
        numel *= dim
    dtype = torch_dtype(code)
    if code == "BOOL":
        return torch.randint(0, 2, shape, generator=generator).to(torch.bool)
    raw = torch.randint(0, 256, (numel * ITEM_SIZES[code],), dtype=torch.uint8, generator=generator)
    return raw.view(dtype).reshape(shape)


def raw_bytes(tensor: torch.Tensor) -> bytes:
    flat = tensor.detach().contiguous().reshape(-1)
    return bytes(flat.view(torch.uint8).tolist()) if flat.numel() else b""


def reference_save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """The reference library's own serializer (what ``safetensors.torch.save_file`` calls)."""
    specs = {}
    for key, tensor in tensors.items():
        specs[key] = TensorSpec(
            dtype=str(tensor.dtype).removeprefix("torch."),
            shape=list(tensor.shape),
            data_ptr=tensor.data_ptr(),
            data_len=tensor.numel() * tensor.element_size(),
        )
    serialize_file(specs, str(path), metadata=metadata)


def sample_tensors() -> dict[str, torch.Tensor]:
    shapes = [(3, 5), (7,), (), (2, 0), (4, 3, 2)]
    tensors = {}
    for index, code in enumerate(available_codes()):
        shape = shapes[index % len(shapes)]
        tensors[f"t.{code.lower()}"] = random_tensor(code, shape, seed=index)
    return tensors


def write_with_mergelang(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    entries = [
        OutputEntry(key, code_of(tensor), tuple(tensor.shape)) for key, tensor in tensors.items()
    ]
    with SafetensorsWriter(path, entries, metadata={"origin": "test"}) as writer:
        for key in reversed(list(tensors)):
            writer.write(key, tensors[key])


def code_of(tensor: torch.Tensor) -> str:
    for code in available_codes():
        if torch_dtype(code) == tensor.dtype:
            return code
    raise AssertionError(tensor.dtype)


def test_every_dtype_round_trips_through_mergelang_and_reference(tmp_path: Path) -> None:
    tensors = sample_tensors()
    assert {"F16", "BF16", "F32", "F64", "I64", "I32", "I16", "I8", "U8", "BOOL"} <= {
        code_of(t) for t in tensors.values()
    }
    path = tmp_path / "all.safetensors"
    write_with_mergelang(path, tensors)
    reference = load_file(path)
    with SafetensorsReader(path) as reader:
        assert reader.keys() == list(tensors)
        assert dict(reader.metadata) == {"origin": "test"}
        for key, tensor in tensors.items():
            ours = reader.get(key)
            assert ours.dtype == tensor.dtype
            assert ours.shape == tensor.shape
            assert raw_bytes(ours) == raw_bytes(tensor)
            assert reference[key].dtype == tensor.dtype
            assert raw_bytes(reference[key]) == raw_bytes(tensor)


def test_float8_codes_round_trip(tmp_path: Path) -> None:
    if not hasattr(torch, "float8_e4m3fn"):
        pytest.skip("this torch has no float8")
    tensors = {
        "e4m3": random_tensor("F8_E4M3", (4, 4), seed=1),
        "e5m2": random_tensor("F8_E5M2", (3,), seed=2),
    }
    path = tmp_path / "f8.safetensors"
    write_with_mergelang(path, tensors)
    reference = load_file(path)
    with SafetensorsReader(path) as reader:
        for key, tensor in tensors.items():
            assert raw_bytes(reader.get(key)) == raw_bytes(tensor)
            assert raw_bytes(reference[key]) == raw_bytes(tensor)


def test_reference_files_read_identically(tmp_path: Path) -> None:
    tensors = sample_tensors()
    path = tmp_path / "ref.safetensors"
    reference_save(tensors, path, {"a": "b"})
    with SafetensorsReader(path) as reader:
        assert dict(reader.metadata) == {"a": "b"}
        assert set(reader.keys()) == set(tensors)
        for key, tensor in tensors.items():
            got = reader.get(key)
            assert got.dtype == tensor.dtype and got.shape == tensor.shape
            assert raw_bytes(got) == raw_bytes(tensor)


def test_save_file_output_reads_identically(tmp_path: Path) -> None:
    pytest.importorskip("numpy")
    from safetensors.torch import save_file

    tensors = {k: v for k, v in sample_tensors().items() if v.numel() > 0}
    path = tmp_path / "save_file.safetensors"
    save_file(tensors, str(path))
    with SafetensorsReader(path) as reader:
        for key, tensor in tensors.items():
            assert raw_bytes(reader.get(key)) == raw_bytes(tensor)


def mapped_regions(path: Path) -> list[tuple[int, int]]:
    """Address ranges where this process maps ``path`` (from /proc/self/maps)."""
    regions = []
    target = str(path.resolve())
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5] == target:
            low, high = (int(x, 16) for x in fields[0].split("-"))
            regions.append((low, high))
    return regions


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc/self/maps")
def test_tensors_are_read_into_memory_of_their_own_not_mapped(tmp_path: Path) -> None:
    """Bounded reads, not memory maps: no mapping of the file exists, so a file truncated
    meanwhile can never kill the process with SIGBUS."""
    tensors = {"a": torch.arange(12, dtype=torch.float32), "b": torch.ones(3, dtype=torch.float16)}
    path = tmp_path / "m.safetensors"
    write_with_mergelang(path, tensors)
    with SafetensorsReader(path) as reader:
        a, b = reader.get("a"), reader.get("b")
        assert mapped_regions(path) == []
        assert torch.equal(a, tensors["a"]) and torch.equal(b, tensors["b"])


def test_a_file_truncated_after_opening_is_a_clean_error_naming_the_key(tmp_path: Path) -> None:
    tensors = {"a": torch.arange(4096, dtype=torch.float32), "b": torch.ones(3)}
    path = tmp_path / "m.safetensors"
    write_with_mergelang(path, tensors)
    with SafetensorsReader(path) as reader:
        os.truncate(path, reader.header.data_offset + 100)
        with pytest.raises(CheckpointError) as caught:
            reader.get("a")
    (diag,) = caught.value.diagnostics
    assert diag.code == "input-changed"
    assert diag.key == "a"
    assert diag.message == (
        "the file ended 16284 bytes before the tensor's end; was it truncated after it was opened?"
    )


def test_writing_into_a_tensor_never_changes_the_file(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    write_with_mergelang(path, {"a": torch.arange(8, dtype=torch.float32)})
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    with SafetensorsReader(path) as reader:
        tensor = reader.get("a")
        tensor.mul_(10)
        assert tensor[3].item() == 30
        # A later read is not affected by the in-place change either.
        assert reader.get("a")[3].item() == 3
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_tensors_outlive_the_reader(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    write_with_mergelang(path, {"a": torch.arange(6, dtype=torch.int64)})
    reader = SafetensorsReader(path)
    tensor = reader.get("a")
    reader.close()
    del reader
    assert tensor.tolist() == [0, 1, 2, 3, 4, 5]


def test_closed_reader_refuses_get(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    write_with_mergelang(path, {"a": torch.zeros(2)})
    reader = SafetensorsReader(path)
    reader.close()
    with pytest.raises(ValueError, match="closed"):
        reader.get("a")


def test_unaligned_offsets_are_read_correctly(tmp_path: Path) -> None:
    values = torch.tensor([1.5, -2.25, 3.0], dtype=torch.float32)
    header = {
        "byte": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]},
        "f32": {"dtype": "F32", "shape": [3], "data_offsets": [1, 13]},
    }
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    data = b"\x07" + struct.pack("<3f", *values.tolist())
    path = tmp_path / "odd.safetensors"
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    with SafetensorsReader(path) as reader:
        assert torch.equal(reader.get("f32"), values)
        assert reader.get("byte").tolist() == [7]


def test_missing_key_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    write_with_mergelang(path, {"a": torch.zeros(2)})
    with SafetensorsReader(path) as reader, pytest.raises(CheckpointError) as caught:
        reader.get("nope")
    assert caught.value.diagnostics[0].code == "missing-key"
    assert caught.value.diagnostics[0].key == "nope"


def test_truncated_file_is_refused_at_open(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    write_with_mergelang(path, {"a": torch.zeros(64)})
    with path.open("r+b") as handle:
        handle.truncate(path.stat().st_size - 4)
    with pytest.raises(CheckpointError) as caught:
        SafetensorsReader(path)
    assert caught.value.diagnostics[0].code == "out-of-bounds"


def test_open_checkpoint_goes_by_content(tmp_path: Path) -> None:
    tensors = {"w": torch.arange(4, dtype=torch.float32)}
    misnamed = tmp_path / "actually_safetensors.ckpt"
    write_with_mergelang(misnamed, tensors)
    assert sniff_format(misnamed) == "safetensors"
    with open_checkpoint(misnamed) as reader:
        assert isinstance(reader, SafetensorsReader)

    pickled = tmp_path / "actually_pickle.safetensors"
    torch.save({"state_dict": tensors}, pickled)
    assert sniff_format(pickled) == "pickle"
    with open_checkpoint(pickled) as reader:
        assert isinstance(reader, CkptReader)
        assert torch.equal(reader.get("w"), tensors["w"])

    legacy = tmp_path / "legacy.pt"
    torch.save(tensors, legacy, _use_new_zipfile_serialization=False)
    assert sniff_format(legacy) == "pickle"
    with open_checkpoint(legacy) as reader:
        assert reader.shapes() == {"w": (4,)}
        assert reader.info("w").dtype == "F32"


def test_open_checkpoint_reports_unknown_content(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("these are not weights at all")
    with pytest.raises(CheckpointError) as caught:
        open_checkpoint(text)
    assert caught.value.diagnostics[0].code == "unknown-format"

    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"garbage that is long enough")
    with pytest.raises(CheckpointError) as caught:
        open_checkpoint(broken)
    assert caught.value.diagnostics[0].code == "header-too-large"

    with pytest.raises(CheckpointError) as caught:
        open_checkpoint(tmp_path / "absent.safetensors")
    assert caught.value.diagnostics[0].code == "not-found"
