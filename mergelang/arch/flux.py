"""Flux.1 (Black Forest Labs): dev and schnell, with the Fill and Depth variants of dev.

A checkpoint holds the transformer under ``model.diffusion_model.``, the 16-channel VAE under
``vae.`` and the text encoders under ``text_encoders.clip_l.`` and ``text_encoders.t5xxl.``
(ComfyUI's all-in-one layout); Black Forest Labs ship the transformer alone with bare names
(``double_blocks.0.img_attn.qkv.weight``), which is read as the same keys.

dev and schnell are two architectures with one block scheme: schnell is step-distilled and
has no ``guidance_in`` input, so the two do not line up key for key and a merge of one with
the other is refused (naming what differs) rather than silently taking dev's guidance
embedding. Fill (``img_in`` reads 384 channels) and Depth (128) are variants of dev, merged
with a normal dev model on the common 64 channels like an inpainting U-Net.

The block scheme is SuperMerger's: ``CLIP, T5, IN, D00..D18, S00..S37, OUT`` (61 names, its
vector order); ``*_in`` keys are IN, ``final_layer`` is OUT, and the VAE is never merged.
"""

from __future__ import annotations

from types import MappingProxyType

from mergelang.arch.architecture import Architecture, register_architecture
from mergelang.arch.components import Component, KeyRule, VariantSpec
from mergelang.arch.parts.clip import TextEncoderSpec
from mergelang.arch.parts.comfy import ComfyTextEncoder
from mergelang.arch.parts.flux import FLUX_TOP_LEVEL, FluxConfig
from mergelang.arch.parts.t5 import T5EncoderSpec
from mergelang.arch.parts.vae import VAEConfig
from mergelang.arch.scheme import BlockRule, BlockScheme, VectorForm

__all__ = [
    "FLUX_BLOCKS",
    "FLUX_DEV",
    "FLUX_SCHEME",
    "FLUX_SCHNELL",
    "FLUX_VARIANTS",
    "flux_components",
]

PREFIX = "model.diffusion_model."
DOUBLE = tuple(f"D{i:02d}" for i in range(19))
SINGLE = tuple(f"S{i:02d}" for i in range(38))
FLUX_BLOCKS: tuple[str, ...] = ("CLIP", "T5", "IN", *DOUBLE, *SINGLE, "OUT")
"""SuperMerger's 61 Flux block names, in the order of its 61-value vectors."""

FLUX_SCHEME = BlockScheme(
    name="flux",
    title="Flux.1",
    blocks=FLUX_BLOCKS,
    groups={"D": DOUBLE, "S": SINGLE},
    vectors=(VectorForm(FLUX_BLOCKS), VectorForm(("IN", *DOUBLE, *SINGLE, "OUT"))),
    rules=(
        BlockRule("transformer", ("double_blocks", "{n}"), "D{n:02d}"),
        BlockRule("transformer", ("single_blocks", "{n}"), "S{n:02d}"),
        *(
            BlockRule("transformer", (head,), "IN")
            for head in ("img_in", "txt_in", "time_in", "vector_in", "guidance_in")
        ),
        BlockRule("transformer", ("final_layer",), "OUT"),
        BlockRule("clip_l", (), "CLIP"),
        BlockRule("t5xxl", (), "T5"),
        BlockRule("vae", (), None),
    ),
    vector_doc=(
        "61 values are CLIP, T5, IN, D00..D18, S00..S37, OUT (SuperMerger's order) and 59 "
        "leave out CLIP and T5"
    ),
    vector_hint="61 values (59 without CLIP and T5)",
    follows_base=frozenset({"CLIP", "T5"}),
)
"""The Flux block scheme, shared by dev and schnell."""

FLUX_VARIANTS = VariantSpec(
    key=PREFIX + "img_in.weight",
    dim=1,
    channels=MappingProxyType({"normal": 64, "fill": 384, "depth": 128}),
    titles=MappingProxyType({"normal": "normal", "fill": "Fill", "depth": "Depth"}),
    component_title="transformer",
    modelspec_suffixes=MappingProxyType({"fill": "-fill", "depth": "-depth"}),
)
"""Flux.1 dev variants by the input channels of ``img_in.weight``: Fill reads the image, the
mask and the masked image (384), Depth the image and a depth map (128)."""

CLIP_L = TextEncoderSpec(
    kind="hf_clip",
    title="CLIP ViT-L/14",
    width=768,
    layers=12,
    heads=12,
    optional_position_ids=True,
)
T5XXL = T5EncoderSpec()
FLUX_VAE = VAEConfig(z_channels=16, embed_dim=16, quant_conv=False)


def flux_components(transformer: FluxConfig) -> tuple[Component, ...]:
    """The parts of a Flux.1 checkpoint with this transformer."""
    return (
        Component(
            name="transformer",
            title="Flux transformer",
            role="transformer",
            prefix=PREFIX,
            spec=transformer,
            bare_heads=FLUX_TOP_LEVEL,
        ),
        Component(name="vae", title="VAE", role="vae", prefix="vae.", spec=FLUX_VAE),
        Component(
            name="clip_l",
            title="text encoder CLIP ViT-L/14",
            role="text_encoder",
            prefix="text_encoders.clip_l.",
            spec=ComfyTextEncoder(CLIP_L),
        ),
        Component(
            name="t5xxl",
            title="text encoder T5-XXL",
            role="text_encoder",
            prefix="text_encoders.t5xxl.",
            spec=ComfyTextEncoder(T5XXL),
        ),
    )


FLUX_DEV = register_architecture(
    Architecture(
        name="flux-dev",
        title="Flux.1 dev",
        components=flux_components(FluxConfig(guidance=True)),
        schemes=(FLUX_SCHEME,),
        signature=(
            KeyRule(PREFIX + "double_blocks.0.img_attn.norm.key_norm.scale", 40.0, ndim=1),
            KeyRule(PREFIX + "guidance_in.in_layer.weight", 20.0, ndim=2),
        ),
        variants=FLUX_VARIANTS,
        modelspec="flux-1-dev",
    )
)

FLUX_SCHNELL = register_architecture(
    Architecture(
        name="flux-schnell",
        title="Flux.1 schnell",
        components=flux_components(FluxConfig(guidance=False)),
        schemes=(FLUX_SCHEME,),
        signature=(
            KeyRule(PREFIX + "double_blocks.0.img_attn.norm.key_norm.scale", 40.0, ndim=1),
            KeyRule(PREFIX + "guidance_in.in_layer.weight", -20.0, ndim=2),
        ),
        modelspec="flux-1-schnell",
    )
)
