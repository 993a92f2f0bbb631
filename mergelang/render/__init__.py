"""Rendering images of merge outputs, for the comparison page (the ``render`` extra).

- :mod:`~mergelang.render.parameters`: A1111's PNG-info text form, read and written.
- :mod:`~mergelang.render.tokenizer`: CLIP's tokenizer from the table open_clip ships.
- :mod:`~mergelang.render.configs`: the U-Net, VAE and text-encoder configs from the file's shapes.
- :mod:`~mergelang.render.pipeline`: a diffusers pipeline configured from the file itself.
- :mod:`~mergelang.render.open_clip`: OpenCLIP text-encoder keys as transformers' CLIP.
- :mod:`~mergelang.render.writer`: PNGs with A1111-style PNG info, one per model and seed.

Only :mod:`~mergelang.render.parameters` works without the extra; nothing here is imported
by ``import mergelang``.
"""

from __future__ import annotations

import importlib.util

from mergelang.errors import UsageError

__all__ = ["RENDER_PACKAGES", "missing_packages", "require_render_extra"]

RENDER_PACKAGES = {"diffusers": "diffusers", "transformers": "transformers", "PIL": "pillow"}
"""Import name -> distribution name of what rendering needs (open_clip's table is checked
where it is read, by :func:`mergelang.render.tokenizer.bpe_path`)."""


def missing_packages() -> list[str]:
    """The distributions of :data:`RENDER_PACKAGES` that are not installed."""
    return [
        dist for name, dist in RENDER_PACKAGES.items() if importlib.util.find_spec(name) is None
    ]


def require_render_extra() -> None:
    """Raise a :class:`~mergelang.errors.UsageError` naming the extra when it is missing."""
    missing = missing_packages()
    if missing:
        raise UsageError(
            f"mergelang render needs {', '.join(missing)}: pip install 'mergelang[render]'"
        )
