"""The comparison page on real merge outputs: matching, arrangement, bad input, the verb."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from report_helpers import comfyui_text, make_study, write_png
from run_helpers import declare, shared_models, write_recipe

import mergelang
from mergelang.cli import main
from mergelang.io.hashing import file_hashes
from mergelang.report.comparison import build_comparison
from mergelang.report.html import render_html
from mergelang.report.sources import output_paths


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    models = shared_models(tmp_path_factory, ["a", "xla"])
    return make_study(tmp_path_factory.mktemp("page-study"), models)


def _outputs(recipe: Path) -> list[Path]:
    paths, problems = output_paths([recipe])
    assert problems == []
    return paths


def test_the_study_is_a_u_with_every_image(study: Path) -> None:
    folder = study.parent
    comparison = build_comparison(_outputs(study), folder / "renders", cache_dir=folder / "cache")
    assert comparison.shape == "u"
    assert comparison.problems == [] and comparison.unmatched == []
    assert comparison.without_images == []
    assert comparison.seeds == [1, 2]
    assert comparison.image_count() == 52
    cells = {c.block: c for c in comparison.cells}
    assert (cells["IN00"].row, cells["IN00"].column) == (0, 0)
    assert (cells["IN11"].row, cells["IN11"].column) == (11, 0)
    assert (cells["M00"].row, cells["M00"].column) == (12, 1)
    assert (cells["OUT00"].row, cells["OUT00"].column) == (11, 2)
    assert (cells["OUT11"].row, cells["OUT11"].column) == (0, 2)
    in04 = cells["IN04"].output
    assert in04.name == "a-IN04"
    assert in04.bindings == {"blk": "IN04"}
    assert in04.weight_label == "a"
    assert dict(in04.changed) == {"IN04": -0.25}
    assert in04.weights is not None and in04.weights["IN04"] == 0.75
    assert in04.weights["BASE"] == 1 and in04.weights["OUT11"] == 1
    assert comparison.reference is not None and comparison.reference.stem == "a"
    assert sorted(comparison.reference_images) == [1, 2]
    assert {m.how for m in cells["OUT03"].images.values()} == {"model hash"}


def test_the_page_places_cells_and_references_images_relatively(study: Path) -> None:
    folder = study.parent
    comparison = build_comparison(_outputs(study), folder / "renders", cache_dir=folder / "cache")
    page = folder / "pages" / "study.html"
    html = render_html(comparison, page)
    assert 'data-block="IN00" data-order="0" style="grid-row: 1; grid-column: 1"' in html
    assert 'data-block="M00" data-order="12" style="grid-row: 13; grid-column: 2"' in html
    assert 'data-block="OUT11" data-order="24" style="grid-row: 1; grid-column: 3"' in html
    assert 'src="../renders/000-1.png"' in html
    assert "http" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert html.count('class="weights-chart"') == 25
    assert "IN04 −0.25" in html
    embedded = render_html(comparison, page, embed=True)
    assert embedded.count('src="data:image/png;base64,') == 52


def test_grid_of_blocks_by_strengths(tmp_path_factory: pytest.TempPathFactory) -> None:
    models = shared_models(tmp_path_factory, ["a", "b"])
    folder = tmp_path_factory.mktemp("page-grid")
    recipe = write_recipe(
        folder,
        declare(models, "a", "b")
        + "for blk in [IN04, OUT03]:\n    for w in [0.25, 0.5]:\n"
        + "        save weighted_sum(a, b, alpha={blk: w, default: 0})"
        + ' to "g/{blk}-{w}.safetensors"\n',
    )
    mergelang.run(recipe, cache_dir=folder / "cache")
    write_png(folder / "img" / "OUT03-0.5-3.png")
    comparison = build_comparison(_outputs(recipe), folder / "img", cache_dir=folder / "cache")
    assert comparison.shape == "grid"
    assert comparison.row_labels == ["blk = IN04", "blk = OUT03"]
    assert comparison.column_labels == ["w = 0.25", "w = 0.5"]
    placed = {c.output.name: (c.row, c.column) for c in comparison.cells}
    assert placed == {
        "IN04-0.25": (0, 0),
        "IN04-0.5": (0, 1),
        "OUT03-0.25": (1, 0),
        "OUT03-0.5": (1, 1),
    }
    out03 = next(c for c in comparison.cells if c.output.name == "OUT03-0.5")
    assert out03.output.weight_label == "weighted_sum.alpha"
    assert dict(out03.output.changed) == {"OUT03": 0.5}
    assert sorted(out03.images) == [3]
    assert comparison.without_images == ["IN04-0.25", "IN04-0.5", "OUT03-0.25"]
    assert comparison.problems == [
        "no images of the reference model a (AutoV2 "
        + (
            comparison.reference.autov2
            if comparison.reference and comparison.reference.autov2
            else ""
        )
        + ")"
    ]
    html = render_html(comparison, folder / "page.html")
    assert 'data-shape="grid"' in html and "w = 0.25" in html


def test_bad_input_is_listed_and_the_page_still_renders(
    study: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    models = shared_models(tmp_path_factory, ["a", "xla"])
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for name in ("a-IN00", "a-M00"):
        shutil.copyfile(study.parent / "out" / f"{name}.safetensors", mixed / f"{name}.safetensors")
    shutil.copyfile(models / "xla.safetensors", mixed / "xla.safetensors")
    (mixed / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    images = tmp_path / "images"
    write_png(images / "plain.png")
    write_png(images / "a-IN00-1.png")
    write_png(images / "a-IN00_1.png")
    (images / "readme.md").write_text("renders")
    paths, problems = output_paths([mixed])
    assert problems == []
    comparison = build_comparison(paths, images, cache_dir=tmp_path / "cache")
    assert comparison.shape == "u"
    assert [c.output.name for c in comparison.cells] == ["a-IN00", "a-M00"]
    assert comparison.problems[0].startswith("broken.safetensors: cannot be read (")
    assert comparison.problems[1:] == [
        "xla is a Stable Diffusion XL model and the page shows Stable Diffusion 1.x outputs: "
        "left out (make one page per architecture)",
        "no images of the reference model a (AutoV2 "
        + file_hashes(models / "a.safetensors", cache_dir=tmp_path / "cache").autov2
        + ")",
    ]
    assert [(u.path.name, u.reason) for u in comparison.unmatched] == [
        ("a-IN00_1.png", "a second image of a-IN00, seed 1 (the first is a-IN00-1.png)"),
        (
            "plain.png",
            "no model information in the image, and its file name starts with no model's name",
        ),
        ("readme.md", "readme.md is not an image"),
    ]
    assert comparison.without_images == ["a-M00"]
    html = render_html(comparison, tmp_path / "page.html")
    assert "readme.md: readme.md is not an image" in html
    assert "outputs without images: a-M00" in html
    # An input model itself: no recipe, so no weights and no reference.
    plain = build_comparison([models / "a.safetensors"], None, cache_dir=tmp_path / "cache")
    assert plain.shape == "grid"
    assert plain.problems == [
        "a.safetensors: no mergelang recipe in its metadata (weights unknown)",
        "no reference model: the outputs record no inputs (give --reference MODEL)",
    ]
    assert "weights unknown" in render_html(plain, tmp_path / "plain.html")


def test_the_verb(
    study: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MERGELANG_CACHE", str(study.parent / "cache"))
    monkeypatch.setenv("NO_COLOR", "1")
    images = tmp_path / "renders"
    shutil.copytree(study.parent / "renders", images)
    write_png(images / "extra.png", text=comfyui_text("nothing.safetensors", 1))
    page = tmp_path / "study.html"
    status = main(
        ["page", str(study), "--images", str(images), "-o", str(page), "--title", "A study"]
    )
    assert status == 0
    out, err = capsys.readouterr()
    assert out == (
        f"wrote {page}: 25 outputs in the U, 52 images, seeds 1, 2; reference a (2 images)\n"
    )
    assert err == (
        f"unmatched image {images / 'extra.png'}: its PNG info names model "
        "'nothing.safetensors': none of the models\n"
    )
    html = page.read_text(encoding="utf-8")
    assert "<title>A study</title>" in html
    assert main(["page", str(tmp_path / "nothing")]) == 2
    assert "no outputs to show: " in capsys.readouterr().err


def test_the_verb_does_not_import_torch(study: Path, tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from mergelang.cli import main\n"
        f"assert main(['page', {str(study)!r}, '--images', {str(study.parent / 'renders')!r}, "
        f"'-o', {str(tmp_path / 'p.html')!r}]) == 0\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    env = {**os.environ, "MERGELANG_CACHE": str(study.parent / "cache")}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "p.html").is_file()
