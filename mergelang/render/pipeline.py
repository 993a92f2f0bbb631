"""Render images from an SD1, SD2 or SDXL checkpoint with diffusers, configured from the file.

Nothing is downloaded: the U-Net, VAE and text-encoder configs are built from mergelang's
architecture data (the ``UNET`` of :mod:`mergelang.arch.sd1`, :mod:`~mergelang.arch.sd2` and
:mod:`~mergelang.arch.sdxl`, the VAE and CLIP specs) and the widths the file's own shapes
show, so a full-size model and a synthetic one at a tiny width scale go through the same
code. The U-Net, VAE and CLIP-L keys are converted with diffusers' single-file conversion
functions (the ones ``from_single_file`` uses), the OpenCLIP text encoders (SD2's ViT-H,
SDXL's bigG) by :mod:`mergelang.render.open_clip`; the tokenizers are CLIP's, built from the
table open_clip ships (:mod:`mergelang.render.tokenizer`). SD2 conditions on its text
encoder's penultimate block (then the final norm); SDXL on both encoders' penultimate layers
side by side, bigG's pooled output and the size ids, as diffusers' SDXL pipeline does.

Two adjustments exist only for shrunken (synthetic) models and change nothing at full size:
GroupNorm uses 32 groups or the largest count that divides the narrowest width, and a text
encoder whose token table is smaller than CLIP's 49,408 tokens gets token ids modulo its size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mergelang.arch.parts.clip import TextEncoderSpec
from mergelang.arch.parts.unet import UNetConfig
from mergelang.arch.parts.vae import VAEConfig
from mergelang.arch.prediction import PREDICT_KEY_METADATA, PREDICTIONS, Prediction, prediction_of
from mergelang.arch.sd1 import CLIP_L
from mergelang.arch.sd1 import UNET as SD1_UNET
from mergelang.arch.sd2 import OPEN_CLIP_H
from mergelang.arch.sd2 import UNET as SD2_UNET
from mergelang.arch.sdxl import CLIP_L as SDXL_CLIP_L
from mergelang.arch.sdxl import OPEN_CLIP_BIGG
from mergelang.arch.sdxl import UNET as SDXL_UNET
from mergelang.errors import CheckpointError, UsageError
from mergelang.render.open_clip import open_clip_layers, open_clip_to_hf
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


MODELS = ("sd1", "sd2", "sdxl")
"""The architectures render draws (their text-to-image variant)."""
XL_VAE_SCALE = 0.13025
TIME_IDS = 6
"""SDXL's size conditioning: original size, crop top-left, target size (two numbers each)."""
L_PREFIX = "conditioner.embedders.0.transformer.text_model."
G_PREFIX = "conditioner.embedders.1.model."
H_PREFIX = "cond_stage_model.model."


_NOT_DRAWN = {
    "flux": ": Flux conditions on T5-XXL, whose tokenizer (a sentencepiece model) no "
    "installed package ships",
    "sd3": ": SD3's MMDiT is not drawn yet",
    "sd35": ": SD3's MMDiT is not drawn yet",
}
"""Why an architecture mergelang knows is not rendered (by the first part of its name)."""


def _unet_spec(kind: str) -> UNetConfig:
    return {"sd1": SD1_UNET, "sd2": SD2_UNET, "sdxl": SDXL_UNET}[kind]


def unet_config(
    shapes: Mapping[str, tuple[int, ...]], kind: str = "sd1", *, where: str = "<checkpoint>"
) -> dict[str, Any]:
    """diffusers' ``UNet2DConditionModel`` config of an SD1, SD2 or SDXL U-Net with these
    shapes (``kind``); the structure comes from mergelang's U-Net data of that architecture."""
    spec = _unet_spec(kind)
    mc, in_channels = shapes[UNET_PREFIX + "input_blocks.0.0.weight"][:2]
    first = next(
        key
        for key in shapes
        if key.startswith(UNET_PREFIX) and key.endswith("transformer_blocks.0.attn2.to_k.weight")
    )
    context = shapes[first][1]
    levels = range(len(spec.channel_mult))
    down = [
        "CrossAttnDownBlock2D" if level in spec.attention_levels else "DownBlock2D"
        for level in levels
    ]
    up = [
        "CrossAttnUpBlock2D" if level in spec.attention_levels else "UpBlock2D"
        for level in reversed(levels)
    ]
    widths = [mc * m for m in spec.channel_mult]
    heads: int | list[int]
    if spec.head_channels is not None:
        # SD2 and SDXL fix the head width (64); diffusers' attention_head_dim is a head count
        heads = [_heads(w, max(1, w // spec.head_channels)) for w in widths]
    else:
        heads = spec.num_heads or 8
    config: dict[str, Any] = {
        "sample_size": 128 if kind == "sdxl" else 64,
        "in_channels": in_channels,
        "out_channels": spec.out_channels,
        "down_block_types": down,
        "up_block_types": up,
        "block_out_channels": widths,
        "layers_per_block": spec.num_res_blocks,
        "cross_attention_dim": context,
        "attention_head_dim": heads,
        "use_linear_projection": spec.linear_proj,
        "norm_num_groups": _groups(mc),
    }
    if kind == "sd2":
        config["upcast_attention"] = True
    if kind == "sdxl":
        config["transformer_layers_per_block"] = [max(1, d) for d in spec.transformer_depth]
        adm = shapes[UNET_PREFIX + "label_emb.0.0.weight"][1]
        width = shapes[G_PREFIX + "token_embedding.weight"][1]
        pooled = shapes.get(G_PREFIX + "text_projection", (width, width))[1]
        if (adm - pooled) <= 0 or (adm - pooled) % TIME_IDS:
            raise CheckpointError(
                where,
                f"label_emb takes {adm} values, which is not the pooled text ({pooled}) "
                f"plus {TIME_IDS} equal size embeddings",
                code="render-shape",
            )
        config.update(
            addition_embed_type="text_time",
            addition_embed_type_num_heads=64,
            addition_time_embed_dim=(adm - pooled) // TIME_IDS,
            projection_class_embeddings_input_dim=adm,
        )
    return config


def vae_config(
    shapes: Mapping[str, tuple[int, ...]], scaling_factor: float = VAE_SCALE
) -> dict[str, Any]:
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
        "scaling_factor": scaling_factor,
    }


def clip_config(
    shapes: Mapping[str, tuple[int, ...]], prefix: str = CLIP_PREFIX, layers: int | None = None
) -> dict[str, Any]:
    """transformers' ``CLIPTextConfig`` of a CLIP ViT-L/14 text encoder with these shapes
    (``layers``: how many of its layers to build; default all the file has)."""
    vocab, width = shapes[prefix + "embeddings.token_embedding.weight"]
    positions = shapes[prefix + "embeddings.position_embedding.weight"][0]
    if layers is None:
        layers = 0
        while f"{prefix}encoder.layers.{layers}.mlp.fc1.weight" in shapes:
            layers += 1
    intermediate = shapes[f"{prefix}encoder.layers.0.mlp.fc1.weight"][0]
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


def open_clip_config(
    shapes: Mapping[str, tuple[int, ...]], prefix: str, spec: TextEncoderSpec, layers: int
) -> dict[str, Any]:
    """transformers' ``CLIPTextConfig`` of an OpenCLIP text encoder (ViT-H, bigG) with these
    shapes, built with ``layers`` blocks; OpenCLIP pads with token 0 (``!``)."""
    vocab, width = shapes[prefix + "token_embedding.weight"]
    positions = shapes[prefix + "positional_embedding"][0]
    intermediate = shapes[f"{prefix}transformer.resblocks.0.mlp.c_fc.weight"][0]
    projection = shapes.get(prefix + "text_projection", (width, width))[1]
    return {
        "vocab_size": vocab,
        "hidden_size": width,
        "intermediate_size": intermediate,
        "num_hidden_layers": layers,
        "num_attention_heads": _heads(width, spec.heads),
        "max_position_embeddings": positions,
        "hidden_act": "gelu",
        "projection_dim": projection,
        "bos_token_id": 49406 % vocab,
        "eos_token_id": 49407 % vocab,
        "pad_token_id": 0,
    }


@dataclass(frozen=True)
class _Checkpoint:
    kind: str
    tensors: dict[str, Any]
    metadata: dict[str, str]


def _tensors(path: Path) -> _Checkpoint:
    if path.suffix.lower() != ".safetensors":
        raise UsageError(f"{path}: render reads .safetensors checkpoints")
    from safetensors import safe_open
    from safetensors.torch import load_file

    from mergelang.arch import detect
    from mergelang.io.safetensors_header import read_safetensors_header

    found = detect(read_safetensors_header(path).shapes(), path=str(path))
    if found.arch.name not in MODELS or found.variant != "normal":
        why = _NOT_DRAWN.get(found.arch.name.split("-")[0], "")
        raise CheckpointError(
            str(path),
            "render draws SD1, SD2 and SDXL text-to-image models; this is "
            f"{found.arch.name} ({found.variant}){why}",
            code="render-architecture",
        )
    with safe_open(str(path), framework="pt") as handle:
        metadata = dict(handle.metadata() or {})
    tensors: dict[str, Any] = load_file(str(path))
    return _Checkpoint(found.arch.name, tensors, metadata)


def prediction_for(
    kind: str, keys: Collection[str], metadata: Mapping[str, str], chosen: str = "auto"
) -> Prediction:
    """What the model predicts: ``chosen`` unless ``"auto"``; then the file's markers or
    ``modelspec.predict_key`` (:func:`mergelang.arch.prediction.prediction_of`), and without
    either, v for SD2 (the 768-v model, what SD2 checkpoints mostly are) and epsilon for the
    others."""
    if chosen != "auto":
        if chosen not in PREDICTIONS:
            raise UsageError(f"--prediction {chosen}: use auto, {', '.join(PREDICTIONS)}")
        return chosen
    declared = prediction_of(keys, metadata)
    if declared != "eps" or PREDICT_KEY_METADATA in metadata:
        return declared
    return "v" if kind == "sd2" else "eps"


def _load(
    module: Any,
    state: Mapping[str, Any],
    path: Path,
    part: str,
    optional: Collection[str] = (),
) -> None:
    wanted = set(module.state_dict())
    if not any(k.startswith("text_model.") for k in state) and any(
        k.startswith("text_model.") for k in wanted
    ):
        state = {(k if k in wanted else "text_model." + k): v for k, v in state.items()}
    missing, unexpected = module.load_state_dict(dict(state), strict=False)
    missing = [
        k
        for k in missing
        if not k.endswith("position_ids") and k.removeprefix("text_model.") not in optional
    ]
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
    kind: str = "sd1"
    prediction: Prediction = "eps"
    tokenizer_2: Any = None
    vocab_2: int = 0


def tokenizer_for(tokenizers: dict[str, Any] | None, pad: str) -> Any:
    """The CLIP tokenizer padding with ``pad``, from (and kept in) ``tokenizers``."""
    from mergelang.render.tokenizer import clip_tokenizer

    if tokenizers is None:
        return clip_tokenizer(pad_token=pad)
    if pad not in tokenizers:
        tokenizers[pad] = clip_tokenizer(pad_token=pad)
    return tokenizers[pad]


def _unet_and_vae(checkpoint: _Checkpoint, path: Path) -> tuple[Any, Any]:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
    )

    tensors = checkpoint.tensors
    shapes = {key: tuple(value.shape) for key, value in tensors.items()}
    unet_cfg = unet_config(shapes, checkpoint.kind, where=str(path))
    scale = XL_VAE_SCALE if checkpoint.kind == "sdxl" else VAE_SCALE
    vae_cfg = vae_config(shapes, scale)
    unet = UNet2DConditionModel(**unet_cfg)
    _load(unet, convert_ldm_unet_checkpoint(tensors, unet_cfg), path, "U-Net")
    vae = AutoencoderKL(**vae_cfg)
    _load(vae, convert_ldm_vae_checkpoint(tensors, vae_cfg), path, "VAE")
    return unet, vae


def _open_clip_encoder(
    checkpoint: _Checkpoint,
    path: Path,
    prefix: str,
    spec: TextEncoderSpec,
    *,
    layers: int,
    projection: bool,
) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    tensors = checkpoint.tensors
    shapes = {key: tuple(value.shape) for key, value in tensors.items()}
    present = open_clip_layers(tensors, prefix)
    needed = [f"{prefix}transformer.resblocks.{layers - 1}.attn.in_proj_weight"]
    needed += [prefix + "ln_final.weight"] + ([prefix + "text_projection"] if projection else [])
    absent = [key for key in needed if key not in tensors]
    if present < layers or absent:
        raise CheckpointError(
            str(path),
            f"its {spec.title} text encoder lacks {absent[0] if absent else 'blocks'}, "
            "which rendering needs (a file that left out the optional last block or head)",
            code="render-keys",
        )
    config = CLIPTextConfig(**open_clip_config(shapes, prefix, spec, layers))
    model = CLIPTextModelWithProjection(config) if projection else CLIPTextModel(config)
    state = open_clip_to_hf(tensors, prefix, layers=layers, projection=projection)
    _load(model, state, path, f"{spec.title} text encoder")
    return model


def load_pipeline(
    path: Path,
    *,
    device: str = "cpu",
    dtype: str = "fp32",
    tokenizers: dict[str, Any] | None = None,
    prediction: str = "auto",
) -> Pipeline:
    """The diffusers pipeline of the SD1, SD2 or SDXL checkpoint at ``path``
    (``tokenizers``: a dict that keeps the tokenizers made, to share between models;
    ``prediction``: ``auto``, ``eps``, ``v`` or ``v_ztsnr``, see :func:`prediction_for`)."""
    import torch
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
    from diffusers.loaders.single_file_utils import convert_ldm_clip_checkpoint
    from transformers import CLIPTextConfig, CLIPTextModel

    checkpoint = _tensors(path)
    kind = checkpoint.kind
    predicts = prediction_for(kind, checkpoint.tensors.keys(), checkpoint.metadata, prediction)
    unet, vae = _unet_and_vae(checkpoint, path)
    scheduler = _scheduler("Euler a", predicts)
    tensors = checkpoint.tensors
    shapes = {key: tuple(value.shape) for key, value in tensors.items()}
    pipe: Any
    second: Any = None
    vocab_2 = 0
    if kind == "sdxl":
        # CLIP-L's penultimate layer is its output: build the layers below the last one
        l_cfg = clip_config(shapes, L_PREFIX, layers=SDXL_CLIP_L.layers - 1)
        text_encoder = CLIPTextModel(CLIPTextConfig(**l_cfg))
        l_state = convert_ldm_clip_checkpoint(
            tensors, remove_prefix="conditioner.embedders.0.transformer."
        )
        l_state = {
            k: v
            for k, v in l_state.items()
            if not k.startswith(f"text_model.encoder.layers.{SDXL_CLIP_L.layers - 1}.")
        }
        l_state = {k.removeprefix("text_model."): v for k, v in l_state.items()}
        _load(
            text_encoder,
            l_state,
            path,
            "CLIP ViT-L/14 text encoder",
            optional=("final_layer_norm.weight", "final_layer_norm.bias"),
        )
        text_encoder_2 = _open_clip_encoder(
            checkpoint,
            path,
            G_PREFIX,
            OPEN_CLIP_BIGG,
            layers=OPEN_CLIP_BIGG.layers,
            projection=True,
        )
        tokenizer = tokenizer_for(tokenizers, "<|endoftext|>")
        second = tokenizer_for(tokenizers, "!")
        vocab, vocab_2 = l_cfg["vocab_size"], text_encoder_2.config.vocab_size
        pipe = StableDiffusionXLPipeline(
            vae=vae,
            text_encoder=text_encoder,
            text_encoder_2=text_encoder_2,
            tokenizer=tokenizer,
            tokenizer_2=second,
            unet=unet,
            scheduler=scheduler,
            force_zeros_for_empty_prompt=True,
            add_watermarker=False,
        )
    else:
        if kind == "sd2":
            # SD2 conditions on the penultimate block (then the final norm)
            text_encoder = _open_clip_encoder(
                checkpoint,
                path,
                H_PREFIX,
                OPEN_CLIP_H,
                layers=OPEN_CLIP_H.layers - 1,
                projection=False,
            )
            tokenizer = tokenizer_for(tokenizers, "!")
            vocab = text_encoder.config.vocab_size
        else:
            clip_cfg = clip_config(shapes)
            text_encoder = CLIPTextModel(CLIPTextConfig(**clip_cfg))
            clip_state = convert_ldm_clip_checkpoint(
                tensors, remove_prefix="cond_stage_model.transformer."
            )
            clip_state = {k.removeprefix("text_model."): v for k, v in clip_state.items()}
            _load(text_encoder, clip_state, path, "text encoder")
            tokenizer = tokenizer_for(tokenizers, "<|endoftext|>")
            vocab = clip_cfg["vocab_size"]
        pipe = StableDiffusionPipeline(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    del tensors, checkpoint
    torch_dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
    pipe = pipe.to(device) if torch_dtype is torch.float32 else pipe.to(device, torch_dtype)
    pipe.set_progress_bar_config(disable=True)
    return Pipeline(pipe, tokenizer, vocab, device, kind, predicts, second, vocab_2)


def _scheduler(sampler: str, prediction: Prediction = "eps") -> Any:
    import diffusers

    if sampler not in SAMPLERS:
        known = ", ".join(SAMPLERS)
        raise UsageError(f"sampler {sampler!r} is not known to render; use one of: {known}")
    name, options = SAMPLERS[sampler]
    schedule: dict[str, Any] = {**SCHEDULE, **options}
    schedule["prediction_type"] = "epsilon" if prediction == "eps" else "v_prediction"
    if prediction == "v_ztsnr":
        schedule.update(rescale_betas_zero_snr=True, timestep_spacing="trailing")
    return getattr(diffusers, name).from_config(schedule)


def _ids(tokenizer: Any, vocab: int, text: str, device: Any) -> Any:
    ids = tokenizer(
        text, padding="max_length", max_length=77, truncation=True, return_tensors="pt"
    ).input_ids
    return (ids % vocab).to(device)  # only a shrunken token table needs % (see the module doc)


def _embed(pipeline: Pipeline, text: str) -> Any:
    import torch

    encoder = pipeline.pipe.text_encoder
    with torch.no_grad():
        return encoder(_ids(pipeline.tokenizer, pipeline.vocab, text, encoder.device))[0]


def _embed_xl(pipeline: Pipeline, text: str) -> tuple[Any, Any]:
    """SDXL's conditioning of ``text``: CLIP-L's and bigG's penultimate hidden states side by
    side, and bigG's pooled, projected output (as diffusers' SDXL pipeline encodes it)."""
    import torch

    first, second = pipeline.pipe.text_encoder, pipeline.pipe.text_encoder_2
    with torch.no_grad():
        # the CLIP-L model was built without its last layer: its output is the penultimate
        low = first(_ids(pipeline.tokenizer, pipeline.vocab, text, first.device))[0]
        ids = _ids(pipeline.tokenizer_2, pipeline.vocab_2, text, second.device)
        out = second(ids, output_hidden_states=True)
        return torch.cat([low, out.hidden_states[-2]], dim=-1), out.text_embeds


def render_images(
    pipeline: Pipeline,
    params: RenderParameters,
    *,
    on_image: Callable[[int], None] | None = None,
) -> Iterator[RenderedImage]:
    """One image per seed of ``params``, as PIL images."""
    import torch

    pipe = pipeline.pipe
    pipe.scheduler = _scheduler(params.sampler, pipeline.prediction)
    extra: dict[str, Any] = {}
    if pipeline.kind == "sdxl":
        positive, pooled = _embed_xl(pipeline, params.prompt)
        if params.negative_prompt:
            negative, negative_pooled = _embed_xl(pipeline, params.negative_prompt)
        else:  # diffusers' SDXL convention (force_zeros_for_empty_prompt)
            negative, negative_pooled = torch.zeros_like(positive), torch.zeros_like(pooled)
        size = (params.height, params.width)
        extra = {
            "pooled_prompt_embeds": pooled,
            "negative_pooled_prompt_embeds": negative_pooled,
            "original_size": size,
            "target_size": size,
            "crops_coords_top_left": (0, 0),
        }
    else:
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
            **extra,
        )
        if on_image is not None:
            on_image(seed)
        yield RenderedImage(seed, result.images[0])
