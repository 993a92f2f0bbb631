"""Stable Diffusion 3 Medium, SD3.5 Medium (MMDiT-X) and SD3.5 Large.

A checkpoint holds the MMDiT under ``model.diffusion_model.``, the 16-channel VAE under
``first_stage_model.`` and three text encoders under ``text_encoders.clip_l.``,
``text_encoders.clip_g.`` and ``text_encoders.t5xxl.`` (the layout Stability AI and ComfyUI
save). The three are separate architectures: SD3.5 adds qk-norm keys SD3 does not have, SD3.5
Medium adds ``attn2`` to its first 13 blocks, and SD3.5 Large has 38 blocks of width 2432.

Block schemes: ``IN, J00..J23, OUT`` for the 24-block models and ``IN, J00..J37, OUT`` for
Large (the embedders are IN, ``final_layer`` is OUT, as ComfyUI's ModelMergeSD3 sliders
group them), with ``CLIP_L``, ``CLIP_G``, ``T5`` and ``VAE`` as blocks of their own that
follow BASE unless set; the group ``J`` is every joint block.
"""

from __future__ import annotations

from mergelang.arch.architecture import Architecture, register_architecture
from mergelang.arch.components import Component, KeyRule
from mergelang.arch.parts.clip import TextEncoderSpec
from mergelang.arch.parts.comfy import ComfyTextEncoder
from mergelang.arch.parts.mmdit import MMDIT_TOP_LEVEL, MMDiTConfig
from mergelang.arch.parts.t5 import T5EncoderSpec
from mergelang.arch.parts.vae import VAEConfig
from mergelang.arch.scheme import BASE, BlockRule, BlockScheme, VectorForm

__all__ = [
    "SD3_MEDIUM",
    "SD3_SCHEME",
    "SD35_LARGE",
    "SD35_LARGE_SCHEME",
    "SD35_MEDIUM",
    "mmdit_scheme",
    "sd3_components",
]

PREFIX = "model.diffusion_model."
ENCODERS = ("CLIP_L", "CLIP_G", "T5", "VAE")
EMBEDDERS = ("pos_embed", "x_embedder", "t_embedder", "y_embedder", "context_embedder")


def mmdit_scheme(depth: int, *, name: str, title: str) -> BlockScheme:
    """The blocks of an MMDiT with ``depth`` joint blocks: ``IN, J00.., OUT`` then the text
    encoders and the VAE; vectors of ``depth + 2`` values (``depth + 3`` with BASE first)."""
    joints = tuple(f"J{i:02d}" for i in range(depth))
    main = ("IN", *joints, "OUT")
    last = joints[-1]
    return BlockScheme(
        name=name,
        title=title,
        blocks=(*main, *ENCODERS),
        groups={"J": joints},
        vectors=(VectorForm(main), VectorForm((BASE, *main))),
        rules=(
            BlockRule("transformer", ("joint_blocks", "{n}"), "J{n:02d}"),
            BlockRule("transformer", ("pos_embed",), "IN", whole=True),
            *(BlockRule("transformer", (head,), "IN") for head in EMBEDDERS[1:]),
            BlockRule("transformer", ("final_layer",), "OUT"),
            BlockRule("clip_l", (), "CLIP_L"),
            BlockRule("clip_g", (), "CLIP_G"),
            BlockRule("t5xxl", (), "T5"),
            BlockRule("vae", (), "VAE"),
        ),
        vector_doc=(
            f"{len(main)} values are IN, J00..{last}, OUT and {len(main) + 1} put BASE first"
        ),
        vector_hint=f"{len(main)} values ({len(main) + 1} with BASE first)",
        follows_base=frozenset(ENCODERS),
    )


SD3_SCHEME = mmdit_scheme(24, name="sd3_mmdit24", title="SD3/SD3.5 Medium")
"""The 24 joint blocks of SD3 Medium and SD3.5 Medium."""
SD35_LARGE_SCHEME = mmdit_scheme(38, name="sd3_mmdit38", title="SD3.5 Large")
"""The 38 joint blocks of SD3.5 Large."""

CLIP_L = TextEncoderSpec(kind="hf_clip", title="CLIP ViT-L/14", width=768, layers=12, heads=12)
CLIP_G = TextEncoderSpec(
    kind="hf_clip", title="OpenCLIP ViT-bigG/14", width=1280, layers=32, heads=20
)
SD3_VAE = VAEConfig(z_channels=16, embed_dim=16, quant_conv=False)


def sd3_components(transformer: MMDiTConfig) -> tuple[Component, ...]:
    """The parts of an SD3/SD3.5 checkpoint with this transformer."""

    def encoder(name: str, title: str, spec: TextEncoderSpec | T5EncoderSpec) -> Component:
        projection = isinstance(spec, TextEncoderSpec)
        return Component(
            name=name,
            title=f"text encoder {title}",
            role="text_encoder",
            prefix=f"text_encoders.{name}.",
            spec=ComfyTextEncoder(spec, projection=projection, logit_scale=True),
        )

    return (
        Component(
            name="transformer",
            title="MMDiT",
            role="transformer",
            prefix=PREFIX,
            spec=transformer,
            bare_heads=MMDIT_TOP_LEVEL,
        ),
        Component(name="vae", title="VAE", role="vae", prefix="first_stage_model.", spec=SD3_VAE),
        encoder("clip_l", "CLIP ViT-L/14", CLIP_L),
        encoder("clip_g", "OpenCLIP ViT-bigG/14", CLIP_G),
        encoder("t5xxl", "T5-XXL", T5EncoderSpec()),
    )


SIGMAS = ("model.model_sampling.sigmas",)
"""The sampling schedule buffer SD3 files carry next to the MMDiT (never merged)."""

FIRST_QKV = PREFIX + "joint_blocks.0.context_block.attn.qkv.weight"

SD3_MEDIUM = register_architecture(
    Architecture(
        name="sd3-medium",
        title="Stable Diffusion 3 Medium",
        components=sd3_components(MMDiTConfig(depth=24)),
        schemes=(SD3_SCHEME,),
        signature=(KeyRule(FIRST_QKV, 40.0, ndim=2),),
        schedule_keys=SIGMAS,
        modelspec="stable-diffusion-3-medium",
    )
)

SD35_MEDIUM = register_architecture(
    Architecture(
        name="sd35-medium",
        title="Stable Diffusion 3.5 Medium",
        components=sd3_components(
            MMDiTConfig(depth=24, pos_embed_max_size=384, qk_norm=True, x_attn2_blocks=13)
        ),
        schemes=(SD3_SCHEME,),
        signature=(KeyRule(FIRST_QKV, 40.0, ndim=2),),
        schedule_keys=SIGMAS,
        modelspec="stable-diffusion-3.5-medium",
    )
)

SD35_LARGE = register_architecture(
    Architecture(
        name="sd35-large",
        title="Stable Diffusion 3.5 Large",
        components=sd3_components(MMDiTConfig(depth=38, qk_norm=True)),
        schemes=(SD35_LARGE_SCHEME,),
        signature=(KeyRule(FIRST_QKV, 40.0, ndim=2),),
        schedule_keys=SIGMAS,
        modelspec="stable-diffusion-3.5-large",
    )
)
