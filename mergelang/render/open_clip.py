"""OpenCLIP text encoders (SD2's ViT-H, SDXL's bigG) as transformers' ``CLIPTextModel``.

An LDM checkpoint stores OpenCLIP's own names (``transformer.resblocks.N.attn.in_proj_weight``
and so on); transformers' CLIP text model has the same computation under other names. The
conversion is a pure rename except for three keys:

- ``attn.in_proj_weight`` ``[3W, W]`` (and its bias ``[3W]``) is q, k and v stacked in that
  order: rows ``0:W`` become ``q_proj``, ``W:2W`` ``k_proj``, ``2W:3W`` ``v_proj``;
- ``text_projection`` ``[W, P]`` is applied as ``x @ text_projection``, so it becomes the
  ``[P, W]`` weight of a bias-free linear layer: its transpose;
- ``logit_scale`` belongs to the image-text contrastive head and is dropped.

``layers`` limits the conversion to the first blocks: SD2 conditions on the penultimate
block's output, so its text model has one block fewer than the file (the last is unused).
Nothing here imports transformers; the tensors are torch tensors.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["RENAMES", "open_clip_layers", "open_clip_to_hf"]

RENAMES: Mapping[str, str] = {
    "ln_1.": "layer_norm1.",
    "ln_2.": "layer_norm2.",
    "attn.out_proj.": "self_attn.out_proj.",
    "mlp.c_fc.": "mlp.fc1.",
    "mlp.c_proj.": "mlp.fc2.",
}
"""OpenCLIP's names inside a residual block -> transformers' names inside an encoder layer."""

_TOP: Mapping[str, str] = {
    "token_embedding.weight": "embeddings.token_embedding.weight",
    "positional_embedding": "embeddings.position_embedding.weight",
    "ln_final.weight": "final_layer_norm.weight",
    "ln_final.bias": "final_layer_norm.bias",
}


def open_clip_layers(keys: Any, prefix: str) -> int:
    """How many residual blocks in a row (from 0) the keys under ``prefix`` hold."""
    present = set(keys)
    count = 0
    while f"{prefix}transformer.resblocks.{count}.attn.in_proj_weight" in present:
        count += 1
    return count


def open_clip_to_hf(
    tensors: Mapping[str, Any], prefix: str, *, layers: int, projection: bool
) -> dict[str, Any]:
    """The state dict of transformers' ``CLIPTextModel`` (``projection``: of
    ``CLIPTextModelWithProjection``, with ``text_projection.weight``) from the OpenCLIP keys
    under ``prefix``, keeping blocks ``0..layers-1``. Keys are without transformers'
    ``text_model.`` prefix; tensors are shared with ``tensors`` except the q/k/v slices
    and the transposed projection."""
    out: dict[str, Any] = {}
    for name, target in _TOP.items():
        if prefix + name in tensors:
            out[target] = tensors[prefix + name]
    if projection and prefix + "text_projection" in tensors:
        out["text_projection.weight"] = tensors[prefix + "text_projection"].T.contiguous()
    for n in range(layers):
        block = f"{prefix}transformer.resblocks.{n}."
        layer = f"encoder.layers.{n}."
        for kind in ("weight", "bias"):
            fused = tensors.get(f"{block}attn.in_proj_{kind}")
            if fused is None:
                continue
            width = fused.shape[0] // 3
            for index, part in enumerate(("q_proj", "k_proj", "v_proj")):
                piece = fused[index * width : (index + 1) * width]
                out[f"{layer}self_attn.{part}.{kind}"] = piece.contiguous()
        for old, new in RENAMES.items():
            for kind in ("weight", "bias"):
                key = f"{block}{old}{kind}"
                if key in tensors:
                    out[f"{layer}{new}{kind}"] = tensors[key]
    return out
