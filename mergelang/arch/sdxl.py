"""Stable Diffusion XL base: SGM U-Net (3 levels, deep transformers, label_emb), CLIP-L + bigG."""

from __future__ import annotations

from mergelang.arch.base import (
    Architecture,
    KeyRule,
    TextEncoderSpec,
    UNetConfig,
    VAEConfig,
    register_architecture,
)
from mergelang.arch.blocks import SDXL_BLOCKS

SDXL = register_architecture(
    Architecture(
        name="sdxl",
        title="Stable Diffusion XL",
        blocks=SDXL_BLOCKS,
        unet_config=UNetConfig(
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
        ),
        text_encoders=(
            TextEncoderSpec(
                kind="hf_clip",
                title="CLIP ViT-L/14",
                prefix="conditioner.embedders.0.transformer.text_model.",
                width=768,
                layers=12,
                heads=12,
                optional_last_layer=True,
                optional_head=True,
                optional_position_ids=True,
            ),
            TextEncoderSpec(
                kind="open_clip",
                title="OpenCLIP ViT-bigG/14",
                prefix="conditioner.embedders.1.model.",
                width=1280,
                layers=32,
                heads=20,
                optional_last_layer=True,
                optional_head=True,
            ),
        ),
        vae=VAEConfig(),
        text_encoder_prefixes=("conditioner.",),
        signature=(
            KeyRule("model.diffusion_model.label_emb.0.0.weight", 40.0),
            KeyRule(
                "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight", 20.0
            ),
        ),
    )
)
