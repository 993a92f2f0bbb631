"""Methods that are not elementwise, or need a statistics pass, run through the executor.

Two methods are registered for these tests only (and removed afterwards): one needs each
key's whole tensors (a norm per key), one needs the largest magnitude over the whole model
first. Their results are compared with the formulas computed here on whole tensors, and the
plan shows the extra pass and the cache decision for a named costly step.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import mergelang
from mergelang.arch import get_architecture
from mergelang.io.readers import SafetensorsReader
from mergelang.methods.registry import REGISTRY, Param, get_method, method
from mergelang.testing import make_checkpoint


class MaxMagnitude:
    """Collects the largest absolute value of model A over every merged key."""

    def __init__(self) -> None:
        self.largest = 0.0
        self.keys = 0

    def add(self, key: str, block: str, a: torch.Tensor) -> None:
        self.largest = max(self.largest, float(a.abs().max()))
        self.keys += 1


@pytest.fixture
def methods() -> Iterator[None]:
    get_method("weighted_sum")  # load the built-in families first

    @method(
        "norm_matched_sum",
        params=[
            Param("a", "model"),
            Param("b", "model"),
            Param("alpha", "weights", default=0.5, base_default=0.0),
        ],
        elementwise=False,
    )
    def norm_matched_sum(a: torch.Tensor, b: torch.Tensor, *, alpha: float) -> torch.Tensor:
        """(1 - alpha) * A + alpha * B * |A| / |B|  (norms over each whole key)"""
        scale = a.norm() / b.norm() if float(b.norm()) != 0 else torch.tensor(1.0)
        return (1 - alpha) * a + alpha * (b * scale)

    @method(
        "max_normalised",
        params=[Param("a", "model"), Param("alpha", "weights", default=1.0, base_default=1.0)],
        stats=MaxMagnitude,
    )
    def max_normalised(
        a: torch.Tensor, *, alpha: float, stats: MaxMagnitude, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """alpha * A / max|A| (max over every merged key of the model)"""
        result = a * (alpha / stats.largest)
        if out is None:
            return result
        return out.copy_(result)

    yield
    REGISTRY.unregister("norm_matched_sum")
    REGISTRY.unregister("max_normalised")


@pytest.fixture
def models(tmp_path: Path) -> Path:
    make_checkpoint(tmp_path / "a.safetensors", "sd1", scale=0.125, seed=1)
    make_checkpoint(tmp_path / "b.safetensors", "sd1", scale=0.125, seed=2)
    return tmp_path


def test_a_method_that_is_not_elementwise_gets_whole_keys(methods: None, models: Path) -> None:
    recipe = models / "r.merge"
    recipe.write_text(
        'model a = "a.safetensors"\nmodel b = "b.safetensors"\n'
        "m = norm_matched_sum(a, b, alpha=0.4)\n"
        'save m to "m.safetensors" as fp32\n'
    )
    result = mergelang.run(recipe, cache_dir=models / "cache", workers=2)
    assert result.cache_stores == ("m",)
    arch = get_architecture("sd1")
    with (
        SafetensorsReader(models / "a.safetensors") as a,
        SafetensorsReader(models / "b.safetensors") as b,
        SafetensorsReader(models / "m.safetensors") as out,
    ):
        for key in out.keys():  # noqa: SIM118
            x, y = a.get(key).float(), b.get(key).float()
            block = arch.block_of(key)
            if block is None:
                expected = x
            else:
                alpha = 0.4  # a scalar sets BASE too
                scale = x.norm() / y.norm()
                expected = (1 - alpha) * x + alpha * (y * scale)
            assert torch.equal(out.get(key), expected), key
    (models / "m.safetensors").unlink()
    again = mergelang.run(recipe, cache_dir=models / "cache")
    assert again.cache_hits == ("m",)
    assert again.written == [models / "m.safetensors"]


def test_a_statistics_method_gets_its_own_pass(methods: None, models: Path) -> None:
    recipe = models / "s.merge"
    recipe.write_text(
        'model a = "a.safetensors"\nsave max_normalised(a, alpha=0.5) to "s.safetensors" as fp32\n'
    )
    planned = mergelang.plan(recipe, cache_dir=models / "cache")
    assert planned.passes == ["statistics", "merge"]
    mergelang.run(recipe, cache_dir=models / "cache", workers=3)
    arch = get_architecture("sd1")
    with (
        SafetensorsReader(models / "a.safetensors") as a,
        SafetensorsReader(models / "s.safetensors") as out,
    ):
        merged = [k for k in a if arch.block_of(k) is not None and a.get(k).is_floating_point()]
        largest = max(float(a.get(k).float().abs().max()) for k in merged)
        for key in out.keys():  # noqa: SIM118
            x = a.get(key).float()
            # a scalar sets BASE too: every merged key is scaled by 0.5
            expected = x * (0.5 / largest) if key in merged else x
            assert torch.equal(out.get(key), expected), key
