"""The diffusers configs of an SD1, SD2 or SDXL checkpoint, built from mergelang's architecture
data and the widths the file's own shapes show (nothing is downloaded), and the key prefixes
of its parts. Shrunken (synthetic) models get GroupNorm's 32 groups or the largest count that
divides the narrowest width, and attention heads that divide their width; at full size both
are the published figures."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from mergelang.arch.parts.clip import TextEncoderSpec
from mergelang.arch.parts.unet import UNetConfig
from mergelang.arch.parts.vae import VAEConfig
from mergelang.arch.sd1 import CLIP_L
from mergelang.arch.sd1 import UNET as SD1_UNET
from mergelang.arch.sd2 import UNET as SD2_UNET
from mergelang.arch.sdxl import UNET as SDXL_UNET
from mergelang.errors import CheckpointError

__all__ = [
    "G_PREFIX",
    "H_PREFIX",
    "L_PREFIX",
    "VAE_SCALE",
    "clip_config",
    "open_clip_config",
    "unet_config",
    "vae_config",
]

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer.text_model."
GROUPS = 32
VAE_SCALE = 0.18215


def _groups(*widths: int) -> int:
    return math.gcd(GROUPS, *widths)


def _heads(width: int, wanted: int) -> int:
    """``wanted`` attention heads, or the most below it that divide ``width``."""
    return next(h for h in range(min(wanted, width), 0, -1) if width % h == 0)


TIME_IDS = 6
"""SDXL's size conditioning: original size, crop top-left, target size (two numbers each)."""
L_PREFIX = "conditioner.embedders.0.transformer.text_model."
G_PREFIX = "conditioner.embedders.1.model."
H_PREFIX = "cond_stage_model.model."


def _unet_spec(kind: str) -> UNetConfig:
    return {"sd1": SD1_UNET, "sd2": SD2_UNET, "sdxl": SDXL_UNET}[kind]


def unet_config(
    shapes: Mapping[str, tuple[int, ...]], kind: str = "sd1", *, where: str = "<checkpoint>"
) -> dict[str, Any]:
    """diffusers' ``UNet2DConditionModel`` config of an SD1, SD2 or SDXL U-Net with these
    shapes (``kind``); the structure comes from mergelang's U-Net data of that architecture."""
    spec = _unet_spec(kind)
    mc, in_channels = shapes[UNET_PREFIX + "input_blocks.0.0.weight"][:2]
    first = next(
        key
        for key in shapes
        if key.startswith(UNET_PREFIX) and key.endswith("transformer_blocks.0.attn2.to_k.weight")
    )
    context = shapes[first][1]
    levels = range(len(spec.channel_mult))
    down = [
        "CrossAttnDownBlock2D" if level in spec.attention_levels else "DownBlock2D"
        for level in levels
    ]
    up = [
        "CrossAttnUpBlock2D" if level in spec.attention_levels else "UpBlock2D"
        for level in reversed(levels)
    ]
    widths = [mc * m for m in spec.channel_mult]
    heads: int | list[int]
    if spec.head_channels is not None:
        # SD2 and SDXL fix the head width (64); diffusers' attention_head_dim is a head count
        heads = [_heads(w, max(1, w // spec.head_channels)) for w in widths]
    else:
        heads = spec.num_heads or 8
    config: dict[str, Any] = {
        "sample_size": 128 if kind == "sdxl" else 64,
        "in_channels": in_channels,
        "out_channels": spec.out_channels,
        "down_block_types": down,
        "up_block_types": up,
        "block_out_channels": widths,
        "layers_per_block": spec.num_res_blocks,
        "cross_attention_dim": context,
        "attention_head_dim": heads,
        "use_linear_projection": spec.linear_proj,
        "norm_num_groups": _groups(mc),
    }
    if kind == "sd2":
        config["upcast_attention"] = True
    if kind == "sdxl":
        config["transformer_layers_per_block"] = [max(1, d) for d in spec.transformer_depth]
        adm = shapes[UNET_PREFIX + "label_emb.0.0.weight"][1]
        width = shapes[G_PREFIX + "token_embedding.weight"][1]
        pooled = shapes.get(G_PREFIX + "text_projection", (width, width))[1]
        if (adm - pooled) <= 0 or (adm - pooled) % TIME_IDS:
            raise CheckpointError(
                where,
                f"label_emb takes {adm} values, which is not the pooled text ({pooled}) "
                f"plus {TIME_IDS} equal size embeddings",
                code="render-shape",
            )
        config.update(
            addition_embed_type="text_time",
            addition_embed_type_num_heads=64,
            addition_time_embed_dim=(adm - pooled) // TIME_IDS,
            projection_class_embeddings_input_dim=adm,
        )
    return config


def vae_config(
    shapes: Mapping[str, tuple[int, ...]], scaling_factor: float = VAE_SCALE
) -> dict[str, Any]:
    """diffusers' ``AutoencoderKL`` config of an LDM VAE with these shapes."""
    spec = VAEConfig()
    ch = shapes[VAE_PREFIX + "encoder.conv_in.weight"][0]
    count = len(spec.ch_mult)
    return {
        "in_channels": spec.in_channels,
        "out_channels": spec.out_channels,
        "down_block_types": ["DownEncoderBlock2D"] * count,
        "up_block_types": ["UpDecoderBlock2D"] * count,
        "block_out_channels": [ch * m for m in spec.ch_mult],
        "layers_per_block": spec.num_res_blocks,
        "latent_channels": spec.z_channels,
        "norm_num_groups": _groups(ch),
        "sample_size": 512,
        "scaling_factor": scaling_factor,
    }


def clip_config(
    shapes: Mapping[str, tuple[int, ...]], prefix: str = CLIP_PREFIX, layers: int | None = None
) -> dict[str, Any]:
    """transformers' ``CLIPTextConfig`` of a CLIP ViT-L/14 text encoder with these shapes
    (``layers``: how many of its layers to build; default all the file has)."""
    vocab, width = shapes[prefix + "embeddings.token_embedding.weight"]
    positions = shapes[prefix + "embeddings.position_embedding.weight"][0]
    if layers is None:
        layers = 0
        while f"{prefix}encoder.layers.{layers}.mlp.fc1.weight" in shapes:
            layers += 1
    intermediate = shapes[f"{prefix}encoder.layers.0.mlp.fc1.weight"][0]
    return {
        "vocab_size": vocab,
        "hidden_size": width,
        "intermediate_size": intermediate,
        "num_hidden_layers": layers,
        "num_attention_heads": _heads(width, CLIP_L.heads),
        "max_position_embeddings": positions,
        "hidden_act": "quick_gelu",
        "projection_dim": width,
        "bos_token_id": 49406 % vocab,
        "eos_token_id": 49407 % vocab,
        "pad_token_id": 49407 % vocab,
    }


def open_clip_config(
    shapes: Mapping[str, tuple[int, ...]], prefix: str, spec: TextEncoderSpec, layers: int
) -> dict[str, Any]:
    """transformers' ``CLIPTextConfig`` of an OpenCLIP text encoder (ViT-H, bigG) with these
    shapes, built with ``layers`` blocks; OpenCLIP pads with token 0 (``!``)."""
    vocab, width = shapes[prefix + "token_embedding.weight"]
    positions = shapes[prefix + "positional_embedding"][0]
    intermediate = shapes[f"{prefix}transformer.resblocks.0.mlp.c_fc.weight"][0]
    projection = shapes.get(prefix + "text_projection", (width, width))[1]
    return {
        "vocab_size": vocab,
        "hidden_size": width,
        "intermediate_size": intermediate,
        "num_hidden_layers": layers,
        "num_attention_heads": _heads(width, spec.heads),
        "max_position_embeddings": positions,
        "hidden_act": "gelu",
        "projection_dim": projection,
        "bos_token_id": 49406 % vocab,
        "eos_token_id": 49407 % vocab,
        "pad_token_id": 0,
    }
