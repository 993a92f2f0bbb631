"""The T5 v1.1 encoder (Hugging Face ``T5EncoderModel`` names), as Flux and SD3 ship T5-XXL."""

from __future__ import annotations

from dataclasses import dataclass

from mergelang.arch.components import Layout
from mergelang.arch.parts.widths import scaled_width

__all__ = ["T5EncoderSpec"]


@dataclass(frozen=True)
class T5EncoderSpec:
    """A T5 v1.1 encoder: gated-GELU feed-forward (``wi_0``, ``wi_1``), no biases, relative
    attention buckets in the first block only. T5-XXL: 24 blocks, width 4096, 64 heads of 64,
    feed-forward 10240, 32128 tokens (219 keys, 4.76B parameters)."""

    title: str = "T5-XXL"
    width: int = 4096
    layers: int = 24
    heads: int = 64
    head_dim: int = 64
    ff_width: int = 10240
    vocab_size: int = 32128
    buckets: int = 32

    def optional_keys(self) -> frozenset[str]:
        return frozenset()

    def layout(self, scale: float = 1.0, *, in_channels: int | None = None) -> Layout:
        """Every key (local names) with its shape; ``in_channels`` does not apply."""
        w = scaled_width(self.width, scale)
        heads = scaled_width(self.heads, scale)
        inner = scaled_width(self.heads * self.head_dim, scale)
        ff = scaled_width(self.ff_width, scale)
        out: Layout = {}
        for n in range(self.layers):
            attn = f"encoder.block.{n}.layer.0"
            for proj in ("q", "k", "v"):
                out[f"{attn}.SelfAttention.{proj}.weight"] = (inner, w)
            out[f"{attn}.SelfAttention.o.weight"] = (w, inner)
            if n == 0:
                out[f"{attn}.SelfAttention.relative_attention_bias.weight"] = (self.buckets, heads)
            out[f"{attn}.layer_norm.weight"] = (w,)
            ff_layer = f"encoder.block.{n}.layer.1"
            out[f"{ff_layer}.DenseReluDense.wi_0.weight"] = (ff, w)
            out[f"{ff_layer}.DenseReluDense.wi_1.weight"] = (ff, w)
            out[f"{ff_layer}.DenseReluDense.wo.weight"] = (w, ff)
            out[f"{ff_layer}.layer_norm.weight"] = (w,)
        out["encoder.final_layer_norm.weight"] = (w,)
        out["shared.weight"] = (scaled_width(self.vocab_size, scale), w)
        return out
