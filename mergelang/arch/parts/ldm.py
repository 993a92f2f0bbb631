"""What every LDM/SGM single-file checkpoint (SD1, SD2, SDXL) shares: the U-Net's place, the
VAE, the training extras and the inpainting / instruct-pix2pix variants."""

from __future__ import annotations

from types import MappingProxyType

from mergelang.arch.components import Component, VariantSpec
from mergelang.arch.parts.unet import UNET_TOP_LEVEL, UNetConfig
from mergelang.arch.parts.vae import VAEConfig

__all__ = [
    "EMA_PREFIX",
    "SCHEDULE_KEYS",
    "UNET_PREFIX",
    "VAE_PREFIX",
    "VARIANTS",
    "unet_component",
    "vae_component",
]

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
EMA_PREFIX = "model_ema."

SCHEDULE_KEYS: tuple[str, ...] = (
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
)
"""The DDPM noise-schedule buffers (shape [1000]) that LDM training checkpoints carry."""

VARIANTS = VariantSpec(
    key=UNET_PREFIX + "input_blocks.0.0.weight",
    dim=1,
    channels=MappingProxyType({"normal": 4, "inpainting": 9, "pix2pix": 8}),
    titles=MappingProxyType(
        {"normal": "normal", "inpainting": "inpainting", "pix2pix": "instruct-pix2pix"}
    ),
    modelspec_suffixes=MappingProxyType(
        {"inpainting": "-inpainting", "pix2pix": "-instruct-pix2pix"}
    ),
)
"""U-Net variants by the input channels of ``input_blocks.0.0.weight``."""


def unet_component(config: UNetConfig) -> Component:
    return Component(
        name="unet",
        title="U-Net",
        role="unet",
        prefix=UNET_PREFIX,
        spec=config,
        bare_heads=UNET_TOP_LEVEL,
    )


def vae_component() -> Component:
    return Component(name="vae", title="VAE", role="vae", prefix=VAE_PREFIX, spec=VAEConfig())
