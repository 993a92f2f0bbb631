"""A tiny architecture for tests whose cost is per step or per output, not per key: four
keys in two blocks, registered by the :func:`tiny_arch` fixture, and its checkpoints."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mergelang.arch import (
    BASE,
    Architecture,
    BlockRule,
    BlockScheme,
    Component,
    KeyRule,
    VectorForm,
    register_architecture,
    unregister_architecture,
)
from mergelang.arch.components import Layout
from mergelang.testing import make_checkpoint

PREFIX = "model.diffusion_model."
BLOCKS = ("T0", "T1")


@dataclass(frozen=True)
class TinyNet:
    width: int = 16

    def layout(self, scale: float = 1.0, *, in_channels: int | None = None) -> Layout:
        del scale, in_channels
        out: Layout = {}
        for n in range(len(BLOCKS)):
            out[f"tiny_blocks.{n}.proj.weight"] = (self.width, self.width)
            out[f"tiny_blocks.{n}.proj.bias"] = (self.width,)
        return out

    def optional_keys(self) -> frozenset[str]:
        return frozenset()


def tiny_architecture(width: int = 16) -> Architecture:
    """:data:`TINY` with ``width`` x ``width`` matrices (a large key for memory tests)."""
    return Architecture(
        name="tinynet",
        title="Tiny net",
        components=(
            Component(
                name="transformer",
                title="transformer",
                role="transformer",
                prefix=PREFIX,
                spec=TinyNet(width),
                bare_heads=frozenset({"tiny_blocks"}),
            ),
        ),
        schemes=(
            BlockScheme(
                name="tiny",
                title="Tiny",
                blocks=BLOCKS,
                groups={"T": BLOCKS},
                vectors=(VectorForm(BLOCKS), VectorForm((BASE, *BLOCKS))),
                rules=(BlockRule("transformer", ("tiny_blocks", "{n}"), "T{n}"),),
                vector_doc="2 values are T0, T1; 3 put BASE first",
                vector_hint="2 values (3 with BASE first)",
            ),
        ),
        signature=(KeyRule(PREFIX + "tiny_blocks.0.proj.weight", 40.0),),
    )


TINY = tiny_architecture()


@pytest.fixture
def tiny_arch() -> Iterator[Architecture]:
    register_architecture(TINY)
    try:
        yield TINY
    finally:
        unregister_architecture(TINY.name)


def tiny_models(folder: Path, *names: str) -> list[Path]:
    """Checkpoints of :data:`TINY` named ``NAME.safetensors`` in ``folder`` (fp16, seeds
    1, 2, ...)."""
    return [
        make_checkpoint(folder / f"{name}.safetensors", TINY.name, seed=seed)
        for seed, name in enumerate(names, start=1)
    ]
