"""Provenance metadata: what is written, nesting of parents, reading it back from a file."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from mergelang._version import __version__
from mergelang.io.metadata import (
    InputRecord,
    build_metadata,
    input_record,
    modelspec_architecture,
    read_provenance,
)
from mergelang.io.readers import SafetensorsReader
from mergelang.io.writer import OutputEntry, SafetensorsWriter


def record(name: str, seed: int, **extra: str | None) -> InputRecord:
    sha = hashlib.sha256(name.encode() + bytes([seed])).hexdigest()
    legacy = hashlib.sha256(sha.encode()).hexdigest()[:8]
    return InputRecord(
        name=name,
        file_name=f"{name}.safetensors",
        size=1000 + seed,
        sha256=sha,
        autov2=sha[:10],
        legacy=legacy,
        **extra,
    )


RECIPE = 'mix = weighted_sum(a, b, alpha = 0.3)\nsave mix to "mix.safetensors" as fp16\n'


def test_every_value_is_a_string_and_the_keys_are_there() -> None:
    a, b = record("a", 1), record("b", 2)
    meta = build_metadata(
        recipe_text=RECIPE,
        output_name="mix",
        inputs=[a, b],
        extra={
            "architecture": "sd1",
            "interp_method": "weighted_sum",
            "multiplier": "0.3",
            "save_as_half": "true",
            "title": "My Mix",
            "mergelang.block_weights": "GRAD_V",
        },
    )
    assert all(isinstance(v, str) for v in meta.values())
    assert meta["mergelang.recipe"] == RECIPE
    assert meta["mergelang.version"] == __version__
    assert meta["mergelang.format_version"] == "1"
    assert meta["modelspec.sai_model_spec"] == "1.0.0"
    assert meta["modelspec.architecture"] == "stable-diffusion-v1"
    assert meta["modelspec.resolution"] == "512x512"
    assert meta["modelspec.title"] == "My Mix"
    assert meta["modelspec.merged_from"] == "a, b"
    assert meta["mergelang.block_weights"] == "GRAD_V"
    assert "architecture" not in meta and "title" not in meta

    inputs = json.loads(meta["mergelang.inputs"])
    assert inputs == [
        {
            "name": "a",
            "file": "a.safetensors",
            "size": 1001,
            "sha256": a.sha256,
            "autov2": a.sha256[:10],
            "legacy": a.legacy,
        },
        {
            "name": "b",
            "file": "b.safetensors",
            "size": 1002,
            "sha256": b.sha256,
            "autov2": b.sha256[:10],
            "legacy": b.legacy,
        },
    ]

    recipe = json.loads(meta["sd_merge_recipe"])
    assert recipe == {
        "type": "mergelang",
        "recipe": RECIPE,
        "primary_model_hash": a.sha256,
        "secondary_model_hash": b.sha256,
        "tertiary_model_hash": None,
        "model_hashes": [a.sha256, b.sha256],
        "interp_method": "weighted_sum",
        "multiplier": 0.3,
        "save_as_half": True,
        "custom_name": "mix",
        "config_source": None,
        "bake_in_vae": "None",
        "discard_weights": "",
        "is_inpainting": False,
        "is_instruct_pix2pix": False,
    }
    models = json.loads(meta["sd_merge_models"])
    assert models == {
        a.sha256: {"name": "a.safetensors", "legacy_hash": a.legacy, "sd_merge_recipe": None},
        b.sha256: {"name": "b.safetensors", "legacy_hash": b.legacy, "sd_merge_recipe": None},
    }


def test_modelspec_architectures() -> None:
    assert modelspec_architecture("sd1") == "stable-diffusion-v1"
    assert modelspec_architecture("sd2") == "stable-diffusion-v2-768-v"
    assert modelspec_architecture("sd2-512") == "stable-diffusion-v2-512"
    assert modelspec_architecture("sdxl") == "stable-diffusion-xl-v1-base"
    assert modelspec_architecture("sd1", "inpainting") == "stable-diffusion-v1-inpainting"
    assert modelspec_architecture("stable-diffusion-xl-v1-refiner") == (
        "stable-diffusion-xl-v1-refiner"
    )


def test_without_architecture_or_title_those_keys_are_absent() -> None:
    meta = build_metadata(recipe_text="x", output_name="o", inputs=[])
    assert "modelspec.architecture" not in meta
    assert "modelspec.title" not in meta
    assert "modelspec.merged_from" not in meta
    assert json.loads(meta["mergelang.inputs"]) == []
    assert json.loads(meta["sd_merge_recipe"])["primary_model_hash"] is None


def test_inpainting_variant_is_recorded() -> None:
    meta = build_metadata(
        recipe_text="x",
        output_name="o",
        inputs=[record("a", 1)],
        extra={"architecture": "sd1", "variant": "inpainting", "bake_in_vae": "vae.pt"},
    )
    recipe = json.loads(meta["sd_merge_recipe"])
    assert recipe["is_inpainting"] is True
    assert recipe["bake_in_vae"] == "vae.pt"
    assert meta["modelspec.architecture"] == "stable-diffusion-v1-inpainting"


def test_parents_recipes_nest_and_ancestors_are_kept() -> None:
    grandparent = record("gp", 9)
    parent_meta = build_metadata(
        recipe_text="parent recipe", output_name="parent", inputs=[grandparent, record("x", 3)]
    )
    parent = record(
        "parent",
        4,
        merge_recipe=parent_meta["sd_merge_recipe"],
        merge_models=parent_meta["sd_merge_models"],
        recipe=parent_meta["mergelang.recipe"],
    )
    webui_child = record(
        "webui",
        5,
        merge_recipe=json.dumps({"type": "webui", "interp_method": "Add difference"}),
    )
    meta = build_metadata(
        recipe_text="child recipe", output_name="child", inputs=[parent, webui_child]
    )
    models = json.loads(meta["sd_merge_models"])
    assert models[parent.sha256]["sd_merge_recipe"]["recipe"] == "parent recipe"
    assert models[parent.sha256]["sd_merge_recipe"]["primary_model_hash"] == grandparent.sha256
    assert models[webui_child.sha256]["sd_merge_recipe"]["type"] == "webui"
    # The parent's own inputs are carried along, as A1111 does.
    assert models[grandparent.sha256]["name"] == "gp.safetensors"
    expected = {parent.sha256, webui_child.sha256, grandparent.sha256, record("x", 3).sha256}
    assert set(models) == expected
    inputs = json.loads(meta["mergelang.inputs"])
    assert inputs[0]["recipe"] == "parent recipe"
    assert "recipe" not in inputs[1]


def test_provenance_round_trips_through_a_file(tmp_path: Path) -> None:
    grandparent = record("gp", 9)
    parent_meta = build_metadata(recipe_text="p", output_name="parent", inputs=[grandparent])
    parent = record(
        "parent",
        1,
        merge_recipe=parent_meta["sd_merge_recipe"],
        merge_models=parent_meta["sd_merge_models"],
        recipe="p",
    )
    other = record("other", 2)
    meta = build_metadata(
        recipe_text=RECIPE,
        output_name="mix",
        inputs=[parent, other],
        extra={"architecture": "sdxl", "title": "T"},
    )
    path = tmp_path / "mix.safetensors"
    with SafetensorsWriter(path, [OutputEntry("w", "F16", (2,))], metadata=meta) as writer:
        writer.write("w", torch.zeros(2, dtype=torch.float16))
    with SafetensorsReader(path) as reader:
        stored = dict(reader.metadata)
    assert stored == meta
    provenance = read_provenance(stored)
    assert provenance is not None
    assert provenance.tool == "mergelang"
    assert provenance.recipe == RECIPE
    assert provenance.version == __version__
    assert provenance.format_version == "1"
    assert provenance.architecture == "stable-diffusion-xl-v1-base"
    assert provenance.title == "T"
    assert provenance.problems == ()
    assert [r.name for r in provenance.inputs] == ["parent", "other"]
    assert provenance.inputs[0].sha256 == parent.sha256
    assert provenance.inputs[0].recipe == "p"
    assert provenance.inputs[1] == other
    assert provenance.merge_recipe is not None
    assert provenance.merge_recipe["primary_model_hash"] == parent.sha256
    assert provenance.merge_models is not None
    nested = provenance.merge_models[parent.sha256]
    assert isinstance(nested, dict)
    assert nested["sd_merge_recipe"]["recipe"] == "p"
    assert grandparent.sha256 in provenance.merge_models


def test_read_provenance_of_other_tools_and_of_plain_files() -> None:
    assert read_provenance({}) is None
    assert read_provenance({"format": "pt", "modelspec.title": "x"}) is None
    webui = read_provenance({"sd_merge_recipe": json.dumps({"type": "webui", "multiplier": 0.5})})
    assert webui is not None
    assert webui.tool == "webui"
    assert webui.recipe is None and webui.inputs == ()


def test_unreadable_fields_are_reported_not_raised() -> None:
    provenance = read_provenance(
        {
            "mergelang.recipe": "r",
            "mergelang.inputs": json.dumps([{"name": 3}, "x"]),
            "sd_merge_recipe": "not json",
            "sd_merge_models": "[1]",
        }
    )
    assert provenance is not None
    assert provenance.recipe == "r"
    assert provenance.inputs == ()
    assert provenance.merge_recipe is None and provenance.merge_models is None
    assert len(provenance.problems) == 4


def test_input_record_hashes_the_file_and_reads_its_provenance(tmp_path: Path) -> None:
    path = tmp_path / "parent.safetensors"
    data = b"weights" * 100
    path.write_bytes(data)
    rec = input_record(
        "__O1__",
        path,
        metadata={"sd_merge_recipe": "{}", "mergelang.recipe": "r"},
        cache_dir=tmp_path / "cache",
    )
    assert rec.name == "__O1__"
    assert rec.file_name == "parent.safetensors"
    assert rec.size == len(data)
    assert rec.sha256 == hashlib.sha256(data).hexdigest()
    assert rec.autov2 == rec.sha256[:10]
    assert rec.legacy == hashlib.sha256(b"").hexdigest()[:8]
    assert rec.merge_recipe == "{}" and rec.recipe == "r" and rec.merge_models is None
