"""Stable Diffusion XL base: SGM U-Net (3 levels, deep transformers, label_emb), CLIP-L + bigG."""

from __future__ import annotations

import dataclasses

from mergelang.arch.architecture import Architecture, register_architecture
from mergelang.arch.components import Component, KeyRule
from mergelang.arch.parts.clip import TextEncoderSpec
from mergelang.arch.parts.ldm import (
    EMA_PREFIX,
    SCHEDULE_KEYS,
    VARIANTS,
    unet_component,
    vae_component,
)
from mergelang.arch.parts.unet import UNetConfig, unet_block_scheme

UNET = UNetConfig(
    model_channels=320,
    channel_mult=(1, 2, 4),
    num_res_blocks=2,
    attention_levels=(1, 2),
    transformer_depth=(0, 2, 10),
    transformer_depth_middle=10,
    context_dim=2048,
    linear_proj=True,
    adm_in_channels=2816,
    head_channels=64,
)

SDXL_UNET_SCHEME = dataclasses.replace(
    unet_block_scheme(
        UNET,
        name="sdxl_unet",
        title="SDXL",
        vector_doc="19 values are IN00..IN08, M00, OUT00..OUT08 and 20 put BASE first",
        vector_hint="19 values (20 with BASE first)",
    ),
    tolerated=frozenset(("IN09", "IN10", "IN11", "OUT09", "OUT10", "OUT11")),
)
"""The 19 blocks of the SDXL U-Net: a subset of SD1's 25 names. SD1 weight maps are used on
SDXL models by convention, so SD1's six extra names are a warning there, not an error."""

SDXL_BLOCKS = SDXL_UNET_SCHEME.blocks
"""IN00..IN08, M00, OUT00..OUT08: the order of SuperMerger's 19/20-value SDXL vectors."""

CLIP_L = TextEncoderSpec(
    kind="hf_clip",
    title="CLIP ViT-L/14",
    width=768,
    layers=12,
    heads=12,
    optional_last_layer=True,
    optional_head=True,
    optional_position_ids=True,
)

OPEN_CLIP_BIGG = TextEncoderSpec(
    kind="open_clip",
    title="OpenCLIP ViT-bigG/14",
    width=1280,
    layers=32,
    heads=20,
    optional_last_layer=True,
    optional_head=True,
)

SDXL = register_architecture(
    Architecture(
        name="sdxl",
        title="Stable Diffusion XL",
        components=(
            unet_component(UNET),
            vae_component(),
            Component(
                name="clip_l",
                title="text encoder CLIP ViT-L/14",
                role="text_encoder",
                prefix="conditioner.embedders.0.transformer.text_model.",
                spec=CLIP_L,
            ),
            Component(
                name="clip_g",
                title="text encoder OpenCLIP ViT-bigG/14",
                role="text_encoder",
                prefix="conditioner.embedders.1.model.",
                spec=OPEN_CLIP_BIGG,
            ),
        ),
        schemes=(SDXL_UNET_SCHEME,),
        signature=(
            KeyRule("model.diffusion_model.label_emb.0.0.weight", 40.0),
            KeyRule(
                "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight", 20.0
            ),
        ),
        claims=(("conditioner.", "text_encoder"),),
        variants=VARIANTS,
        ema_prefix=EMA_PREFIX,
        schedule_keys=SCHEDULE_KEYS,
        modelspec="stable-diffusion-xl-v1-base",
        prediction_markers=True,
    )
)
