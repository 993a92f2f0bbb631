"""What an architecture is: configs, key prefixes, key roles, the key -> block rule, a registry.

An :class:`Architecture` is plain data (frozen dataclasses). The key names and shapes of a
checkpoint follow from its configs (see :mod:`mergelang.arch.layout`), detection scores a file
against those names plus the architecture's own :class:`KeyRule` signature, and
:meth:`Architecture.block_of` maps any key to its merge block. Supporting another architecture
means writing one more data module that builds an ``Architecture`` and calls
:func:`register_architecture`; nothing else changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from mergelang.arch.blocks import BASE
from mergelang.arch.conventions import (
    DEFAULT_CONVENTION,
    FIRST_IN,
    LAST_OUT,
    Convention,
    get_convention,
)

Role = Literal["unet", "text_encoder", "vae", "ema", "schedule", "marker", "other"]

ROLES: tuple[Role, ...] = ("unet", "text_encoder", "vae", "ema", "schedule", "marker", "other")
"""Every role a key can have, in the order reports list them."""

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
EMA_PREFIX = "model_ema."

UNET_TOP_LEVEL: tuple[str, ...] = (
    "time_embed",
    "label_emb",
    "input_blocks",
    "middle_block",
    "output_blocks",
    "out",
)
"""First name segments of U-Net keys; a key starting with one of them and no prefix is a
U-Net key saved on its own (a "bare" U-Net file)."""

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

MARKER_KEYS: frozenset[str] = frozenset({"v_pred", "ztsnr", "denoiser.sigmas"})
MARKER_PREFIXES: tuple[str, ...] = ("edm_vpred.", "edm_eps.", "denoiser.")
"""Keys that mark a prediction type or hold sampler buffers: never weights to merge."""

VARIANT_IN_CHANNELS: dict[str, int] = {"normal": 4, "inpainting": 9, "pix2pix": 8}
"""Input channels of ``input_blocks.0.0.weight`` per U-Net variant."""

Variant = Literal["normal", "inpainting", "pix2pix"]


@dataclass(frozen=True)
class UNetConfig:
    """The LDM/SGM ``UNetModel`` hyper-parameters that decide key names and shapes."""

    model_channels: int
    channel_mult: tuple[int, ...]
    num_res_blocks: int
    attention_levels: tuple[int, ...]
    """Levels (indices into ``channel_mult``) whose res blocks are followed by a transformer."""
    transformer_depth: tuple[int, ...]
    """Transformer blocks per SpatialTransformer, per level (0 where there is no attention)."""
    transformer_depth_middle: int
    context_dim: int
    linear_proj: bool
    """``proj_in``/``proj_out`` as linear layers [C, C] (SD2, SDXL) or 1x1 convs (SD1)."""
    adm_in_channels: int | None = None
    """Width of SDXL's ``label_emb`` input (pooled text + size embeddings); None: no label_emb."""
    num_heads: int | None = None
    head_channels: int | None = None
    in_channels: int = 4
    out_channels: int = 4

    @property
    def input_block_count(self) -> int:
        levels = len(self.channel_mult)
        return 1 + levels * self.num_res_blocks + (levels - 1)

    @property
    def output_block_count(self) -> int:
        return len(self.channel_mult) * (self.num_res_blocks + 1)


@dataclass(frozen=True)
class TextEncoderSpec:
    """One text encoder: its layout family, where its keys live and its size.

    ``kind`` is ``"hf_clip"`` (Hugging Face ``CLIPTextModel`` names: ``encoder.layers.N``) or
    ``"open_clip"`` (``transformer.resblocks.N``). The ``optional_*`` flags name the keys some
    published files leave out because the model never uses them: the last layer when the
    penultimate layer's output is used, the final norm / projection / logit scale, and the
    ``position_ids`` buffer that newer ``transformers`` versions no longer save.
    """

    kind: Literal["hf_clip", "open_clip"]
    title: str
    prefix: str
    width: int
    layers: int
    heads: int
    vocab_size: int = 49408
    max_positions: int = 77
    optional_last_layer: bool = False
    optional_head: bool = False
    optional_position_ids: bool = False


@dataclass(frozen=True)
class VAEConfig:
    """The LDM ``AutoencoderKL`` (f=8, 4 latent channels) shared by SD1, SD2 and SDXL."""

    prefix: str = VAE_PREFIX
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    z_channels: int = 4
    embed_dim: int = 4
    in_channels: int = 3
    out_channels: int = 3


@dataclass(frozen=True)
class KeyRule:
    """A detection clue: ``weight`` is added when ``key`` is present (with ``ndim`` dimensions
    when given) and subtracted when it is present with another number of dimensions."""

    key: str
    weight: float
    ndim: int | None = None


@dataclass(frozen=True)
class Architecture:
    """A Stable Diffusion family: its configs, merge blocks, prefixes and detection clues."""

    name: str
    title: str
    blocks: tuple[str, ...]
    unet_config: UNetConfig
    text_encoders: tuple[TextEncoderSpec, ...]
    vae: VAEConfig
    text_encoder_prefixes: tuple[str, ...]
    """Prefixes of every text-encoder key (wider than each encoder's own prefix, so older
    layouts such as SD1's ``cond_stage_model.transformer.encoder...`` still classify)."""
    signature: tuple[KeyRule, ...] = ()
    key_aliases: tuple[tuple[str, str], ...] = ()
    """(old prefix, current prefix) pairs for older layouts of the same weights; detection
    reads a key starting with an old prefix (and not already the current one) as the current."""
    unet_prefix: str = UNET_PREFIX
    _block_counts: tuple[int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        n_in = self.unet_config.input_block_count
        n_out = self.unet_config.output_block_count
        if len(self.blocks) != n_in + 1 + n_out:
            raise ValueError(
                f"architecture {self.name}: {len(self.blocks)} block names for a U-Net with "
                f"{n_in} input, 1 middle and {n_out} output blocks"
            )
        object.__setattr__(self, "_block_counts", (n_in, n_out))

    @property
    def first_in(self) -> str:
        return self.blocks[0]

    @property
    def last_out(self) -> str:
        return self.blocks[-1]

    @property
    def blocks_with_base(self) -> tuple[str, ...]:
        """``BASE`` then the U-Net blocks: the order of SuperMerger's 26/20-value vectors."""
        return (BASE, *self.blocks)

    @property
    def prefixes(self) -> dict[Role, tuple[str, ...]]:
        """Key prefixes per role; schedule buffers and markers are recognised by name."""
        return {
            "unet": (self.unet_prefix,),
            "text_encoder": self.text_encoder_prefixes,
            "vae": (self.vae.prefix,),
            "ema": (EMA_PREFIX,),
        }

    def unet_local(self, key: str) -> str | None:
        """The key's name inside the U-Net (prefix removed), or None if it is no U-Net key.

        Keys of a U-Net saved on its own (no ``model.diffusion_model.`` prefix) are
        recognised by their first segment.
        """
        if key.startswith(self.unet_prefix):
            return key[len(self.unet_prefix) :]
        head = key.split(".", 1)[0]
        if head in UNET_TOP_LEVEL and "." in key:
            return key
        return None

    def role(self, key: str) -> Role:
        """What part of a checkpoint ``key`` belongs to."""
        if self.unet_local(key) is not None:
            return "unet"
        if key.startswith(EMA_PREFIX):
            return "ema"
        if key.startswith(self.vae.prefix):
            return "vae"
        if key.startswith(self.text_encoder_prefixes):
            return "text_encoder"
        if key in SCHEDULE_KEYS:
            return "schedule"
        if key in MARKER_KEYS or key.startswith(MARKER_PREFIXES):
            return "marker"
        return "other"

    def block_of(self, key: str, convention: Convention | str = DEFAULT_CONVENTION) -> str | None:
        """The merge block of ``key``: ``"BASE"``, a block name, or None (never merged).

        U-Net keys are matched segment by segment, so ``input_blocks.1.`` is IN01 and never
        IN10. Keys the convention leaves unmerged, EMA copies, schedule buffers, markers and
        ``position_ids`` give None: the output takes them from the first model. Keys of no
        known part ("other") and U-Net keys outside the numbered blocks go with BASE, as in
        MBW, where every key outside the blocks takes ``base_alpha``.
        """
        conv = get_convention(convention)
        if key.endswith("position_ids"):
            return None
        local = self.unet_local(key)
        if local is not None:
            return self._unet_block(local, conv)
        role = self.role(key)
        if role == "vae":
            return self._resolve(conv.vae)
        if role in ("ema", "schedule", "marker"):
            return None
        return BASE

    def _unet_block(self, local: str, conv: Convention) -> str | None:
        parts = local.split(".")
        head = parts[0]
        n_in, n_out = self._block_counts
        if head in ("input_blocks", "output_blocks") and len(parts) > 2 and parts[1].isdigit():
            index = int(parts[1])
            if head == "input_blocks" and index < n_in:
                return f"IN{index:02d}"
            if head == "output_blocks" and index < n_out:
                return f"OUT{index:02d}"
            return BASE
        if head == "middle_block" and len(parts) > 1:
            return "M00"
        if head == "out" and len(parts) > 1:
            return self.last_out
        if head == "time_embed":
            return self._resolve(conv.time_embed)
        if head == "label_emb":
            return self._resolve(conv.label_emb)
        return BASE

    def _resolve(self, target: str | None) -> str | None:
        if target is None or target == BASE:
            return target
        if target == FIRST_IN:
            return self.first_in
        if target == LAST_OUT:
            return self.last_out
        if target not in self.blocks:
            raise ValueError(f"block {target!r} does not exist in {self.name}")
        return target


_REGISTRY: dict[str, Architecture] = {}


def register_architecture(arch: Architecture) -> Architecture:
    """Make ``arch`` known to detection and lookup; returns it. Names must be unique."""
    existing = _REGISTRY.get(arch.name)
    if existing is not None and existing is not arch:
        raise ValueError(f"an architecture named {arch.name!r} is already registered")
    _REGISTRY[arch.name] = arch
    return arch


def architectures() -> tuple[Architecture, ...]:
    """Every registered architecture, in registration order."""
    return tuple(_REGISTRY.values())


def architecture_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def get_architecture(name: str | Architecture) -> Architecture:
    """The architecture called ``name``; ``ValueError`` listing the known names otherwise."""
    if isinstance(name, Architecture):
        return name
    try:
        return _REGISTRY[name]
    except KeyError:
        valid = ", ".join(_REGISTRY)
        raise ValueError(f"unknown architecture {name!r} (known: {valid})") from None


def classify_role(key: str, arch: Architecture | None = None) -> Role:
    """The role of ``key`` under ``arch``, or, with no architecture, under the first registered
    architecture that knows the key's part (for files whose architecture is unknown)."""
    if arch is not None:
        return arch.role(key)
    role: Role = "other"
    for candidate in _REGISTRY.values():
        role = candidate.role(key)
        if role != "other":
            return role
    return role
