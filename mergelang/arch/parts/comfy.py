"""Text encoders the way ComfyUI saves them inside a checkpoint (Flux, SD3):
``text_encoders.NAME.transformer.*`` holds the Hugging Face model, ``text_model.`` below it
for CLIP, with the CLIP projection and ``logit_scale`` beside it where the file has them."""

from __future__ import annotations

from dataclasses import dataclass

from mergelang.arch.components import Layout
from mergelang.arch.parts.clip import TextEncoderSpec
from mergelang.arch.parts.t5 import T5EncoderSpec
from mergelang.arch.parts.widths import scaled_width

__all__ = ["ComfyTextEncoder"]


@dataclass(frozen=True)
class ComfyTextEncoder:
    """A text encoder under ``transformer.`` (CLIP under ``transformer.text_model.``).

    ``projection`` adds CLIP's ``transformer.text_projection.weight`` [w, w]; ``logit_scale``
    adds the scalar ``logit_scale`` (SD3 files carry one for every text encoder, T5 included).
    Both are optional keys: files made by other tools leave them out.
    """

    encoder: TextEncoderSpec | T5EncoderSpec
    projection: bool = False
    logit_scale: bool = False

    @property
    def title(self) -> str:
        return self.encoder.title

    @property
    def _head(self) -> str:
        return (
            "transformer.text_model."
            if isinstance(self.encoder, TextEncoderSpec)
            else ("transformer.")
        )

    def layout(self, scale: float = 1.0, *, in_channels: int | None = None) -> Layout:
        """Every key (local names) with its shape; ``in_channels`` does not apply."""
        out: Layout = {}
        if self.logit_scale:
            out["logit_scale"] = ()
        head = self._head
        for key, shape in self.encoder.layout(scale).items():
            out[head + key] = shape
        if self.projection:
            width = scaled_width(self.encoder.width, scale)
            out["transformer.text_projection.weight"] = (width, width)
        return out

    def optional_keys(self) -> frozenset[str]:
        """The encoder's own optional keys, the projection and ``logit_scale``."""
        keys = {self._head + key for key in self.encoder.optional_keys()}
        if self.logit_scale:
            keys.add("logit_scale")
        if self.projection:
            keys.add("transformer.text_projection.weight")
        return frozenset(keys)
