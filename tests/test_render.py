"""``mergelang render``: A1111 parameters, CLIP's tokenizer, and a real diffusers render of
synthetic SD1 models at a tiny width (the images are noise; the pipeline is the real one)."""

from __future__ import annotations

import importlib.util
import struct
import zlib
from pathlib import Path

import pytest

from mergelang.errors import UsageError
from mergelang.render.parameters import RenderParameters, infotext, parse_parameters, parse_seeds
from mergelang.report.pnginfo import parse_a1111, read_png_text

HAS_DIFFUSERS = all(
    importlib.util.find_spec(name) is not None
    for name in ("diffusers", "transformers", "PIL", "open_clip")
)
needs_render = pytest.mark.skipif(not HAS_DIFFUSERS, reason="the render extra is not installed")

TEXT = (
    "a lighthouse at dusk, oil painting\n"
    "Negative prompt: blurry,\ntext\n"
    "Steps: 2, Sampler: DPM++ 2M Karras, CFG scale: 6.5, Seed: 1-2, Size: 64x64, Clip skip: 2"
)


def test_parameters_are_read_from_a1111_text() -> None:
    params = parse_parameters(TEXT)
    assert params == RenderParameters(
        prompt="a lighthouse at dusk, oil painting",
        negative_prompt="blurry,\ntext",
        steps=2,
        sampler="DPM++ 2M Karras",
        cfg_scale=6.5,
        seeds=(1, 2),
        width=64,
        height=64,
        extra={"Clip skip": "2"},
    )
    written = infotext(params, seed=2, model_hash="0123456789", model="sd15-IN04-075")
    assert written.splitlines()[-1] == (
        "Steps: 2, Sampler: DPM++ 2M Karras, CFG scale: 6.5, Seed: 2, Size: 64x64, "
        "Model hash: 0123456789, Model: sd15-IN04-075, Clip skip: 2"
    )
    # What the page reads back from it.
    info = parse_a1111(written)
    assert (info.model_hash, info.model_name, info.seed) == ("0123456789", "sd15-IN04-075", 2)
    again = parse_parameters(written)
    assert (again.prompt, again.negative_prompt, again.seeds) == (
        params.prompt,
        params.negative_prompt,
        (2,),
    )


def test_a_prompt_alone_takes_the_defaults() -> None:
    params = parse_parameters("a cat\n")
    assert (params.steps, params.sampler, params.seeds, params.width) == (20, "Euler a", (1,), 512)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Steps: 20, Seed: 1", "no prompt"),
        ("a cat\nSteps: twenty", "Steps: 'twenty' is not a number"),
        ("a cat\nSteps: 20, Size: 60x64", "each side a multiple of 8"),
        ("a cat\nSize: big", "write WIDTHxHEIGHT"),
        ("a cat\nSeed: 4-1", "the range 4-1 is empty"),
        ("a cat\nCFG scale: -1", "CFG scale must be positive"),
    ],
)
def test_bad_parameters_are_clear_errors(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=r"parameters|seeds") as caught:
        parse_parameters(text)
    assert message in str(caught.value)


def test_seeds_take_ranges_and_lists() -> None:
    assert parse_seeds("1-4") == (1, 2, 3, 4)
    assert parse_seeds("7, 3 3,9-10") == (7, 3, 9, 10)
    with pytest.raises(UsageError, match="'x' is not a seed"):
        parse_seeds("1,x")


@pytest.mark.skipif(importlib.util.find_spec("open_clip") is None, reason="no open_clip")
def test_the_tokenizer_is_clips_own_vocabulary() -> None:
    from mergelang.render.tokenizer import bpe_path, clip_vocabulary

    vocab, merges = clip_vocabulary(bpe_path())
    assert len(vocab) == 49408
    assert (vocab["<|startoftext|>"], vocab["<|endoftext|>"]) == (49406, 49407)
    assert vocab["!"] == 0 and vocab["a</w>"] == 320
    assert merges[0].split() == ["i", "n"] and vocab["in"] == 512


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _pixels(path: Path) -> bytes:
    data = path.read_bytes()
    found, position = b"", 8
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        if kind == b"IDAT":
            found += data[position + 8 : position + 8 + length]
        position += 12 + length
    return zlib.decompress(found)


@needs_render
def test_render_writes_pngs_with_a1111_info_and_the_page(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import mergelang
    from mergelang.cli import main
    from mergelang.io.hashing import file_hashes
    from mergelang.testing import make_checkpoint

    monkeypatch.setenv("MERGELANG_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    base = make_checkpoint(tmp_path / "base.safetensors", "sd1", seed=1)
    recipe = tmp_path / "study.merge"
    recipe.write_text(
        'model base = "base.safetensors"\n'
        "for blk in [IN04, OUT11]:\n"
        '    save base * {blk: 0.5, default: 1} to "out/base-{blk}.safetensors"\n',
        encoding="utf-8",
    )
    mergelang.run(recipe, cache_dir=tmp_path / "cache")
    (tmp_path / "params.txt").write_text(TEXT.replace("DPM++ 2M Karras", "Euler a"), "utf-8")
    argv = ["render", "study.merge", "--params", "params.txt", "--reference", "base.safetensors"]
    assert main([*argv, "--images", "renders", "-o", "study.html"]) == 0
    out = capsys.readouterr().out
    models = [base, tmp_path / "out/base-IN04.safetensors", tmp_path / "out/base-OUT11.safetensors"]
    for model in models:
        autov2 = file_hashes(model).autov2
        for seed in (1, 2):
            image = tmp_path / "renders" / f"{model.stem}-{seed}.png"
            assert _png_size(image) == (64, 64)
            info = parse_a1111(read_png_text(image)["parameters"])
            assert (info.model_hash, info.model_name, info.seed) == (autov2, model.stem, seed)
            text = read_png_text(image)["parameters"]
            assert text.startswith("a lighthouse at dusk, oil painting\nNegative prompt: blurry,")
            assert "Steps: 2, Sampler: Euler a, CFG scale: 6.5" in text
    # Seeds differ, so do the images; the same seed renders the same noise for one model.
    renders = tmp_path / "renders"
    assert _pixels(renders / "base-1.png") != _pixels(renders / "base-2.png")
    assert sorted(p.name for p in renders.iterdir()) == sorted(
        f"{m.stem}-{s}.png" for m in models for s in (1, 2)
    )
    assert "wrote study.html: 2 outputs" in out
    assert "in the U, 6 images, seeds 1, 2; reference base (2 images)" in out
    page = (tmp_path / "study.html").read_text(encoding="utf-8")
    assert 'src="renders/base-IN04-1.png"' in page


@needs_render
def test_render_refuses_a_model_it_cannot_draw(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mergelang.cli import main
    from mergelang.testing import make_checkpoint

    monkeypatch.setenv("MERGELANG_CACHE", str(tmp_path / "cache"))
    model = make_checkpoint(tmp_path / "flux.safetensors", "flux-dev", seed=1)
    argv = ["render", str(model), "--prompt", "a cat", "--images", str(tmp_path / "r")]
    assert main([*argv, "--no-page"]) == 1
    err = capsys.readouterr().err
    assert (
        "flux.safetensors" in err and "render draws SD1, SD2 and SDXL text-to-image models" in err
    )
    assert "flux-dev" in err and "T5-XXL, whose tokenizer" in err
    assert not any((tmp_path / "r").glob("*.png"))


def test_a_seed_list_needs_the_seeds_key() -> None:
    assert parse_parameters("a cat\nSteps: 2, Seeds: 3 1 2").seeds == (3, 1, 2)
    with pytest.raises(UsageError, match="cannot read the settings line at ' 2'"):
        parse_parameters("a cat\nSteps: 2, Seed: 1, 2")
