"""SuperMerger's Flux.1 block strings (61 values in ``BLOCKIDFLUX`` order, 59 without CLIP and
T5) converted to recipes, and a converted Flux merge run against SuperMerger's rule written
out here: ``double_blocks.N`` is DNN, ``single_blocks.N`` is SNN, the ``*_in`` layers are IN,
``final_layer`` is OUT, the CLIP-L and T5 text encoders are CLIP and T5, the VAE is model A's;
each key is ``(1 - w) * A + w * B`` in float32, an elemental entry overriding ``w`` for the
keys of its blocks whose name contains its text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import mergelang
from mergelang.convert import convert
from mergelang.errors import RecipeError
from mergelang.io.readers import SafetensorsReader
from mergelang.testing import make_checkpoint

NAMES = ["CLIP", "T5", "IN", *(f"D{i:02d}" for i in range(19))]
NAMES += [*(f"S{i:02d}" for i in range(38)), "OUT"]
PREFIX = "model.diffusion_model."


def _values() -> list[float]:
    return [round(0.01 * i, 2) for i in range(61)]


def _supermerger_block(key: str) -> str | None:
    if key.startswith("text_encoders.clip_l."):
        return "CLIP"
    if key.startswith("text_encoders.t5xxl."):
        return "T5"
    if not key.startswith(PREFIX):
        return None
    local = key[len(PREFIX) :]
    head, _, rest = local.partition(".")
    if head == "double_blocks":
        return f"D{int(rest.split('.')[0]):02d}"
    if head == "single_blocks":
        return f"S{int(rest.split('.')[0]):02d}"
    if head.endswith("_in"):
        return "IN"
    if head == "final_layer":
        return "OUT"
    raise AssertionError(key)


def test_61_values_convert_to_the_flux_list() -> None:
    text = ",".join(str(v) for v in _values())
    recipe = convert(text, "supermerger")
    assert recipe == "weights = [" + ", ".join(format(v, "g") for v in _values()) + "]\n"


def test_59_values_with_base_become_a_map(tmp_path: Path) -> None:
    values = [0.25] * 59
    values[1] = 0.75  # D00: the 59 values start IN, D00
    recipe = {
        "mode": "Weight sum",
        "calcmode": "normal",
        "model_a": "a.safetensors",
        "model_b": "b.safetensors",
        "base_alpha": 0.1,
        "weights_alpha": ",".join(str(v) for v in values),
    }
    text = convert(json.dumps({"sd_merge_recipe": json.dumps(recipe)}), "supermerger")
    assert "alpha={BASE: 0.1, D00: 0.75, default: 0.25}" in text


def test_wrong_count_names_every_length() -> None:
    with pytest.raises(RecipeError) as info:
        convert(",".join(["0.5"] * 60), "supermerger", path="w.txt")
    (diag,) = info.value.diagnostics
    assert (diag.line, diag.column) == (1, 1)
    assert "26 or 25 values (SD1/SD2), 20 or 19 (SDXL) or 61 or 59 (Flux.1), not 60" in (
        diag.message
    )


def test_flux_elemental_ranges_convert() -> None:
    text = convert("D00-D02:img_attn:0.3\nS05::0.9", "supermerger")
    assert text == 'elemental = {"img_attn" in [D00, D01, D02]: 0.3, "*" in [S05]: 0.9}\n'


def test_converted_supermerger_flux_merge_matches_its_rule(tmp_path: Path) -> None:
    for name, seed in (("a", 5), ("b", 6)):
        make_checkpoint(tmp_path / f"{name}.safetensors", "flux-dev", scale=1 / 160, seed=seed)
    weights = dict(zip(NAMES, _values(), strict=True))
    recipe_json = {
        "mode": "Weight sum",
        "calcmode": "normal",
        "model_a": "a.safetensors",
        "model_b": "b.safetensors",
        "weights_alpha": ",".join(str(weights[n]) for n in NAMES),
        "elemental_merge": ["D03:img_attn:0.95", "S10 S11:linear2:0.05"],
    }
    text = convert(json.dumps({"sd_merge_recipe": json.dumps(recipe_json)}), "supermerger")
    recipe = tmp_path / "flux.merge"
    recipe.write_text(text.replace('"merged.safetensors"', '"m.safetensors" as fp32'))
    mergelang.run(recipe, cache_dir=tmp_path / "cache")
    with (
        SafetensorsReader(tmp_path / "a.safetensors") as a,
        SafetensorsReader(tmp_path / "b.safetensors") as b,
        SafetensorsReader(tmp_path / "m.safetensors") as out,
    ):
        checked = 0
        for key in a.keys():  # noqa: SIM118
            x = a.get(key)
            block = _supermerger_block(key)
            if block is None or not x.is_floating_point():
                assert torch.equal(out.get(key), x.float() if x.is_floating_point() else x), key
                continue
            w = weights[block]
            if block == "D03" and "img_attn" in key:
                w = 0.95
            if block in ("S10", "S11") and "linear2" in key:
                w = 0.05
            expected = (1 - w) * x.float() + w * b.get(key).float()
            assert torch.allclose(out.get(key), expected, rtol=0, atol=1e-6), key
            checked += 1
        assert checked > 700


def test_plan_states_the_memory_of_the_largest_key(tmp_path: Path) -> None:
    """A whole-key method on Flux holds one key and its operands at a time: the plan names
    the largest key (found here from the header) and that memory."""
    from safetensors import safe_open

    from mergelang.plan.text import human_bytes

    paths = []
    for name, seed in (("a", 7), ("b", 8)):
        path = tmp_path / f"{name}.safetensors"
        paths.append(make_checkpoint(path, "flux-dev", scale=1 / 40, seed=seed))
    with safe_open(str(paths[0]), "pt") as f:
        sizes = {k: f.get_slice(k).get_shape() for k in f.keys()}  # noqa: SIM118
    numel = {k: int(torch.tensor(s).prod()) if s else 1 for k, s in sizes.items()}
    largest = max(numel, key=lambda k: numel[k])
    recipe = tmp_path / "slerp.merge"
    recipe.write_text(
        'model a = "a.safetensors"\nmodel b = "b.safetensors"\n'
        'save slerp(a, b, alpha=0.5) to "out.safetensors"\n'
    )
    from mergelang.plan.text import render_plan

    text = render_plan(mergelang.plan(recipe, cache_dir=tmp_path / "cache"))
    values = numel[largest]
    shown = f"{values / 1e6:.1f}M" if values >= 10**6 else f"{values / 1e3:.1f}k"
    assert (
        f"whole tensors, largest {largest} ({shown} values, {human_bytes(3 * values * 4)} "
        "with its operands in float32)"
    ) in text
