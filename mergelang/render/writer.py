"""Render models and write PNGs that carry A1111-style PNG info.

Each image is ``<folder>/<model name>-<seed>.png`` with a ``parameters`` text chunk in
A1111's form (:func:`~mergelang.render.parameters.infotext`): ``Model hash:`` is the file's
AutoV2 hash and ``Model:`` its name, which is what :mod:`mergelang.report.matching` reads.
An image is written under a temporary name and renamed into place when complete.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mergelang.io.hashing import file_hashes
from mergelang.render.parameters import RenderParameters, infotext

__all__ = ["image_name", "render_models", "save_png"]


def image_name(model: Path, seed: int) -> str:
    return f"{model.stem}-{seed}.png"


def save_png(image: Any, path: Path, parameters: str) -> None:
    """``image`` (a PIL image) as a PNG at ``path`` with ``parameters`` as its PNG info."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", parameters)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(handle)
    try:
        image.save(temporary, format="PNG", pnginfo=info)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def render_models(
    models: Sequence[Path],
    params: RenderParameters,
    folder: Path,
    *,
    device: str = "cpu",
    dtype: str = "fp32",
    prediction: str = "auto",
    on_image: Callable[[Path], None] | None = None,
) -> list[Path]:
    """Every model rendered once per seed into ``folder``; the paths written, in order.
    One model is loaded at a time; ``prediction`` is ``auto`` or what every model predicts
    (see :func:`mergelang.render.pipeline.prediction_for`)."""
    from mergelang.render.pipeline import load_pipeline, render_images

    folder.mkdir(parents=True, exist_ok=True)
    tokenizers: dict[str, Any] = {}
    written: list[Path] = []
    for model in models:
        autov2 = file_hashes(model).autov2
        pipeline = load_pipeline(
            model, device=device, dtype=dtype, tokenizers=tokenizers, prediction=prediction
        )
        for rendered in render_images(pipeline, params):
            path = folder / image_name(model, rendered.seed)
            text = infotext(params, seed=rendered.seed, model_hash=autov2, model=model.stem)
            save_png(rendered.image, path, text)
            written.append(path)
            if on_image is not None:
                on_image(path)
        del pipeline
    return written
