"""``sd_merge_recipe`` holds what A1111's checkpoint merger writes, for the merges it can make.

The expected object is A1111's ``merge_recipe`` (``modules/extras.py``, ``run_modelmerger``)
restated here: ``type``, the sha256 of models A, B and C as primary/secondary/tertiary,
``interp_method`` "Weighted sum" / "Add difference", the one ``multiplier``, ``save_as_half``,
``custom_name``, ``config_source`` (the index of "A, B or C": 0), ``bake_in_vae``
("None"), ``discard_weights`` (""), the two variant flags, and ``format: pt`` beside it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from mergelang import run
from mergelang.testing import make_checkpoint

A1111_FIELDS = (
    "primary_model_hash",
    "secondary_model_hash",
    "tertiary_model_hash",
    "interp_method",
    "multiplier",
    "save_as_half",
    "custom_name",
    "config_source",
    "bake_in_vae",
    "discard_weights",
    "is_inpainting",
    "is_instruct_pix2pix",
)


def a1111_merge_recipe(
    a: Path, b: Path, c: Path | None, interp_method: str, multiplier: float, name: str
) -> dict[str, object]:
    def sha(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    return {
        "primary_model_hash": sha(a),
        "secondary_model_hash": sha(b),
        "tertiary_model_hash": sha(c) if c is not None else None,
        "interp_method": interp_method,
        "multiplier": multiplier,
        "save_as_half": True,
        "custom_name": name,
        "config_source": 0,
        "bake_in_vae": "None",
        "discard_weights": "",
        "is_inpainting": False,
        "is_instruct_pix2pix": False,
    }


@pytest.fixture(scope="module")
def merged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    folder = tmp_path_factory.mktemp("webui")
    models = {
        n: make_checkpoint(folder / f"{n}.safetensors", "sd1", scale=1 / 16, seed=i)
        for i, n in enumerate("abc")
    }
    recipe = (
        "".join(f'model {n} = "{p}"\n' for n, p in models.items())
        + 'save weighted_sum(b, a, alpha=0.3) to "ws.safetensors" as fp16\n'
        + 'save add_difference(c, a, b, alpha=0.7) to "ad.safetensors" as fp16\n'
        + 'save weighted_sum(a, b, alpha=GRAD_V) to "blocks.safetensors" as fp16\n'
    )
    out = folder / "out"
    run(recipe, out_dir=out, cache_dir=folder / "cache")
    return out, models


def _metadata(path: Path) -> dict[str, str]:
    data = path.read_bytes()
    size = int.from_bytes(data[:8], "little")
    header: dict[str, dict[str, str]] = json.loads(data[8 : 8 + size])
    return header["__metadata__"]


def test_a_weighted_sum_is_recorded_as_a1111_records_it(
    merged: tuple[Path, dict[str, Path]],
) -> None:
    out, m = merged
    meta = _metadata(out / "ws.safetensors")
    recipe = json.loads(meta["sd_merge_recipe"])
    expected = a1111_merge_recipe(m["b"], m["a"], None, "Weighted sum", 0.3, "ws")
    assert {k: recipe[k] for k in A1111_FIELDS} == expected
    assert meta["format"] == "pt"
    assert recipe["type"] == "mergelang" and "recipe" in recipe  # mergelang's own beside


def test_an_add_difference_names_a_b_c_of_the_merge(merged: tuple[Path, dict[str, Path]]) -> None:
    out, m = merged
    recipe = json.loads(_metadata(out / "ad.safetensors")["sd_merge_recipe"])
    expected = a1111_merge_recipe(m["c"], m["a"], m["b"], "Add difference", 0.7, "ad")
    assert {k: recipe[k] for k in A1111_FIELDS} == expected


def test_a_merge_a1111_cannot_make_keeps_mergelangs_fields(
    merged: tuple[Path, dict[str, Path]],
) -> None:
    out, _ = merged
    recipe = json.loads(_metadata(out / "blocks.safetensors")["sd_merge_recipe"])
    assert recipe["interp_method"] == "weighted_sum"
    assert recipe["multiplier"] is None and recipe["config_source"] is None
