"""Stable Diffusion 1.x: LDM U-Net with 1x1-conv projections, CLIP ViT-L/14 (HF layout)."""

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

SD1 = register_architecture(
    Architecture(
        name="sd1",
        title="Stable Diffusion 1.x",
        blocks=SD_BLOCKS,
        unet_config=UNetConfig(
            model_channels=320,
            channel_mult=(1, 2, 4, 4),
            num_res_blocks=2,
            attention_levels=(0, 1, 2),
            transformer_depth=(1, 1, 1, 0),
            transformer_depth_middle=1,
            context_dim=768,
            linear_proj=False,
            num_heads=8,
        ),
        text_encoders=(
            TextEncoderSpec(
                kind="hf_clip",
                title="CLIP ViT-L/14",
                prefix="cond_stage_model.transformer.text_model.",
                width=768,
                layers=12,
                heads=12,
                optional_position_ids=True,
            ),
        ),
        vae=VAEConfig(),
        text_encoder_prefixes=("cond_stage_model.",),
        signature=(
            KeyRule("cond_stage_model.transformer.text_model.final_layer_norm.weight", 20.0),
            KeyRule("model.diffusion_model.input_blocks.1.1.proj_in.weight", 40.0, ndim=4),
            KeyRule("model.diffusion_model.output_blocks.11.1.proj_out.weight", 40.0, ndim=4),
        ),
        key_aliases=(
            ("cond_stage_model.transformer.", "cond_stage_model.transformer.text_model."),
        ),
    )
)
