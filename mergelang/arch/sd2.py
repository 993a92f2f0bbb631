"""Stable Diffusion 2.x: LDM U-Net with linear projections, OpenCLIP ViT-H/14 text encoder."""

from __future__ import annotations

from mergelang.arch.base import (
    Architecture,
    KeyRule,
    TextEncoderSpec,
    UNetConfig,
    VAEConfig,
    register_architecture,
)
from mergelang.arch.blocks import SD_BLOCKS

SD2 = register_architecture(
    Architecture(
        name="sd2",
        title="Stable Diffusion 2.x",
        blocks=SD_BLOCKS,
        unet_config=UNetConfig(
            model_channels=320,
            channel_mult=(1, 2, 4, 4),
            num_res_blocks=2,
            attention_levels=(0, 1, 2),
            transformer_depth=(1, 1, 1, 0),
            transformer_depth_middle=1,
            context_dim=1024,
            linear_proj=True,
            head_channels=64,
        ),
        text_encoders=(
            TextEncoderSpec(
                kind="open_clip",
                title="OpenCLIP ViT-H/14",
                prefix="cond_stage_model.model.",
                width=1024,
                layers=24,
                heads=16,
                optional_last_layer=True,
                optional_head=True,
            ),
        ),
        vae=VAEConfig(),
        text_encoder_prefixes=("cond_stage_model.",),
        signature=(
            KeyRule("cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight", 20.0),
            KeyRule("model.diffusion_model.input_blocks.1.1.proj_in.weight", 40.0, ndim=2),
            KeyRule("model.diffusion_model.output_blocks.11.1.proj_out.weight", 40.0, ndim=2),
        ),
    )
)
