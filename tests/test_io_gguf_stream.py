"""The streaming GGUF writer and the K-quant quantisers: bytes checked against the ``gguf``
package's own reader and dequantisers, the file's size against its layout, and the writer's
memory against the model's size."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import torch

from mergelang.errors import OutputError
from mergelang.io.gguf_format import file_size, open_sink
from mergelang.io.gguf_quants import BLOCK_BYTES, dequantise_k, quantise_k
from mergelang.io.sinks import SinkTarget
from mergelang.io.writer import OutputEntry

gguf = pytest.importorskip("gguf")
np = pytest.importorskip("numpy")
from gguf import GGMLQuantizationType as GT  # noqa: E402
from gguf.quants import dequantize, quantize  # noqa: E402

K_QUANTS = ["Q6_K", "Q5_K", "Q4_K", "Q2_K"]


def plain_round_trip(values: torch.Tensor, kind: str) -> torch.Tensor:
    """The format's grid without its search for scales: Q6_K as 64 signed levels of
    ``max|x| / 32`` per 16 values, Q5_K/Q4_K as 32/16 levels from each 32 values' minimum to
    their maximum, Q2_K as 4 levels over each 16 values, scales kept in float32. ggml's
    quantisers choose better scales than these (even after storing them in 4 or 6 bits):
    their error must be smaller."""
    if kind == "Q6_K":
        groups = values.reshape(-1, 16)
        step = groups.abs().amax(-1, keepdim=True) / 32
        return (torch.round(groups / step).clamp(-32, 31) * step).reshape(values.shape)
    top = {"Q5_K": 31, "Q4_K": 15, "Q2_K": 3}[kind]
    groups = values.reshape(-1, 16 if kind == "Q2_K" else 32)
    low, high = groups.amin(-1, keepdim=True), groups.amax(-1, keepdim=True)
    step = (high - low) / top
    return (low + torch.round((groups - low) / step) * step).reshape(values.shape)


def awkward_blocks() -> torch.Tensor:
    """Rows of 256 values: Gaussian weights, then blocks that take the quantisers' special
    paths (all zero, constant, all negative, one outlier, tiny values)."""
    generator = torch.Generator().manual_seed(7)
    values = torch.randn(40, 256, generator=generator) * 0.02
    values[0] = 0.0
    values[1] = 0.75
    values[2] = -values[2].abs() - 0.01
    values[3, 17] = 5.0
    values[4] *= 1e-6
    values[5, :32] = 0.0
    return values


def gguf_dequantised(packed: torch.Tensor, kind: str) -> Any:
    return dequantize(packed.numpy().reshape(-1, BLOCK_BYTES[kind]), GT[kind]).reshape(-1)


@pytest.mark.parametrize("kind", K_QUANTS)
def test_k_quants_dequantise_through_gguf_close_to_the_input(kind: str) -> None:
    values = awkward_blocks()
    packed = quantise_k(values, kind)
    assert packed.dtype == torch.uint8
    assert tuple(packed.shape) == (40, BLOCK_BYTES[kind])
    back = torch.from_numpy(gguf_dequantised(packed, kind)).reshape(values.shape)
    assert torch.all(back[0] == 0)
    assert torch.all(back[5, :32].abs() <= 1e-3)
    # A constant block: one level of a 6-bit scale of a float16 step away at most.
    assert torch.allclose(back[1], values[1], rtol=0, atol=0.75 / 63)
    gaussian = values[6:]
    error = (back[6:] - gaussian).norm()
    assert error < (plain_round_trip(gaussian, kind) - gaussian).norm()
    assert error / gaussian.norm() < {"Q6_K": 0.02, "Q5_K": 0.04, "Q4_K": 0.08, "Q2_K": 0.32}[kind]
    # The outlier keeps its size within one step of its block's scale.
    assert abs(float(back[3, 17]) - 5.0) < 5.0 / 15
    assert torch.all(back[2] <= 1e-3)


@pytest.mark.parametrize("kind", K_QUANTS)
def test_k_quant_dequantiser_agrees_with_gguf_bit_for_bit(kind: str) -> None:
    produced = quantise_k(awkward_blocks(), kind)
    assert np.array_equal(
        dequantise_k(produced, kind).numpy(), gguf_dequantised(produced, kind), equal_nan=True
    )
    # Any bytes, not only those the quantiser chooses (finite float16 scales).
    generator = torch.Generator().manual_seed(3)
    raw = torch.randint(0, 256, (64, BLOCK_BYTES[kind]), dtype=torch.uint8, generator=generator)
    scale = torch.rand(64, 2, generator=generator).to(torch.float16).view(torch.uint8)
    if kind == "Q6_K":
        raw[:, -2:] = scale[:, :2]
    elif kind == "Q2_K":
        raw[:, -4:] = scale.reshape(64, 4)
    else:
        raw[:, 0:4] = scale.reshape(64, 4)
    mine = dequantise_k(raw, kind).numpy()
    assert np.array_equal(mine, gguf_dequantised(raw, kind))


ENTRIES = (
    OutputEntry("blocks.0.weight", "F32", (64, 512)),
    OutputEntry("blocks.0.bias", "F32", (64,)),
    OutputEntry("small.weight", "F32", (16, 32)),
    OutputEntry("odd_rows.weight", "F32", (40, 100)),
    OutputEntry("conv.weight", "F32", (2, 2, 2, 2, 256)),
    OutputEntry("position_ids", "I64", (1, 77)),
    OutputEntry("logit_scale", "F32", ()),
)


def tensors_for(entries: tuple[OutputEntry, ...]) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(11)
    found: dict[str, torch.Tensor] = {}
    for entry in entries:
        if entry.dtype == "I64":
            found[entry.key] = torch.arange(entry.numel, dtype=torch.int64).reshape(entry.shape)
        else:
            found[entry.key] = torch.randn(entry.shape, generator=generator) * 0.05
    return found


def stream(path: Path, kind: str, pieces: int = 7) -> dict[str, torch.Tensor]:
    """Write ``ENTRIES`` to ``path`` in pieces of awkward sizes, last pieces first, from
    three threads; returns what was written."""
    tensors = tensors_for(ENTRIES)
    sink = open_sink(SinkTarget(path, ENTRIES, {"note": "x"}), quant=kind)
    jobs: list[tuple[str, int, torch.Tensor]] = []
    for key, tensor in tensors.items():
        flat = tensor.reshape(-1)
        bounds = sorted({0, flat.numel(), *range(0, flat.numel(), 1000 + 37 * pieces)})
        for low, high in itertools.pairwise(bounds):
            jobs.append((key, low, flat[low:high]))
    jobs.reverse()

    def work(share: list[tuple[str, int, torch.Tensor]]) -> None:
        for key, low, piece in share:
            sink.write_part(key, low, piece)

    threads = [threading.Thread(target=work, args=(jobs[i::3],)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sink.commit()
    return tensors


def expected_type(entry: OutputEntry, kind: str) -> str:
    """The rule, written again: 1-D or at most 1024 values in F32, rows that are not whole
    blocks in F16."""
    block = 256 if kind.endswith("_K") else 32
    if entry.dtype != "F32":
        return entry.dtype
    if len(entry.shape) < 2 or entry.numel <= 1024:
        return "F32"
    return kind if entry.shape[-1] % block == 0 else "F16"


@pytest.mark.parametrize("kind", ["Q8_0", "Q4_0", *K_QUANTS])
def test_a_streamed_gguf_reads_back_through_the_package(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "out.gguf"
    tensors = stream(path, kind)
    reader = gguf.GGUFReader(str(path))
    assert bytes(reader.fields["note"].parts[-1]).decode() == "x"
    found = {t.name: t for t in reader.tensors}
    assert list(found) == [e.key for e in ENTRIES]
    for entry in ENTRIES:
        stored = found[entry.key]
        assert stored.tensor_type.name == expected_type(entry, kind), entry.key
        assert int(stored.data_offset) % 32 == 0
        value = tensors[entry.key]
        data = np.array(stored.data)
        if stored.tensor_type.name == kind:
            flat = value.reshape(-1, 256 if kind.endswith("_K") else 32)
            whole = (
                quantise_k(flat, kind).numpy()
                if kind.endswith("_K")
                else quantize(flat.numpy(), GT[kind])
            )
            assert np.array_equal(data.reshape(-1), whole.reshape(-1)), entry.key
        elif stored.tensor_type.name == "F16":
            assert np.array_equal(data.reshape(-1), value.half().numpy().reshape(-1))
        else:
            assert np.array_equal(data.reshape(-1), value.numpy().reshape(-1)), entry.key
    five = reader.fields["comfy.gguf.orig_shape.conv.weight"]
    assert [int(five.parts[i][0]) for i in five.data] == [2, 2, 2, 2, 256]
    assert os.path.getsize(path) == file_size(SinkTarget(path, ENTRIES, {"note": "x"}), kind)


def test_an_incomplete_gguf_is_not_written(tmp_path: Path) -> None:
    path = tmp_path / "out.gguf"
    sink = open_sink(SinkTarget(path, ENTRIES[:2]), quant="Q8_0")
    sink.write_part("blocks.0.weight", 0, torch.zeros(64 * 512 - 32))
    sink.write_part("blocks.0.bias", 0, torch.zeros(64))
    with pytest.raises(OutputError) as caught:
        sink.commit()
    assert caught.value.diagnostics[0].code == "incomplete"
    assert "blocks.0.weight" in caught.value.diagnostics[0].message
    assert list(tmp_path.iterdir()) == []


def test_a_key_gguf_cannot_hold_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    path = tmp_path / "out.gguf"
    with pytest.raises(OutputError) as caught:
        open_sink(SinkTarget(path, (OutputEntry("w", "F8_E4M3", (64, 64)),)), quant=None)
    assert caught.value.diagnostics[0].message == ("a GGUF file cannot hold 'w', of type F8_E4M3")
    assert list(tmp_path.iterdir()) == []


PEAK_SCRIPT = """
import resource, sys, torch
from pathlib import Path
from typing import Any
from mergelang.io.gguf_format import open_sink
from mergelang.io.sinks import SinkTarget
from mergelang.io.writer import OutputEntry
count = int(sys.argv[2])
entries = tuple(OutputEntry(f"k{i}.weight", "F32", (1024, 2048)) for i in range(count))
sink = open_sink(SinkTarget(Path(sys.argv[1]), entries), quant="Q8_0")
values = torch.randn(256, 2048)
for entry in entries:
    for row in range(0, 1024, 256):
        sink.write_part(entry.key, row * 2048, values)
sink.commit()
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_kib(path: Path, count: int) -> int:
    done = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, str(path), str(count)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return int(done.stdout.split()[-1])


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss in KiB is Linux's")
def test_the_writers_peak_memory_does_not_grow_with_the_model(tmp_path: Path) -> None:
    """4 keys against 20 of 2M values each (about 2.1 MB of Q8_0 apiece): a writer holding
    the file would peak about 34 MB higher with the larger model."""
    small = peak_kib(tmp_path / "small.gguf", 4)
    large = peak_kib(tmp_path / "large.gguf", 20)
    assert os.path.getsize(tmp_path / "large.gguf") > 40_000_000
    assert large - small < 12_000


def test_a_key_listed_twice_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    entry = OutputEntry("w", "F32", (4, 4))
    with pytest.raises(OutputError) as caught:
        open_sink(SinkTarget(tmp_path / "out.gguf", (entry, entry)), quant="Q8_0")
    assert caught.value.diagnostics[0].message == "key 'w' appears twice"
    assert list(tmp_path.iterdir()) == []
