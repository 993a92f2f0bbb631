"""Reading what images say about their model (real PNGs written with the standard library),
and matching images to models by each kind of information."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from report_helpers import a1111_parameters, comfyui_text, write_png

from mergelang.report.matching import Candidate, match_images, model_stem
from mergelang.report.pnginfo import (
    ImageInfo,
    NotAnImage,
    image_info,
    parse_a1111,
    parse_comfyui,
    read_png_text,
)

IN04 = Candidate("sd15-IN04-075", "sd15-IN04-075", "0123456789", "89abcdef")
IN05 = Candidate("sd15-IN05-075", "sd15-IN05-075", "aaaaaaaaaa", "bbbbbbbb")
IN0 = Candidate("sd15-IN0", "sd15-IN0", None, None)
CANDIDATES = [IN04, IN05, IN0]


@pytest.mark.parametrize("kind", ["tEXt", "zTXt", "iTXt", "iTXt-z"])
def test_text_chunks_of_every_kind(tmp_path: Path, kind: str) -> None:
    text = {"parameters": "a cat\nSteps: 20, Seed: 7", "Software": "x"}
    path = write_png(tmp_path / "a.png", text=text, kind=kind)
    assert read_png_text(path) == text


def test_not_a_png(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"GIF89a....")
    with pytest.raises(NotAnImage, match=r"a\.png is not a PNG image"):
        read_png_text(tmp_path / "a.png")
    cut = write_png(tmp_path / "cut.png").read_bytes()[:40]
    (tmp_path / "cut.png").write_bytes(cut)
    with pytest.raises(NotAnImage, match=r"cut\.png: a PNG chunk is cut short"):
        read_png_text(tmp_path / "cut.png")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(NotAnImage, match=r"notes\.txt is not an image"):
        image_info(tmp_path / "notes.txt")
    (tmp_path / "photo.jpg").write_bytes(b"\xff\xd8\xff")
    assert image_info(tmp_path / "photo.jpg") == ImageInfo(None)


def test_a1111_parameters() -> None:
    text = a1111_parameters(seed=3, model_hash="0123456789", model="sd15-IN04-075")
    assert parse_a1111(text) == ImageInfo("a1111", "0123456789", "sd15-IN04-075", 3)
    # Forge quotes values holding commas; legacy hashes have 8 digits.
    forge = 'a dog\nSteps: 20, Seed: 11, Model hash: 89ABCDEF, Lora hashes: "a: 1, b: 2", Model: x'
    assert parse_a1111(forge) == ImageInfo("a1111", "89abcdef", "x", 11)
    assert parse_a1111("just a prompt") == ImageInfo("a1111", None, None, None)
    assert parse_a1111("p\nSeed: 1, Model hash: nothex").model_hash is None


def test_comfyui_graphs() -> None:
    both = comfyui_text("studies/sd15-IN05-075.safetensors", 4)
    assert parse_comfyui(both["prompt"], both["workflow"]) == ImageInfo(
        "comfyui", None, "studies/sd15-IN05-075.safetensors", 4
    )
    assert parse_comfyui(None, both["workflow"]) == ImageInfo(
        "comfyui", None, "studies/sd15-IN05-075.safetensors", 4
    )
    advanced = json.dumps(
        {
            "nodes": [
                {"type": "CheckpointLoaderSimple", "widgets_values": ["m.safetensors"]},
                {"type": "KSamplerAdvanced", "widgets_values": ["enable", 9, "fixed", 20]},
            ]
        }
    )
    assert parse_comfyui(None, advanced) == ImageInfo("comfyui", None, "m.safetensors", 9)
    assert parse_comfyui('{"1": {"inputs": {"seed": 1}}}', "not json") is None
    assert model_stem("a\\b/sd15-IN05-075.safetensors") == "sd15-IN05-075"


def test_matching_by_each_kind_of_information(tmp_path: Path) -> None:
    images = tmp_path / "images"
    by_autov2 = write_png(
        images / "001.png",
        text={"parameters": a1111_parameters(seed=1, model_hash="0123456789", model="other")},
    )
    by_legacy = write_png(
        images / "002.png",
        text={"parameters": a1111_parameters(seed=2, model_hash="89abcdef", model=None)},
    )
    by_name = write_png(
        images / "003.png",
        text={"parameters": a1111_parameters(seed=1, model_hash=None, model="sd15-IN05-075")},
    )
    by_comfy = write_png(
        images / "004.png", text=comfyui_text("sub/sd15-IN05-075.safetensors", 2), kind="iTXt"
    )
    by_file = write_png(images / "sd15-IN04-075_seed3.png")
    by_file_longest = write_png(images / "sd15-IN0-4.png")
    jpeg = images / "sd15-IN05-075-7.jpg"
    jpeg.write_bytes(b"\xff\xd8\xff")
    matches = match_images(sorted(images.iterdir()), CANDIDATES)
    got = {
        key: {seed: (m.path.name, m.how) for seed, m in by_seed.items()}
        for key, by_seed in matches.images.items()
    }
    assert got == {
        "sd15-IN04-075": {
            1: (by_autov2.name, "model hash"),
            2: (by_legacy.name, "model hash"),
            3: (by_file.name, "file name"),
        },
        "sd15-IN05-075": {
            1: (by_name.name, "model name"),
            2: (by_comfy.name, "ComfyUI checkpoint"),
            7: (jpeg.name, "file name"),
        },
        "sd15-IN0": {4: (by_file_longest.name, "file name")},
    }
    assert matches.unmatched == []
    assert matches.seeds == [1, 2, 3, 4, 7]


def test_what_finds_no_place(tmp_path: Path) -> None:
    images = tmp_path / "images"
    write_png(
        images / "a.png",
        text={"parameters": a1111_parameters(seed=1, model_hash="0123456789", model=None)},
    )
    write_png(
        images / "b.png",
        text={"parameters": a1111_parameters(seed=1, model_hash="0123456789", model=None)},
    )
    write_png(
        images / "c.png",
        text={"parameters": a1111_parameters(seed=1, model_hash="ffffffffff", model="zzz")},
    )
    write_png(images / "d.png", text={"Software": "paint"})
    write_png(images / "sd15-IN04-075x.png")
    (images / "e.txt").write_text("notes")
    matches = match_images(sorted(images.iterdir()), CANDIDATES)
    assert [(u.path.name, u.reason) for u in matches.unmatched] == [
        ("b.png", "a second image of sd15-IN04-075, seed 1 (the first is a.png)"),
        ("c.png", "its PNG info names model hash ffffffffff and model 'zzz': none of the models"),
        (
            "d.png",
            "no model information in the image, and its file name starts with no model's name",
        ),
        ("e.txt", "e.txt is not an image"),
        (
            "sd15-IN04-075x.png",
            "no model information in the image, and its file name starts with no model's name",
        ),
    ]
    assert matches.count() == 1
