"""The LDM/SGM U-Net: its config, its key layout and the merge blocks that follow from it.

The layout follows the construction of ``UNetModel`` in the LDM/SGM code, in ``state_dict``
order; at ``scale=1`` the shapes are the published ones. The merge blocks are the U-Net's own
numbered blocks: ``input_blocks.N`` is ``IN{N}``, ``middle_block`` is ``M00`` and
``output_blocks.N`` is ``OUT{N}``, so SD1's config gives the classic 25 blocks and SDXL's 19.
"""

from __future__ import annotations

from dataclasses import dataclass

from mergelang.arch.components import Layout
from mergelang.arch.parts.widths import conv, linear, norm, scaled_width
from mergelang.arch.scheme import (
    BASE,
    LAST_BLOCK,
    BlockRule,
    BlockScheme,
    VectorForm,
)

__all__ = ["UNET_TOP_LEVEL", "UNetConfig", "unet_block_scheme"]

UNET_TOP_LEVEL: frozenset[str] = frozenset(
    {"time_embed", "label_emb", "input_blocks", "middle_block", "output_blocks", "out"}
)
"""First name segments of U-Net keys; a key starting with one of them and no prefix is a
U-Net key saved on its own (a "bare" U-Net file)."""


@dataclass(frozen=True)
class UNetConfig:
    """The LDM/SGM ``UNetModel`` hyper-parameters that decide key names and shapes."""

    model_channels: int
    channel_mult: tuple[int, ...]
    num_res_blocks: int
    attention_levels: tuple[int, ...]
    """Levels (indices into ``channel_mult``) whose res blocks are followed by a transformer."""
    transformer_depth: tuple[int, ...]
    """Transformer blocks per SpatialTransformer, per level (0 where there is no attention)."""
    transformer_depth_middle: int
    context_dim: int
    linear_proj: bool
    """``proj_in``/``proj_out`` as linear layers [C, C] (SD2, SDXL) or 1x1 convs (SD1)."""
    adm_in_channels: int | None = None
    """Width of SDXL's ``label_emb`` input (pooled text + size embeddings); None: no label_emb."""
    num_heads: int | None = None
    head_channels: int | None = None
    in_channels: int = 4
    out_channels: int = 4

    @property
    def input_block_count(self) -> int:
        levels = len(self.channel_mult)
        return 1 + levels * self.num_res_blocks + (levels - 1)

    @property
    def output_block_count(self) -> int:
        return len(self.channel_mult) * (self.num_res_blocks + 1)

    def optional_keys(self) -> frozenset[str]:
        return frozenset()

    def layout(self, scale: float = 1.0, *, in_channels: int | None = None) -> Layout:
        """Every key of the U-Net (local names) with its shape."""
        cfg = self
        mc = scaled_width(cfg.model_channels, scale)
        context = scaled_width(cfg.context_dim, scale)
        emb = 4 * mc
        levels = len(cfg.channel_mult)
        out: Layout = {}

        def depth_at(level: int) -> int:
            return cfg.transformer_depth[level] if level in cfg.attention_levels else 0

        def st(name: str, channels: int, depth: int) -> None:
            _spatial_transformer(out, name, channels, depth, context, cfg.linear_proj)

        linear(out, "time_embed.0", emb, mc)
        linear(out, "time_embed.2", emb, emb)
        if cfg.adm_in_channels is not None:
            linear(out, "label_emb.0.0", emb, scaled_width(cfg.adm_in_channels, scale))
            linear(out, "label_emb.0.2", emb, emb)

        cin = cfg.in_channels if in_channels is None else in_channels
        conv(out, "input_blocks.0.0", mc, cin, 3)
        skip_channels = [mc]
        ch = mc
        index = 1
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                _res_block(out, f"input_blocks.{index}.0", ch, mult * mc, emb)
                ch = mult * mc
                if depth_at(level):
                    st(f"input_blocks.{index}.1", ch, depth_at(level))
                skip_channels.append(ch)
                index += 1
            if level != levels - 1:
                conv(out, f"input_blocks.{index}.0.op", ch, ch, 3)
                skip_channels.append(ch)
                index += 1

        _res_block(out, "middle_block.0", ch, ch, emb)
        st("middle_block.1", ch, cfg.transformer_depth_middle)
        _res_block(out, "middle_block.2", ch, ch, emb)

        index = 0
        for level in reversed(range(levels)):
            mult = cfg.channel_mult[level]
            for i in range(cfg.num_res_blocks + 1):
                skip = skip_channels.pop()
                _res_block(out, f"output_blocks.{index}.0", ch + skip, mult * mc, emb)
                ch = mult * mc
                layer = 1
                if depth_at(level):
                    st(f"output_blocks.{index}.1", ch, depth_at(level))
                    layer = 2
                if level != 0 and i == cfg.num_res_blocks:
                    conv(out, f"output_blocks.{index}.{layer}.conv", ch, ch, 3)
                index += 1

        norm(out, "out.0", mc)
        conv(out, "out.2", cfg.out_channels, mc, 3)
        return out


def _res_block(out: Layout, name: str, cin: int, cout: int, emb: int) -> None:
    norm(out, f"{name}.in_layers.0", cin)
    conv(out, f"{name}.in_layers.2", cout, cin, 3)
    linear(out, f"{name}.emb_layers.1", cout, emb)
    norm(out, f"{name}.out_layers.0", cout)
    conv(out, f"{name}.out_layers.3", cout, cout, 3)
    if cin != cout:
        conv(out, f"{name}.skip_connection", cout, cin, 1)


def _spatial_transformer(
    out: Layout, name: str, channels: int, depth: int, context: int, linear_proj: bool
) -> None:
    c = channels

    def proj(part: str) -> None:
        if linear_proj:
            linear(out, f"{name}.{part}", c, c)
        else:
            conv(out, f"{name}.{part}", c, c, 1)

    norm(out, f"{name}.norm", c)
    proj("proj_in")
    for k in range(depth):
        block = f"{name}.transformer_blocks.{k}"
        for part in ("to_q", "to_k", "to_v"):
            linear(out, f"{block}.attn1.{part}", c, c, bias=False)
        linear(out, f"{block}.attn1.to_out.0", c, c)
        linear(out, f"{block}.ff.net.0.proj", 8 * c, c)
        linear(out, f"{block}.ff.net.2", c, 4 * c)
        linear(out, f"{block}.attn2.to_q", c, c, bias=False)
        linear(out, f"{block}.attn2.to_k", c, context, bias=False)
        linear(out, f"{block}.attn2.to_v", c, context, bias=False)
        linear(out, f"{block}.attn2.to_out.0", c, c)
        for norm_name in ("norm1", "norm2", "norm3"):
            norm(out, f"{block}.{norm_name}", c)
    proj("proj_out")


def unet_block_scheme(
    config: UNetConfig,
    *,
    name: str,
    title: str,
    vector_doc: str,
    vector_hint: str,
    component: str = "unet",
) -> BlockScheme:
    """The merge blocks of a U-Net with this config.

    Blocks ``IN00..IN{n-1}``, ``M00``, ``OUT00..OUT{m-1}``; groups ``IN``, ``M``, ``OUT``;
    plain vectors of every block (``n + 1 + m`` values) or ``BASE`` then every block. Keys:
    ``input_blocks.N.*`` -> ``IN{N}``, ``middle_block.*`` -> ``M00``,
    ``output_blocks.N.*`` -> ``OUT{N}``, ``out.*`` (final norm and conv) -> the last OUT
    block; ``time_embed.*``, ``label_emb.*`` and the VAE are convention slots; every other
    key goes with BASE.
    """
    ins = tuple(f"IN{i:02d}" for i in range(config.input_block_count))
    outs = tuple(f"OUT{i:02d}" for i in range(config.output_block_count))
    blocks = (*ins, "M00", *outs)
    return BlockScheme(
        name=name,
        title=title,
        blocks=blocks,
        groups={"IN": ins, "M": ("M00",), "OUT": outs},
        vectors=(VectorForm(blocks), VectorForm((BASE, *blocks))),
        rules=(
            BlockRule(component, ("input_blocks", "{n}"), "IN{n:02d}"),
            BlockRule(component, ("middle_block",), "M00"),
            BlockRule(component, ("output_blocks", "{n}"), "OUT{n:02d}"),
            BlockRule(component, ("out",), LAST_BLOCK),
            BlockRule(component, ("time_embed",), "@time_embed"),
            BlockRule(component, ("label_emb",), "@label_emb"),
            BlockRule("vae", (), "@vae"),
        ),
        vector_doc=vector_doc,
        vector_hint=vector_hint,
    )
