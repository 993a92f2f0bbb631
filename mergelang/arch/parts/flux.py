"""The Flux.1 transformer (Black Forest Labs): double-stream and single-stream blocks.

The layout follows ``flux.model.Flux`` in ``state_dict`` order; at ``scale=1`` the shapes are
the published ones (hidden 3072, 24 heads of 128, 19 double and 38 single blocks: 780 keys
for dev, 776 for schnell, which has no ``guidance_in``). Scaled layouts shrink the hidden
width, the head width and the text widths together; the image input (64 channels, 384 for
Fill, 128 for Depth) and the 256-wide timestep embedding keep their real sizes.
"""

from __future__ import annotations

from dataclasses import dataclass

from mergelang.arch.components import Layout
from mergelang.arch.parts.widths import linear, scaled_width

__all__ = ["FLUX_TOP_LEVEL", "FluxConfig"]

FLUX_TOP_LEVEL: frozenset[str] = frozenset(
    {
        "img_in",
        "txt_in",
        "time_in",
        "vector_in",
        "guidance_in",
        "double_blocks",
        "single_blocks",
        "final_layer",
    }
)
"""First name segments of Flux transformer keys: how a diffusion-only file with bare names
(as Black Forest Labs ship it) is recognised."""


@dataclass(frozen=True)
class FluxConfig:
    """The ``FluxParams`` that decide key names and shapes."""

    hidden: int = 3072
    head_dim: int = 128
    double_blocks: int = 19
    single_blocks: int = 38
    mlp_ratio: int = 4
    in_channels: int = 64
    context_dim: int = 4096
    """Width of the T5 text features ``txt_in`` reads."""
    vec_dim: int = 768
    """Width of the pooled CLIP-L vector ``vector_in`` reads."""
    time_dim: int = 256
    guidance: bool = True
    """Whether the model is guidance-distilled (dev) and has ``guidance_in``."""

    def optional_keys(self) -> frozenset[str]:
        return frozenset()

    def layout(self, scale: float = 1.0, *, in_channels: int | None = None) -> Layout:
        """Every key of the transformer (local names) with its shape."""
        head = scaled_width(self.head_dim, scale)
        h = scaled_width(self.hidden, scale)
        mlp = self.mlp_ratio * h
        cin = self.in_channels if in_channels is None else in_channels
        out: Layout = {}
        linear(out, "img_in", h, cin)
        _mlp_embedder(out, "time_in", h, self.time_dim)
        _mlp_embedder(out, "vector_in", h, scaled_width(self.vec_dim, scale))
        if self.guidance:
            _mlp_embedder(out, "guidance_in", h, self.time_dim)
        linear(out, "txt_in", h, scaled_width(self.context_dim, scale))
        for n in range(self.double_blocks):
            block = f"double_blocks.{n}"
            for stream in ("img", "txt"):
                linear(out, f"{block}.{stream}_mod.lin", 6 * h, h)
                linear(out, f"{block}.{stream}_attn.qkv", 3 * h, h)
                out[f"{block}.{stream}_attn.norm.query_norm.scale"] = (head,)
                out[f"{block}.{stream}_attn.norm.key_norm.scale"] = (head,)
                linear(out, f"{block}.{stream}_attn.proj", h, h)
                linear(out, f"{block}.{stream}_mlp.0", mlp, h)
                linear(out, f"{block}.{stream}_mlp.2", h, mlp)
        for n in range(self.single_blocks):
            block = f"single_blocks.{n}"
            linear(out, f"{block}.linear1", 3 * h + mlp, h)
            linear(out, f"{block}.linear2", h, h + mlp)
            out[f"{block}.norm.query_norm.scale"] = (head,)
            out[f"{block}.norm.key_norm.scale"] = (head,)
            linear(out, f"{block}.modulation.lin", 3 * h, h)
        linear(out, "final_layer.linear", self.in_channels, h)
        linear(out, "final_layer.adaLN_modulation.1", 2 * h, h)
        return out


def _mlp_embedder(out: Layout, name: str, hidden: int, width: int) -> None:
    linear(out, f"{name}.in_layer", hidden, width)
    linear(out, f"{name}.out_layer", hidden, hidden)
