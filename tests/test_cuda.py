"""The CUDA path: the same recipes computed on the GPU give the CPU's results.

Skipped where torch sees no GPU (CI). Where one is present, every output key of a block
weighted sum, an add difference, model arithmetic, an inpainting channel merge and a sweep is
compared with the CPU run; fp32 elementwise kernels round identically on both, so the
results are expected to be equal, and are required to be within float32 tolerance.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import mergelang
from mergelang.io.readers import SafetensorsReader
from mergelang.run.executor import resolve_device
from mergelang.testing import make_checkpoint

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

RECIPE = """\
model a = "a.safetensors"
model b = "b.safetensors"
model c = "c.safetensors"
model inp = "inp.safetensors"
mix = weighted_sum(a, b, alpha=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1, 0.9, 0.8, 0.7, \
0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0, 0.25, 0.5, 0.75, 1, 0.5], base=0.3)
save mix to "out/mix.safetensors" as fp16
save add_difference(mix, c, a, alpha=0.7, base=0.2) to "out/diff.safetensors"
save a * {IN00..IN05: 0.75, default: 1} + b * 0.25 to "out/arith.safetensors" as bf16
save add_difference(inp, b, a, alpha=1) to "out/inpaint.safetensors" as fp32
for blk in IN00..IN03:
    save a * {blk: 0.75, default: 1} to "out/layers/{blk}.safetensors" as fp16
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cuda")
    for name, seed in (("a", 1), ("b", 2), ("c", 3)):
        make_checkpoint(root / f"{name}.safetensors", "sd1", scale=0.25, seed=seed)
    make_checkpoint(root / "inp.safetensors", "sd1", scale=0.25, seed=4, variant="inpainting")
    (root / "recipe.merge").write_text(RECIPE, encoding="utf-8")
    return root


def test_resolve_device_accepts_cuda() -> None:
    assert resolve_device("cuda").type == "cuda"


def test_cuda_outputs_equal_cpu_outputs(folder: Path) -> None:
    recipe = folder / "recipe.merge"
    cpu = mergelang.run(recipe, out_dir=folder / "cpu", cache_dir=folder / "cache-cpu")
    gpu = mergelang.run(
        recipe, out_dir=folder / "gpu", cache_dir=folder / "cache-gpu", device="cuda"
    )
    assert len(cpu.written) == len(gpu.written) == 8
    for mine, theirs in zip(cpu.written, gpu.written, strict=True):
        with SafetensorsReader(mine) as left, SafetensorsReader(theirs) as right:
            assert left.keys() == right.keys()
            for key in left.keys():  # noqa: SIM118
                x, y = left.get(key), right.get(key)
                assert x.dtype == y.dtype, key
                if x.is_floating_point():
                    torch.testing.assert_close(y.float(), x.float(), rtol=1e-6, atol=1e-6)
                else:
                    assert torch.equal(x, y), key


def test_evaluate_on_cuda_matches_cpu(folder: Path) -> None:
    text = (folder / "recipe.merge").read_text(encoding="utf-8")
    text = text.replace('"a.safetensors"', f'"{folder / "a.safetensors"}"')
    text = text.replace('"b.safetensors"', f'"{folder / "b.safetensors"}"')
    text = text.replace('"c.safetensors"', f'"{folder / "c.safetensors"}"')
    text = text.replace('"inp.safetensors"', f'"{folder / "inp.safetensors"}"')
    cpu = mergelang.evaluate(text, target="mix")
    gpu = mergelang.evaluate(text, target="mix", device="cuda")
    assert cpu.keys() == gpu.keys()
    for key, value in cpu.items():
        assert gpu[key].device.type == "cpu"
        torch.testing.assert_close(gpu[key], value, rtol=1e-6, atol=1e-6)
