"""Stable Diffusion 1.x: LDM U-Net with 1x1-conv projections, CLIP ViT-L/14 (HF layout)."""

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
from mergelang.arch.parts.unet import UNetConfig, unet_block_scheme

UNET = UNetConfig(
    model_channels=320,
    channel_mult=(1, 2, 4, 4),
    num_res_blocks=2,
    attention_levels=(0, 1, 2),
    transformer_depth=(1, 1, 1, 0),
    transformer_depth_middle=1,
    context_dim=768,
    linear_proj=False,
    num_heads=8,
)

SD_UNET_SCHEME = unet_block_scheme(
    UNET,
    name="sd_unet",
    title="SD1/SD2",
    vector_doc="25 values are IN00..IN11, M00, OUT00..OUT11; 26 put BASE first, then those 25",
    vector_hint="25 values (26 with BASE first)",
)
"""The 25 blocks of the SD1/SD2 U-Net (SD2 has the same topology and uses this scheme)."""

SD_BLOCKS = SD_UNET_SCHEME.blocks
"""IN00..IN11, M00, OUT00..OUT11: the order of MBW's 25-value vectors."""

CLIP_L = TextEncoderSpec(
    kind="hf_clip",
    title="CLIP ViT-L/14",
    width=768,
    layers=12,
    heads=12,
    optional_position_ids=True,
)

SD1 = register_architecture(
    Architecture(
        name="sd1",
        title="Stable Diffusion 1.x",
        components=(
            unet_component(UNET),
            vae_component(),
            Component(
                name="clip_l",
                title="text encoder CLIP ViT-L/14",
                role="text_encoder",
                prefix="cond_stage_model.transformer.text_model.",
                spec=CLIP_L,
            ),
        ),
        schemes=(SD_UNET_SCHEME,),
        signature=(
            KeyRule("cond_stage_model.transformer.text_model.final_layer_norm.weight", 20.0),
            KeyRule("model.diffusion_model.input_blocks.1.1.proj_in.weight", 40.0, ndim=4),
            KeyRule("model.diffusion_model.output_blocks.11.1.proj_out.weight", 40.0, ndim=4),
        ),
        claims=(("cond_stage_model.", "text_encoder"),),
        key_aliases=(
            ("cond_stage_model.transformer.", "cond_stage_model.transformer.text_model."),
        ),
        variants=VARIANTS,
        ema_prefix=EMA_PREFIX,
        schedule_keys=SCHEDULE_KEYS,
        modelspec="stable-diffusion-v1",
    )
)
