"""The parts of a checkpoint: a denoiser (U-Net or transformer), text encoders, a VAE.

A :class:`Component` says where a part's keys live in a file (its prefix, and for a part that
is also shipped on its own, the first name segments that recognise its keys without the
prefix) and what they are: its :class:`ComponentLayout` generates every key name and shape of
the part at any width scale, which is what detection scores files against and what the test
fixtures are made from. Pure Python: no torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, Protocol

__all__ = [
    "DENOISER_ROLES",
    "ROLES",
    "Component",
    "ComponentLayout",
    "KeyRule",
    "Layout",
    "Role",
    "Shape",
    "Variant",
    "VariantSpec",
]

Shape = tuple[int, ...]
Layout = dict[str, Shape]

Role = Literal["unet", "transformer", "text_encoder", "vae", "ema", "schedule", "marker", "other"]

ROLES: tuple[Role, ...] = (
    "unet",
    "transformer",
    "text_encoder",
    "vae",
    "ema",
    "schedule",
    "marker",
    "other",
)
"""Every role a key can have, in the order reports list them."""

DENOISER_ROLES: frozenset[Role] = frozenset({"unet", "transformer"})
"""The roles of the part that denoises: the one a checkpoint cannot be without."""


class ComponentLayout(Protocol):
    """What a component's config can tell: its keys and shapes (local names, in
    ``state_dict`` order) at a width scale, and which of them published files may leave
    out. ``in_channels`` replaces the denoiser's input channels (an inpainting U-Net has 9)."""

    def layout(self, scale: float = 1.0, *, in_channels: int | None = None) -> Layout: ...

    def optional_keys(self) -> frozenset[str]: ...


@dataclass(frozen=True)
class Component:
    """One part of a checkpoint.

    ``name`` identifies it in block rules (``"unet"``, ``"clip_l"``); ``title`` names it in
    messages (``"U-Net"``, ``"text encoder CLIP ViT-L/14"``). ``prefix`` is the prefix of
    its keys in the layout mergelang writes; ``aliases`` are other prefixes files use for
    the same keys (``cond_stage_model.`` covers SD1's older text-encoder names too).
    ``bare_heads``: first name segments that identify the part's keys saved without any
    prefix (a U-Net or a Flux transformer shipped on its own); a head may be a whole key
    (MMDiT's ``pos_embed``).
    """

    name: str
    title: str
    role: Role
    prefix: str
    spec: ComponentLayout
    aliases: tuple[str, ...] = ()
    bare_heads: frozenset[str] = frozenset()

    @property
    def prefixes(self) -> tuple[str, ...]:
        return (self.prefix, *self.aliases)

    def local(self, key: str) -> str | None:
        """The key's name inside this part, or ``None`` when it is not one of its keys."""
        if key.startswith(self.prefix):
            return key[len(self.prefix) :]
        for alias in self.aliases:
            if key.startswith(alias):
                return key[len(alias) :]
        if self.bare_heads and key.split(".", 1)[0] in self.bare_heads:
            return key
        return None


@dataclass(frozen=True)
class KeyRule:
    """A detection clue: ``weight`` is added when ``key`` is present (with ``ndim``
    dimensions when given) and subtracted when it is present with another number of
    dimensions."""

    key: str
    weight: float
    ndim: int | None = None


Variant = str
"""A name from :attr:`VariantSpec.channels` (``normal``, ``inpainting``, ``pix2pix``...)."""


@dataclass(frozen=True)
class VariantSpec:
    """How variants of one architecture differ: the input width of one key of the denoiser.

    ``key`` is the key's full name in the canonical layout, ``dim`` the dimension that
    differs, ``channels`` each variant's width there (the first is the normal one) and
    ``titles`` how messages name them. Two inputs whose widths differ there are merged on the
    normal variant's channels when exactly one of them is wider; see
    :mod:`mergelang.arch.align`.
    """

    key: str
    dim: int
    channels: Mapping[Variant, int]
    titles: Mapping[Variant, str]
    component_title: str = "U-Net"
    modelspec_suffixes: Mapping[Variant, str] = field(default_factory=lambda: MappingProxyType({}))
    """What each variant adds to the architecture's model-spec id (``-inpainting``)."""

    @property
    def normal(self) -> Variant:
        return next(iter(self.channels))

    @property
    def normal_channels(self) -> int:
        return self.channels[self.normal]

    def of_channels(self, count: int) -> Variant | None:
        for variant, width in self.channels.items():
            if width == count:
                return variant
        return None
