"""The LDM ``AutoencoderKL`` VAE (f=8), as SD1, SD2 and SDXL ship it."""

from __future__ import annotations

from dataclasses import dataclass

from mergelang.arch.components import Layout
from mergelang.arch.parts.widths import conv, norm, scaled_width

__all__ = ["VAE_HEADS", "VAEConfig"]

VAE_HEADS: frozenset[str] = frozenset({"encoder", "decoder", "quant_conv", "post_quant_conv"})
"""First name segments of VAE keys: how a VAE saved on its own (no prefix) is recognised."""


@dataclass(frozen=True)
class VAEConfig:
    """The LDM ``AutoencoderKL`` hyper-parameters (SD1/SD2/SDXL: 4 latent channels; SD3 and
    Flux: 16, without the quant convs)."""

    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    z_channels: int = 4
    embed_dim: int = 4
    in_channels: int = 3
    out_channels: int = 3
    quant_conv: bool = True
    """Whether the 1x1 ``quant_conv``/``post_quant_conv`` exist (the SD3 and Flux VAEs with 16
    latent channels have none)."""

    def optional_keys(self) -> frozenset[str]:
        return frozenset()

    def layout(self, scale: float = 1.0, *, in_channels: int | None = None) -> Layout:
        """Every key of the VAE (local names) with its shape."""
        ch = scaled_width(self.ch, scale)
        levels = len(self.ch_mult)
        out: Layout = {}

        conv(out, "encoder.conv_in", ch, self.in_channels, 3)
        block_in = ch
        for level, mult in enumerate(self.ch_mult):
            for j in range(self.num_res_blocks):
                _vae_res(out, f"encoder.down.{level}.block.{j}", block_in, ch * mult)
                block_in = ch * mult
            if level != levels - 1:
                conv(out, f"encoder.down.{level}.downsample.conv", block_in, block_in, 3)
        _vae_mid(out, "encoder.mid", block_in)
        norm(out, "encoder.norm_out", block_in)
        conv(out, "encoder.conv_out", 2 * self.z_channels, block_in, 3)

        block_in = ch * self.ch_mult[-1]
        conv(out, "decoder.conv_in", block_in, self.z_channels, 3)
        _vae_mid(out, "decoder.mid", block_in)
        up: dict[int, Layout] = {}
        for level in reversed(range(levels)):
            part: Layout = {}
            block_out = ch * self.ch_mult[level]
            for j in range(self.num_res_blocks + 1):
                _vae_res(part, f"decoder.up.{level}.block.{j}", block_in, block_out)
                block_in = block_out
            if level != 0:
                conv(part, f"decoder.up.{level}.upsample.conv", block_in, block_in, 3)
            up[level] = part
        for level in range(levels):
            out.update(up[level])
        norm(out, "decoder.norm_out", block_in)
        conv(out, "decoder.conv_out", self.out_channels, block_in, 3)

        if self.quant_conv:
            conv(out, "quant_conv", 2 * self.embed_dim, 2 * self.z_channels, 1)
            conv(out, "post_quant_conv", self.z_channels, self.embed_dim, 1)
        return out


def _vae_res(out: Layout, name: str, cin: int, cout: int) -> None:
    norm(out, f"{name}.norm1", cin)
    conv(out, f"{name}.conv1", cout, cin, 3)
    norm(out, f"{name}.norm2", cout)
    conv(out, f"{name}.conv2", cout, cout, 3)
    if cin != cout:
        conv(out, f"{name}.nin_shortcut", cout, cin, 1)


def _vae_mid(out: Layout, name: str, c: int) -> None:
    _vae_res(out, f"{name}.block_1", c, c)
    norm(out, f"{name}.attn_1.norm", c)
    for part in ("q", "k", "v", "proj_out"):
        conv(out, f"{name}.attn_1.{part}", c, c, 1)
    _vae_res(out, f"{name}.block_2", c, c)
