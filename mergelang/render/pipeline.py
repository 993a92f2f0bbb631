"""Render images from an SD1 checkpoint with diffusers, configured from the file itself.

Nothing is downloaded: the U-Net, VAE and text-encoder configs are built from mergelang's
architecture data (:data:`mergelang.arch.sd1.UNET`, the VAE and CLIP specs) and the widths
the file's own shapes show, so a full-size model and a synthetic one at a tiny width scale
go through the same code. The LDM keys are converted with diffusers' single-file conversion
functions (the ones ``from_single_file`` uses); the tokenizer is CLIP's, built from the table
open_clip ships (:mod:`mergelang.render.tokenizer`).

Two adjustments exist only for shrunken (synthetic) models and change nothing at full size:
GroupNorm uses 32 groups or the largest count that divides the narrowest width, and a text
encoder whose token table is smaller than CLIP's 49,408 tokens gets token ids modulo its size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mergelang.arch import SD1
from mergelang.arch.parts.vae import VAEConfig
from mergelang.arch.sd1 import CLIP_L, UNET
from mergelang.errors import CheckpointError, UsageError
from mergelang.render.parameters import RenderParameters

__all__ = ["SAMPLERS", "RenderedImage", "load_pipeline", "render_images"]

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer.text_model."
GROUPS = 32
VAE_SCALE = 0.18215
SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "steps_offset": 1,
}
"""SD1's noise schedule (the ``linear_start``/``linear_end`` of its LDM config)."""

SAMPLERS: dict[str, tuple[str, dict[str, Any]]] = {
    "Euler a": ("EulerAncestralDiscreteScheduler", {}),
    "Euler": ("EulerDiscreteScheduler", {}),
    "LMS": ("LMSDiscreteScheduler", {}),
    "Heun": ("HeunDiscreteScheduler", {}),
    "DDIM": ("DDIMScheduler", {"clip_sample": False, "set_alpha_to_one": False}),
    "PLMS": ("PNDMScheduler", {"skip_prk_steps": True}),
    "DPM++ 2M": ("DPMSolverMultistepScheduler", {}),
    "DPM++ 2M Karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    "DPM++ SDE": ("DPMSolverSinglestepScheduler", {}),
    "UniPC": ("UniPCMultistepScheduler", {}),
}
"""A1111's sampler names -> the diffusers scheduler that samples the same way."""


@dataclass(frozen=True)
class RenderedImage:
    seed: int
    image: Any
    """A ``PIL.Image.Image``."""


def _groups(*widths: int) -> int:
    return math.gcd(GROUPS, *widths)


def _heads(width: int, wanted: int) -> int:
    """``wanted`` attention heads, or the most below it that divide ``width``."""
    return next(h for h in range(min(wanted, width), 0, -1) if width % h == 0)


def unet_config(shapes: Mapping[str, tuple[int, ...]]) -> dict[str, Any]:
    """diffusers' ``UNet2DConditionModel`` config of an SD1 U-Net with these shapes."""
    mc, in_channels = shapes[UNET_PREFIX + "input_blocks.0.0.weight"][:2]
    context = shapes[UNET_PREFIX + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"][1]
    levels = range(len(UNET.channel_mult))
    down = [
        "CrossAttnDownBlock2D" if level in UNET.attention_levels else "DownBlock2D"
        for level in levels
    ]
    up = [
        "CrossAttnUpBlock2D" if level in UNET.attention_levels else "UpBlock2D"
        for level in reversed(levels)
    ]
    return {
        "sample_size": 64,
        "in_channels": in_channels,
        "out_channels": UNET.out_channels,
        "down_block_types": down,
        "up_block_types": up,
        "block_out_channels": [mc * m for m in UNET.channel_mult],
        "layers_per_block": UNET.num_res_blocks,
        "cross_attention_dim": context,
        "attention_head_dim": UNET.num_heads,
        "use_linear_projection": UNET.linear_proj,
        "norm_num_groups": _groups(mc),
    }


def vae_config(shapes: Mapping[str, tuple[int, ...]]) -> dict[str, Any]:
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
        "scaling_factor": VAE_SCALE,
    }


def clip_config(shapes: Mapping[str, tuple[int, ...]]) -> dict[str, Any]:
    """transformers' ``CLIPTextConfig`` of a CLIP ViT-L/14 text encoder with these shapes."""
    vocab, width = shapes[CLIP_PREFIX + "embeddings.token_embedding.weight"]
    positions = shapes[CLIP_PREFIX + "embeddings.position_embedding.weight"][0]
    layers = 0
    while f"{CLIP_PREFIX}encoder.layers.{layers}.mlp.fc1.weight" in shapes:
        layers += 1
    intermediate = shapes[f"{CLIP_PREFIX}encoder.layers.0.mlp.fc1.weight"][0]
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


def _tensors(path: Path) -> dict[str, Any]:
    if path.suffix.lower() != ".safetensors":
        raise UsageError(f"{path}: render reads .safetensors checkpoints")
    from safetensors.torch import load_file

    from mergelang.arch import detect
    from mergelang.io.safetensors_header import read_safetensors_header

    found = detect(read_safetensors_header(path).shapes(), path=str(path))
    if found.arch is not SD1 or found.variant != "normal":
        raise CheckpointError(
            str(path),
            f"render draws SD1 text-to-image models; this is {found.arch.name} ({found.variant})",
            code="render-architecture",
        )
    tensors: dict[str, Any] = load_file(str(path))
    return tensors


def _load(module: Any, state: Mapping[str, Any], path: Path, part: str) -> None:
    missing, unexpected = module.load_state_dict(dict(state), strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    unexpected = [k for k in unexpected if not k.endswith("position_ids")]
    if missing or unexpected:
        shown = ", ".join([*missing[:3], *unexpected[:3]])
        raise CheckpointError(
            str(path),
            f"its {part} does not load into diffusers' model ({len(missing)} missing, "
            f"{len(unexpected)} unexpected keys: {shown})",
            code="render-keys",
        )


@dataclass
class Pipeline:
    """A loaded model ready to render: the diffusers pipeline and its text encoding."""

    pipe: Any
    tokenizer: Any
    vocab: int
    device: str


def load_pipeline(
    path: Path, *, device: str = "cpu", dtype: str = "fp32", tokenizer: Any = None
) -> Pipeline:
    """The diffusers ``StableDiffusionPipeline`` of the SD1 checkpoint at ``path``
    (``tokenizer``: one :func:`~mergelang.render.tokenizer.clip_tokenizer` made before, to
    share between models)."""
    import torch
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    from mergelang.render.tokenizer import clip_tokenizer

    tensors = _tensors(path)
    shapes = {key: tuple(value.shape) for key, value in tensors.items()}
    unet_cfg, vae_cfg, clip_cfg = unet_config(shapes), vae_config(shapes), clip_config(shapes)
    unet = UNet2DConditionModel(**unet_cfg)
    _load(unet, convert_ldm_unet_checkpoint(tensors, unet_cfg), path, "U-Net")
    vae = AutoencoderKL(**vae_cfg)
    _load(vae, convert_ldm_vae_checkpoint(tensors, vae_cfg), path, "VAE")
    text_encoder = CLIPTextModel(CLIPTextConfig(**clip_cfg))
    clip_state = convert_ldm_clip_checkpoint(tensors, remove_prefix="cond_stage_model.transformer.")
    if not any(k.startswith("text_model.") for k in text_encoder.state_dict()):
        # transformers 5 names the text encoder's keys without the text_model. prefix
        clip_state = {k.removeprefix("text_model."): v for k, v in clip_state.items()}
    _load(text_encoder, clip_state, path, "text encoder")
    del tensors
    tokenizer = clip_tokenizer() if tokenizer is None else tokenizer
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=_scheduler("Euler a"),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    torch_dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
    pipe = pipe.to(device) if torch_dtype is torch.float32 else pipe.to(device, torch_dtype)
    pipe.set_progress_bar_config(disable=True)
    return Pipeline(pipe, tokenizer, clip_cfg["vocab_size"], device)


def _scheduler(sampler: str) -> Any:
    import diffusers

    if sampler not in SAMPLERS:
        known = ", ".join(SAMPLERS)
        raise UsageError(f"sampler {sampler!r} is not known to render; use one of: {known}")
    name, options = SAMPLERS[sampler]
    return getattr(diffusers, name).from_config({**SCHEDULE, **options})


def _embed(pipeline: Pipeline, text: str) -> Any:
    import torch

    ids = pipeline.tokenizer(
        text, padding="max_length", max_length=77, truncation=True, return_tensors="pt"
    ).input_ids
    ids = ids % pipeline.vocab  # only a shrunken token table needs this (see the module doc)
    encoder = pipeline.pipe.text_encoder
    with torch.no_grad():
        return encoder(ids.to(encoder.device))[0]


def render_images(
    pipeline: Pipeline,
    params: RenderParameters,
    *,
    on_image: Callable[[int], None] | None = None,
) -> Iterator[RenderedImage]:
    """One image per seed of ``params``, as PIL images."""
    import torch

    pipe = pipeline.pipe
    pipe.scheduler = _scheduler(params.sampler)
    positive = _embed(pipeline, params.prompt)
    negative = _embed(pipeline, params.negative_prompt)
    for seed in params.seeds:
        generator = torch.Generator(device="cpu").manual_seed(seed)
        result = pipe(
            prompt_embeds=positive,
            negative_prompt_embeds=negative,
            num_inference_steps=params.steps,
            guidance_scale=params.cfg_scale,
            width=params.width,
            height=params.height,
            generator=generator,
        )
        if on_image is not None:
            on_image(seed)
        yield RenderedImage(seed, result.images[0])
