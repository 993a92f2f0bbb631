"""Every key of a checkpoint and its shape, generated from an architecture's configs.

The generators follow the construction of the LDM/SGM modules (``UNetModel``,
``AutoencoderKL``, Hugging Face ``CLIPTextModel``, OpenCLIP's text transformer), emitting keys
in ``state_dict`` order. ``scale`` shrinks the widths (model channels, context and text widths,
vocabulary rows, VAE channels) while every key name stays the real one, which is what lets the
test fixtures be tiny files with the real layout. Scaled widths are rounded to multiples of 8
(at least 8); at ``scale=1.0`` the shapes are the published ones.

Pure Python: no torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from math import prod

from mergelang.arch.base import (
    EMA_PREFIX,
    SCHEDULE_KEYS,
    VARIANT_IN_CHANNELS,
    Architecture,
    TextEncoderSpec,
    UNetConfig,
    VAEConfig,
    get_architecture,
)

Shape = tuple[int, ...]
Layout = dict[str, Shape]

SCHEDULE_STEPS = 1000
EMA_DECAY_KEY = EMA_PREFIX + "decay"
EMA_NUM_UPDATES_KEY = EMA_PREFIX + "num_updates"


def scaled_width(width: int, scale: float) -> int:
    """``width * scale`` rounded to a multiple of 8, at least 8; ``width`` itself at scale 1."""
    if scale <= 0:
        raise ValueError(f"scale must be positive, not {scale}")
    if scale == 1.0:
        return width
    return max(8, round(width * scale / 8) * 8)


def _linear(out: dict[str, Shape], name: str, rows: int, cols: int, *, bias: bool = True) -> None:
    out[f"{name}.weight"] = (rows, cols)
    if bias:
        out[f"{name}.bias"] = (rows,)


def _conv(out: dict[str, Shape], name: str, cout: int, cin: int, kernel: int) -> None:
    out[f"{name}.weight"] = (cout, cin, kernel, kernel)
    out[f"{name}.bias"] = (cout,)


def _norm(out: dict[str, Shape], name: str, channels: int) -> None:
    out[f"{name}.weight"] = (channels,)
    out[f"{name}.bias"] = (channels,)


# --- U-Net ---------------------------------------------------------------------------------


def _res_block(out: Layout, name: str, cin: int, cout: int, emb: int) -> None:
    _norm(out, f"{name}.in_layers.0", cin)
    _conv(out, f"{name}.in_layers.2", cout, cin, 3)
    _linear(out, f"{name}.emb_layers.1", cout, emb)
    _norm(out, f"{name}.out_layers.0", cout)
    _conv(out, f"{name}.out_layers.3", cout, cout, 3)
    if cin != cout:
        _conv(out, f"{name}.skip_connection", cout, cin, 1)


def _spatial_transformer(
    out: Layout, name: str, channels: int, depth: int, context: int, linear: bool
) -> None:
    c = channels

    def proj(part: str) -> None:
        if linear:
            _linear(out, f"{name}.{part}", c, c)
        else:
            _conv(out, f"{name}.{part}", c, c, 1)

    _norm(out, f"{name}.norm", c)
    proj("proj_in")
    for k in range(depth):
        block = f"{name}.transformer_blocks.{k}"
        for part in ("to_q", "to_k", "to_v"):
            _linear(out, f"{block}.attn1.{part}", c, c, bias=False)
        _linear(out, f"{block}.attn1.to_out.0", c, c)
        _linear(out, f"{block}.ff.net.0.proj", 8 * c, c)
        _linear(out, f"{block}.ff.net.2", c, 4 * c)
        _linear(out, f"{block}.attn2.to_q", c, c, bias=False)
        _linear(out, f"{block}.attn2.to_k", c, context, bias=False)
        _linear(out, f"{block}.attn2.to_v", c, context, bias=False)
        _linear(out, f"{block}.attn2.to_out.0", c, c)
        for norm in ("norm1", "norm2", "norm3"):
            _norm(out, f"{block}.{norm}", c)
    proj("proj_out")


def unet_layout(
    cfg: UNetConfig, *, prefix: str, scale: float = 1.0, in_channels: int | None = None
) -> Layout:
    """The U-Net's keys (``prefix`` + local name) and shapes."""
    mc = scaled_width(cfg.model_channels, scale)
    context = scaled_width(cfg.context_dim, scale)
    emb = 4 * mc
    levels = len(cfg.channel_mult)
    out: Layout = {}

    def depth_at(level: int) -> int:
        return cfg.transformer_depth[level] if level in cfg.attention_levels else 0

    def st(name: str, channels: int, depth: int) -> None:
        _spatial_transformer(out, name, channels, depth, context, cfg.linear_proj)

    _linear(out, "time_embed.0", emb, mc)
    _linear(out, "time_embed.2", emb, emb)
    if cfg.adm_in_channels is not None:
        _linear(out, "label_emb.0.0", emb, scaled_width(cfg.adm_in_channels, scale))
        _linear(out, "label_emb.0.2", emb, emb)

    cin = cfg.in_channels if in_channels is None else in_channels
    _conv(out, "input_blocks.0.0", mc, cin, 3)
    skip_channels = [mc]
    ch = mc
    index = 1
    for level, mult in enumerate(cfg.channel_mult):
        for _ in range(cfg.num_res_blocks):
            _res_block(out, f"input_blocks.{index}.0", ch, mult * mc, emb)
            ch = mult * mc
            if depth_at(level):
                st(f"input_blocks.{index}.1", ch, depth_at(level))
            skip_channels.append(ch)
            index += 1
        if level != levels - 1:
            _conv(out, f"input_blocks.{index}.0.op", ch, ch, 3)
            skip_channels.append(ch)
            index += 1

    _res_block(out, "middle_block.0", ch, ch, emb)
    st("middle_block.1", ch, cfg.transformer_depth_middle)
    _res_block(out, "middle_block.2", ch, ch, emb)

    index = 0
    for level in reversed(range(levels)):
        mult = cfg.channel_mult[level]
        for i in range(cfg.num_res_blocks + 1):
            skip = skip_channels.pop()
            _res_block(out, f"output_blocks.{index}.0", ch + skip, mult * mc, emb)
            ch = mult * mc
            layer = 1
            if depth_at(level):
                st(f"output_blocks.{index}.1", ch, depth_at(level))
                layer = 2
            if level != 0 and i == cfg.num_res_blocks:
                _conv(out, f"output_blocks.{index}.{layer}.conv", ch, ch, 3)
            index += 1

    _norm(out, "out.0", mc)
    _conv(out, "out.2", cfg.out_channels, mc, 3)
    return {prefix + key: shape for key, shape in out.items()}


# --- text encoders -------------------------------------------------------------------------


def text_encoder_layout(
    spec: TextEncoderSpec, *, scale: float = 1.0, omit_optional: bool = False
) -> Layout:
    """The text encoder's keys and shapes; ``omit_optional`` leaves out its optional keys."""
    layout = _hf_clip(spec, scale) if spec.kind == "hf_clip" else _open_clip(spec, scale)
    if omit_optional:
        optional = optional_text_encoder_keys(spec)
        layout = {k: v for k, v in layout.items() if k not in optional}
    return layout


def _hf_clip(spec: TextEncoderSpec, scale: float) -> Layout:
    w = scaled_width(spec.width, scale)
    vocab = scaled_width(spec.vocab_size, scale)
    out: Layout = {}
    out["embeddings.position_ids"] = (1, spec.max_positions)
    out["embeddings.token_embedding.weight"] = (vocab, w)
    out["embeddings.position_embedding.weight"] = (spec.max_positions, w)
    for n in range(spec.layers):
        layer = f"encoder.layers.{n}"
        for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
            _linear(out, f"{layer}.self_attn.{proj}", w, w)
        _norm(out, f"{layer}.layer_norm1", w)
        _linear(out, f"{layer}.mlp.fc1", 4 * w, w)
        _linear(out, f"{layer}.mlp.fc2", w, 4 * w)
        _norm(out, f"{layer}.layer_norm2", w)
    _norm(out, "final_layer_norm", w)
    return {spec.prefix + key: shape for key, shape in out.items()}


def _open_clip(spec: TextEncoderSpec, scale: float) -> Layout:
    w = scaled_width(spec.width, scale)
    vocab = scaled_width(spec.vocab_size, scale)
    out: Layout = {}
    out["positional_embedding"] = (spec.max_positions, w)
    out["text_projection"] = (w, w)
    out["logit_scale"] = ()
    for n in range(spec.layers):
        block = f"transformer.resblocks.{n}"
        _norm(out, f"{block}.ln_1", w)
        out[f"{block}.attn.in_proj_weight"] = (3 * w, w)
        out[f"{block}.attn.in_proj_bias"] = (3 * w,)
        _linear(out, f"{block}.attn.out_proj", w, w)
        _norm(out, f"{block}.ln_2", w)
        _linear(out, f"{block}.mlp.c_fc", 4 * w, w)
        _linear(out, f"{block}.mlp.c_proj", w, 4 * w)
    out["token_embedding.weight"] = (vocab, w)
    _norm(out, "ln_final", w)
    return {spec.prefix + key: shape for key, shape in out.items()}


def optional_text_encoder_keys(spec: TextEncoderSpec) -> frozenset[str]:
    """Keys of ``spec`` that published files may leave out (see :class:`TextEncoderSpec`)."""
    keys: list[str] = []
    last = spec.layers - 1
    if spec.kind == "hf_clip":
        if spec.optional_position_ids:
            keys.append("embeddings.position_ids")
        if spec.optional_head:
            keys += ["final_layer_norm.weight", "final_layer_norm.bias"]
        if spec.optional_last_layer:
            layer = _hf_clip(spec, 1.0)
            head = f"{spec.prefix}encoder.layers.{last}."
            keys += [k[len(spec.prefix) :] for k in layer if k.startswith(head)]
    else:
        if spec.optional_head:
            keys += ["ln_final.weight", "ln_final.bias", "text_projection", "logit_scale"]
        if spec.optional_last_layer:
            layer = _open_clip(spec, 1.0)
            head = f"{spec.prefix}transformer.resblocks.{last}."
            keys += [k[len(spec.prefix) :] for k in layer if k.startswith(head)]
    return frozenset(spec.prefix + k for k in keys)


# --- VAE -----------------------------------------------------------------------------------


def _vae_res(out: Layout, name: str, cin: int, cout: int) -> None:
    _norm(out, f"{name}.norm1", cin)
    _conv(out, f"{name}.conv1", cout, cin, 3)
    _norm(out, f"{name}.norm2", cout)
    _conv(out, f"{name}.conv2", cout, cout, 3)
    if cin != cout:
        _conv(out, f"{name}.nin_shortcut", cout, cin, 1)


def _vae_mid(out: Layout, name: str, c: int) -> None:
    _vae_res(out, f"{name}.block_1", c, c)
    _norm(out, f"{name}.attn_1.norm", c)
    for part in ("q", "k", "v", "proj_out"):
        _conv(out, f"{name}.attn_1.{part}", c, c, 1)
    _vae_res(out, f"{name}.block_2", c, c)


def vae_layout(cfg: VAEConfig, *, scale: float = 1.0) -> Layout:
    """The VAE's keys (``cfg.prefix`` + local name) and shapes."""
    ch = scaled_width(cfg.ch, scale)
    levels = len(cfg.ch_mult)
    out: Layout = {}

    _conv(out, "encoder.conv_in", ch, cfg.in_channels, 3)
    block_in = ch
    for level, mult in enumerate(cfg.ch_mult):
        for j in range(cfg.num_res_blocks):
            _vae_res(out, f"encoder.down.{level}.block.{j}", block_in, ch * mult)
            block_in = ch * mult
        if level != levels - 1:
            _conv(out, f"encoder.down.{level}.downsample.conv", block_in, block_in, 3)
    _vae_mid(out, "encoder.mid", block_in)
    _norm(out, "encoder.norm_out", block_in)
    _conv(out, "encoder.conv_out", 2 * cfg.z_channels, block_in, 3)

    block_in = ch * cfg.ch_mult[-1]
    _conv(out, "decoder.conv_in", block_in, cfg.z_channels, 3)
    _vae_mid(out, "decoder.mid", block_in)
    up: dict[int, Layout] = {}
    for level in reversed(range(levels)):
        part: Layout = {}
        block_out = ch * cfg.ch_mult[level]
        for j in range(cfg.num_res_blocks + 1):
            _vae_res(part, f"decoder.up.{level}.block.{j}", block_in, block_out)
            block_in = block_out
        if level != 0:
            _conv(part, f"decoder.up.{level}.upsample.conv", block_in, block_in, 3)
        up[level] = part
    for level in range(levels):
        out.update(up[level])
    _norm(out, "decoder.norm_out", block_in)
    _conv(out, "decoder.conv_out", cfg.out_channels, block_in, 3)

    _conv(out, "quant_conv", 2 * cfg.embed_dim, 2 * cfg.z_channels, 1)
    _conv(out, "post_quant_conv", cfg.z_channels, cfg.embed_dim, 1)
    return {cfg.prefix + key: shape for key, shape in out.items()}


# --- EMA, schedule, whole files ------------------------------------------------------------


def ema_key(unet_key: str) -> str:
    """The EMA copy's name for a U-Net key: ``model.`` dropped, dots removed, ``model_ema.``
    prepended (``model_ema.diffusion_modelinput_blocks00weight``)."""
    local = unet_key.removeprefix("model.")
    return EMA_PREFIX + local.replace(".", "")


def ema_layout(unet: Mapping[str, Shape]) -> Layout:
    out: Layout = {EMA_DECAY_KEY: (), EMA_NUM_UPDATES_KEY: ()}
    for key, shape in unet.items():
        out[ema_key(key)] = shape
    return out


def schedule_layout() -> Layout:
    return {key: (SCHEDULE_STEPS,) for key in SCHEDULE_KEYS}


def checkpoint_layout(
    arch_name: str | Architecture,
    *,
    scale: float = 1.0,
    variant: str = "normal",
    ema: bool = False,
    schedule: bool = False,
    omit_optional: bool = False,
) -> Layout:
    """Every key of a single-file checkpoint with its shape, in ``state_dict`` order:
    schedule buffers, U-Net, EMA copy, VAE, text encoders."""
    arch = get_architecture(arch_name)
    try:
        in_channels = VARIANT_IN_CHANNELS[variant]
    except KeyError:
        valid = ", ".join(VARIANT_IN_CHANNELS)
        raise ValueError(f"unknown variant {variant!r} (valid: {valid})") from None
    out: Layout = {}
    if schedule:
        out.update(schedule_layout())
    unet = unet_layout(
        arch.unet_config, prefix=arch.unet_prefix, scale=scale, in_channels=in_channels
    )
    out.update(unet)
    if ema:
        out.update(ema_layout(unet))
    out.update(vae_layout(arch.vae, scale=scale))
    for spec in arch.text_encoders:
        out.update(text_encoder_layout(spec, scale=scale, omit_optional=omit_optional))
    return out


def optional_keys(arch_name: str | Architecture) -> frozenset[str]:
    """Every key of the architecture that a published file may leave out."""
    arch = get_architecture(arch_name)
    keys: frozenset[str] = frozenset()
    for spec in arch.text_encoders:
        keys |= optional_text_encoder_keys(spec)
    return keys


def key_dtype(key: str, float_dtype: str = "F16") -> str:
    """The safetensors dtype code of ``key`` in a checkpoint saved as ``float_dtype``:
    ``position_ids`` are int64, the EMA update counter int32, everything else float."""
    if key.endswith("position_ids"):
        return "I64"
    if key == EMA_NUM_UPDATES_KEY:
        return "I32"
    return float_dtype


def parameter_count(layout: Mapping[str, Shape]) -> int:
    """Number of elements over every tensor of ``layout``."""
    return sum(prod(shape) for shape in layout.values())
