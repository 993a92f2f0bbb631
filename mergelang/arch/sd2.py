"""Stable Diffusion 2.x: LDM U-Net with linear projections, OpenCLIP ViT-H/14 text encoder."""

from __future__ import annotations

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
from mergelang.arch.parts.unet import UNetConfig
from mergelang.arch.sd1 import SD_UNET_SCHEME

UNET = UNetConfig(
    model_channels=320,
    channel_mult=(1, 2, 4, 4),
    num_res_blocks=2,
    attention_levels=(0, 1, 2),
    transformer_depth=(1, 1, 1, 0),
    transformer_depth_middle=1,
    context_dim=1024,
    linear_proj=True,
    head_channels=64,
)

OPEN_CLIP_H = TextEncoderSpec(
    kind="open_clip",
    title="OpenCLIP ViT-H/14",
    width=1024,
    layers=24,
    heads=16,
    optional_last_layer=True,
    optional_head=True,
)

SD2 = register_architecture(
    Architecture(
        name="sd2",
        title="Stable Diffusion 2.x",
        components=(
            unet_component(UNET),
            vae_component(),
            Component(
                name="open_clip_h",
                title="text encoder OpenCLIP ViT-H/14",
                role="text_encoder",
                prefix="cond_stage_model.model.",
                spec=OPEN_CLIP_H,
            ),
        ),
        schemes=(SD_UNET_SCHEME,),
        signature=(
            KeyRule("cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight", 20.0),
            KeyRule("model.diffusion_model.input_blocks.1.1.proj_in.weight", 40.0, ndim=2),
            KeyRule("model.diffusion_model.output_blocks.11.1.proj_out.weight", 40.0, ndim=2),
        ),
        claims=(("cond_stage_model.", "text_encoder"),),
        variants=VARIANTS,
        ema_prefix=EMA_PREFIX,
        schedule_keys=SCHEDULE_KEYS,
        modelspec="stable-diffusion-v2-768-v",
    )
)
