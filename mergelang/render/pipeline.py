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

from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mergelang.arch.parts.clip import TextEncoderSpec
from mergelang.arch.prediction import PREDICT_KEY_METADATA, PREDICTIONS, Prediction, prediction_of
from mergelang.arch.sd2 import OPEN_CLIP_H
from mergelang.arch.sdxl import CLIP_L as SDXL_CLIP_L
from mergelang.arch.sdxl import OPEN_CLIP_BIGG
from mergelang.errors import CheckpointError, UsageError
from mergelang.render.configs import (
    G_PREFIX,
    H_PREFIX,
    L_PREFIX,
    VAE_SCALE,
    clip_config,
    open_clip_config,
    unet_config,
    vae_config,
)
from mergelang.render.open_clip import open_clip_layers, open_clip_to_hf
from mergelang.render.parameters import RenderParameters

__all__ = ["SAMPLERS", "RenderedImage", "load_pipeline", "render_images"]

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


MODELS = ("sd1", "sd2", "sdxl")
"""The architectures render draws (their text-to-image variant)."""
XL_VAE_SCALE = 0.13025
_NOT_DRAWN = {
    "flux": ": Flux conditions on T5-XXL, whose tokenizer (a sentencepiece model) no "
    "installed package ships",
    "sd3": ": SD3's MMDiT is not drawn yet",
    "sd35": ": SD3's MMDiT is not drawn yet",
}
"""Why an architecture mergelang knows is not rendered (by the first part of its name)."""


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
