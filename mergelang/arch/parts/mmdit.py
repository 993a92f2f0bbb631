"""The MMDiT transformer of Stable Diffusion 3 and 3.5 (``joint_blocks``), and MMDiT-X.

The layout follows ``MMDiT`` in Stability AI's ``sd3_impls`` / ComfyUI's ``mmdit.py``: hidden
width 64 x depth (1536 for 24 blocks, 2432 for 38), heads of 64, every joint block an
``x_block`` and a ``context_block`` with ``adaLN_modulation.1``, ``attn.qkv``, ``attn.proj``
and ``mlp.fc1``/``fc2``. The last block's ``context_block`` is pre-only: its modulation has 2
chunks instead of 6 and it has no ``attn.proj`` and no MLP. SD3.5 adds RMS qk-norm
(``attn.ln_q``/``ln_k``); SD3.5 Medium (MMDiT-X) adds a second self-attention ``attn2`` to
the x blocks of its first 13 blocks, whose modulation then has 9 chunks. Scaled layouts
shrink the hidden width, the head width, the text widths and the position grid.
"""

from __future__ import annotations

from dataclasses import dataclass

from mergelang.arch.components import Layout
from mergelang.arch.parts.widths import linear, scaled_width

__all__ = ["MMDIT_TOP_LEVEL", "MMDiTConfig"]

MMDIT_TOP_LEVEL: frozenset[str] = frozenset(
    {
        "pos_embed",
        "joint_blocks",
        "x_embedder",
        "t_embedder",
        "y_embedder",
        "context_embedder",
        "final_layer",
    }
)
"""First name segments of MMDiT keys saved without a prefix (``pos_embed`` is a whole key)."""


@dataclass(frozen=True)
class MMDiTConfig:
    """The ``MMDiT`` hyper-parameters that decide key names and shapes."""

    depth: int
    pos_embed_max_size: int = 192
    qk_norm: bool = False
    x_attn2_blocks: int = 0
    """How many leading joint blocks have ``x_block.attn2`` (MMDiT-X: 13)."""
    head_dim: int = 64
    in_channels: int = 16
    patch_size: int = 2
    context_dim: int = 4096
    pooled_dim: int = 2048
    time_dim: int = 256

    @property
    def hidden(self) -> int:
        return 64 * self.depth

    def optional_keys(self) -> frozenset[str]:
        return frozenset()

    def layout(self, scale: float = 1.0, *, in_channels: int | None = None) -> Layout:
        """Every key of the transformer (local names) with its shape."""
        h = scaled_width(self.hidden, scale)
        head = scaled_width(self.head_dim, scale)
        grid = scaled_width(self.pos_embed_max_size, scale)
        cin = self.in_channels if in_channels is None else in_channels
        p = self.patch_size
        out: Layout = {}
        out["pos_embed"] = (1, grid * grid, h)
        out["x_embedder.proj.weight"] = (h, cin, p, p)
        out["x_embedder.proj.bias"] = (h,)
        linear(out, "t_embedder.mlp.0", h, self.time_dim)
        linear(out, "t_embedder.mlp.2", h, h)
        linear(out, "y_embedder.mlp.0", h, scaled_width(self.pooled_dim, scale))
        linear(out, "y_embedder.mlp.2", h, h)
        linear(out, "context_embedder", h, scaled_width(self.context_dim, scale))
        for n in range(self.depth):
            block = f"joint_blocks.{n}"
            last = n == self.depth - 1
            self._block(out, f"{block}.context_block", h, head, pre_only=last, attn2=False)
            self._block(
                out, f"{block}.x_block", h, head, pre_only=False, attn2=n < self.x_attn2_blocks
            )
        linear(out, "final_layer.linear", p * p * self.in_channels, h)
        linear(out, "final_layer.adaLN_modulation.1", 2 * h, h)
        return out

    def _block(
        self, out: Layout, name: str, h: int, head: int, *, pre_only: bool, attn2: bool
    ) -> None:
        chunks = 2 if pre_only else 9 if attn2 else 6
        linear(out, f"{name}.adaLN_modulation.1", chunks * h, h)
        attentions = ("attn", "attn2") if attn2 else ("attn",)
        for attn in attentions:
            linear(out, f"{name}.{attn}.qkv", 3 * h, h)
            if self.qk_norm:
                out[f"{name}.{attn}.ln_q.weight"] = (head,)
                out[f"{name}.{attn}.ln_k.weight"] = (head,)
            if not pre_only:
                linear(out, f"{name}.{attn}.proj", h, h)
        if not pre_only:
            linear(out, f"{name}.mlp.fc1", 4 * h, h)
            linear(out, f"{name}.mlp.fc2", h, 4 * h)
