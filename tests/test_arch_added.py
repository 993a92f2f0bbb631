"""An architecture mergelang does not ship, added as one data module's worth of data.

A transformer with 19 double and 38 single blocks (a 57-block scheme, Flux-like names) is
built here from the same data types the built-in architectures use, registered, and then
merged end to end: fixtures generated from its layout, detected, weights written as a vector
of its length, a map with its ranges and groups, checked and resolved, the merge compared
with the formula. Nothing outside this file knows about it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import mergelang
from mergelang.arch import (
    BASE,
    Architecture,
    BlockRule,
    BlockScheme,
    Component,
    KeyRule,
    VectorForm,
    checkpoint_layout,
    detect,
    register_architecture,
    unregister_architecture,
)
from mergelang.arch.components import Layout
from mergelang.arch.parts.widths import linear, scaled_width
from mergelang.errors import RecipeError
from mergelang.io.readers import SafetensorsReader
from mergelang.testing import make_checkpoint

PREFIX = "model.diffusion_model."
DOUBLE = tuple(f"D{i:02d}" for i in range(19))
SINGLE = tuple(f"S{i:02d}" for i in range(38))


@dataclass(frozen=True)
class ToyTransformer:
    hidden: int = 512

    def layout(self, scale: float = 1.0, *, in_channels: int | None = None) -> Layout:
        h = scaled_width(self.hidden, scale)
        cin = 64 if in_channels is None else in_channels
        out: Layout = {}
        linear(out, "img_in", h, cin)
        for n in range(len(DOUBLE)):
            linear(out, f"double_blocks.{n}.img_attn.qkv", 3 * h, h)
            linear(out, f"double_blocks.{n}.txt_mlp.0", 4 * h, h)
        for n in range(len(SINGLE)):
            linear(out, f"single_blocks.{n}.linear1", 4 * h, h)
            out[f"single_blocks.{n}.norm.key_norm.scale"] = (h // 8,)
        linear(out, "final_layer.linear", cin, h)
        return out

    def optional_keys(self) -> frozenset[str]:
        return frozenset()


TOY_SCHEME = BlockScheme(
    name="toy_dit",
    title="Toy DiT",
    blocks=(*DOUBLE, *SINGLE),
    groups={"D": DOUBLE, "S": SINGLE},
    vectors=(VectorForm((*DOUBLE, *SINGLE)), VectorForm((BASE, *DOUBLE, *SINGLE))),
    rules=(
        BlockRule("transformer", ("double_blocks", "{n}"), "D{n:02d}"),
        BlockRule("transformer", ("single_blocks", "{n}"), "S{n:02d}"),
    ),
    vector_doc="57 values are D00..D18, S00..S37; 58 put BASE first",
    vector_hint="57 values (58 with BASE first)",
)

TOY = Architecture(
    name="toydit",
    title="Toy DiT",
    components=(
        Component(
            name="transformer",
            title="transformer",
            role="transformer",
            prefix=PREFIX,
            spec=ToyTransformer(),
            bare_heads=frozenset({"img_in", "double_blocks", "single_blocks", "final_layer"}),
        ),
    ),
    schemes=(TOY_SCHEME,),
    signature=(KeyRule(PREFIX + "double_blocks.0.img_attn.qkv.weight", 40.0),),
)


@pytest.fixture(scope="module")
def toy() -> Iterator[Architecture]:
    register_architecture(TOY)
    try:
        yield TOY
    finally:
        unregister_architecture(TOY.name)


@pytest.fixture
def models(toy: Architecture, tmp_path: Path) -> Path:
    for name, seed in (("a", 1), ("b", 2)):
        make_checkpoint(tmp_path / f"{name}.safetensors", toy.name, scale=0.125, seed=seed)
    return tmp_path


def _block(key: str) -> str:
    parts = key.split(".")
    if parts[2] == "double_blocks":
        return DOUBLE[int(parts[3])]
    if parts[2] == "single_blocks":
        return SINGLE[int(parts[3])]
    return BASE


def test_layout_detection_and_key_blocks(toy: Architecture) -> None:
    layout = checkpoint_layout(toy, scale=0.125)
    assert len(layout) == 2 + 19 * 4 + 38 * 3 + 2
    assert detect(layout).arch is toy
    bare = {key.removeprefix(PREFIX): shape for key, shape in layout.items()}
    found = detect(bare)
    assert found.arch is toy and any("without the" in note for note in found.notes)
    for key in layout:
        assert toy.block_of(key) == _block(key), key


def test_merge_by_map_and_by_vector(models: Path) -> None:
    vector = [round(0.01 * i, 2) for i in range(57)]
    recipe = models / "toy.merge"
    recipe.write_text(
        'model a = "a.safetensors"\n'
        'model b = "b.safetensors"\n'
        'save weighted_sum(a, b, alpha={D00..D18: 0.25, S: 0.75, BASE: 0.5}) to "map.safetensors"'
        " as fp32\n"
        f'save weighted_sum(a, b, alpha={vector}, base=0.1) to "vec.safetensors" as fp32\n'
    )
    mergelang.run(recipe, cache_dir=models / "cache")
    by_block = dict(zip((*DOUBLE, *SINGLE), vector, strict=True))
    with (
        SafetensorsReader(models / "a.safetensors") as a,
        SafetensorsReader(models / "b.safetensors") as b,
        SafetensorsReader(models / "map.safetensors") as by_map,
        SafetensorsReader(models / "vec.safetensors") as by_vector,
    ):
        assert by_map.keys() == a.keys()
        for key in a.keys():  # noqa: SIM118
            x, y = a.get(key).float(), b.get(key).float()
            block = _block(key)
            w_map = 0.5 if block == BASE else (0.25 if block.startswith("D") else 0.75)
            w_vec = 0.1 if block == BASE else by_block[block]
            assert torch.equal(by_map.get(key), (1 - w_map) * x + w_map * y), key
            assert torch.equal(by_vector.get(key), (1 - w_vec) * x + w_vec * y), key


def test_a_vector_of_another_scheme_is_located_and_explained(models: Path) -> None:
    recipe = models / "wrong.merge"
    recipe.write_text(
        'model a = "a.safetensors"\nmodel b = "b.safetensors"\n'
        'save weighted_sum(a, b, alpha=GRAD_V) to "x.safetensors"\n'
    )
    with pytest.raises(RecipeError) as info:
        mergelang.plan(recipe, cache_dir=models / "cache")
    (diag,) = info.value.diagnostics
    assert (diag.code, diag.line, diag.column) == ("weights-architecture", 3, 31)
    assert "Toy DiT models have D00..D18, S00..S37" in diag.message
    assert diag.hint == "give 57 values (58 with BASE first) for Toy DiT models"
    assert not (models / "x.safetensors").exists()


def test_block_names_of_the_scheme_are_checked(models: Path, toy: Architecture) -> None:
    source = 'model a = "a.safetensors"\nsave a * {D00..D18: 1, S38: 0} to "x.safetensors"\n'
    with pytest.raises(RecipeError) as info:
        mergelang.check(mergelang.parse(source))
    (diag,) = info.value.diagnostics
    assert (diag.code, diag.line, diag.column) == ("unknown-block", 2, 24)
    assert diag.hint is not None and "Toy DiT: D00..D18, S00..S37" in diag.hint
