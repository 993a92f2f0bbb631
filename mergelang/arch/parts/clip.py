"""CLIP text encoders: Hugging Face ``CLIPTextModel`` names and OpenCLIP's text transformer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mergelang.arch.components import Layout
from mergelang.arch.parts.widths import linear, norm, scaled_width

__all__ = ["TextEncoderSpec"]


@dataclass(frozen=True)
class TextEncoderSpec:
    """One CLIP text encoder: its layout family and size.

    ``kind`` is ``"hf_clip"`` (Hugging Face ``CLIPTextModel`` names: ``encoder.layers.N``) or
    ``"open_clip"`` (``transformer.resblocks.N``). The ``optional_*`` flags name the keys some
    published files leave out because the model never uses them: the last layer when the
    penultimate layer's output is used, the final norm / projection / logit scale, and the
    ``position_ids`` buffer that newer ``transformers`` versions no longer save.
    """

    kind: Literal["hf_clip", "open_clip"]
    title: str
    width: int
    layers: int
    heads: int
    vocab_size: int = 49408
    max_positions: int = 77
    optional_last_layer: bool = False
    optional_head: bool = False
    optional_position_ids: bool = False

    def layout(self, scale: float = 1.0, *, in_channels: int | None = None) -> Layout:
        """Every key (local names) with its shape; ``in_channels`` does not apply."""
        return _hf_clip(self, scale) if self.kind == "hf_clip" else _open_clip(self, scale)

    def optional_keys(self) -> frozenset[str]:
        """Local names of the keys published files may leave out (see the class docstring)."""
        keys: list[str] = []
        last = self.layers - 1
        if self.kind == "hf_clip":
            if self.optional_position_ids:
                keys.append("embeddings.position_ids")
            if self.optional_head:
                keys += ["final_layer_norm.weight", "final_layer_norm.bias"]
            if self.optional_last_layer:
                head = f"encoder.layers.{last}."
                keys += [k for k in _hf_clip(self, 1.0) if k.startswith(head)]
        else:
            if self.optional_head:
                keys += ["ln_final.weight", "ln_final.bias", "text_projection", "logit_scale"]
            if self.optional_last_layer:
                head = f"transformer.resblocks.{last}."
                keys += [k for k in _open_clip(self, 1.0) if k.startswith(head)]
        return frozenset(keys)


def _hf_clip(spec: TextEncoderSpec, scale: float) -> Layout:
    w = scaled_width(spec.width, scale)
    vocab = scaled_width(spec.vocab_size, scale)
    out: Layout = {}
    out["embeddings.position_ids"] = (1, spec.max_positions)
    out["embeddings.token_embedding.weight"] = (vocab, w)
    out["embeddings.position_embedding.weight"] = (spec.max_positions, w)
    for n in range(spec.layers):
        layer = f"encoder.layers.{n}"
        for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
            linear(out, f"{layer}.self_attn.{proj}", w, w)
        norm(out, f"{layer}.layer_norm1", w)
        linear(out, f"{layer}.mlp.fc1", 4 * w, w)
        linear(out, f"{layer}.mlp.fc2", w, 4 * w)
        norm(out, f"{layer}.layer_norm2", w)
    norm(out, "final_layer_norm", w)
    return out


def _open_clip(spec: TextEncoderSpec, scale: float) -> Layout:
    w = scaled_width(spec.width, scale)
    vocab = scaled_width(spec.vocab_size, scale)
    out: Layout = {}
    out["positional_embedding"] = (spec.max_positions, w)
    out["text_projection"] = (w, w)
    out["logit_scale"] = ()
    for n in range(spec.layers):
        block = f"transformer.resblocks.{n}"
        norm(out, f"{block}.ln_1", w)
        out[f"{block}.attn.in_proj_weight"] = (3 * w, w)
        out[f"{block}.attn.in_proj_bias"] = (3 * w,)
        linear(out, f"{block}.attn.out_proj", w, w)
        norm(out, f"{block}.ln_2", w)
        linear(out, f"{block}.mlp.c_fc", 4 * w, w)
        linear(out, f"{block}.mlp.c_proj", w, 4 * w)
    out["token_embedding.weight"] = (vocab, w)
    norm(out, "ln_final", w)
    return out
