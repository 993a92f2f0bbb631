"""Every key of a checkpoint and its shape, generated from an architecture's components.

Each component's config generates its keys (local names, ``state_dict`` order, see
:mod:`mergelang.arch.parts`); this module puts them under their prefixes in the order a
single-file checkpoint holds them: noise-schedule buffers, the denoiser, its EMA copy, then
the other components in the architecture's order. ``scale`` shrinks the widths while every
key name stays the real one, which is what lets the test fixtures be tiny files with the real
layout. Scaled widths are rounded to multiples of 8 (at least 8); at ``scale=1.0`` the shapes
are the published ones.

Pure Python: no torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from math import prod
from typing import Literal

from mergelang.arch.architecture import Architecture, get_architecture
from mergelang.arch.components import Component, Layout, Shape
from mergelang.arch.parts.widths import scaled_width

__all__ = [
    "EMA_DECAY_KEY",
    "EMA_DECAY_SUFFIX",
    "EMA_NUM_UPDATES_KEY",
    "EMA_NUM_UPDATES_SUFFIX",
    "FILE_LAYOUTS",
    "SCHEDULE_STEPS",
    "FileLayout",
    "Layout",
    "Shape",
    "canonical_names",
    "checkpoint_layout",
    "component_layout",
    "ema_key",
    "ema_layout",
    "file_layout",
    "key_dtype",
    "optional_keys",
    "output_name",
    "parameter_count",
    "scaled_width",
    "schedule_layout",
]

FileLayout = Literal["all_in_one", "bare"]
FILE_LAYOUTS: tuple[FileLayout, ...] = ("all_in_one", "bare")
"""How a file names its keys: ``all_in_one`` puts every component under its prefix
(``model.diffusion_model.``, ``vae.``, ``text_encoders.``...); ``bare`` holds the denoiser alone
with unprefixed names (Black Forest Labs' Flux.1 release form, a U-Net shared on its own)."""

SCHEDULE_STEPS = 1000
EMA_DECAY_SUFFIX = "decay"
EMA_NUM_UPDATES_SUFFIX = "num_updates"
EMA_DECAY_KEY = "model_ema." + EMA_DECAY_SUFFIX
EMA_NUM_UPDATES_KEY = "model_ema." + EMA_NUM_UPDATES_SUFFIX
"""The two scalars of an LDM training checkpoint's EMA copy (int32 update counter)."""


def component_layout(
    component: Component,
    *,
    scale: float = 1.0,
    in_channels: int | None = None,
    omit_optional: bool = False,
) -> Layout:
    """The component's keys (with its prefix) and shapes; ``omit_optional`` leaves out the
    keys published files may lack."""
    local = component.spec.layout(scale, in_channels=in_channels)
    skip = component.spec.optional_keys() if omit_optional else frozenset()
    return {component.prefix + key: shape for key, shape in local.items() if key not in skip}


def ema_key(denoiser_key: str, prefix: str = "model_ema.") -> str:
    """The EMA copy's name for a denoiser key: ``model.`` dropped, dots removed, the EMA
    prefix prepended (``model_ema.diffusion_modelinput_blocks00weight``)."""
    local = denoiser_key.removeprefix("model.")
    return prefix + local.replace(".", "")


def ema_layout(denoiser: Mapping[str, Shape], prefix: str = "model_ema.") -> Layout:
    out: Layout = {prefix + EMA_DECAY_SUFFIX: (), prefix + EMA_NUM_UPDATES_SUFFIX: ()}
    for key, shape in denoiser.items():
        out[ema_key(key, prefix)] = shape
    return out


def schedule_layout(keys: tuple[str, ...]) -> Layout:
    return {key: (SCHEDULE_STEPS,) for key in keys}


def checkpoint_layout(
    arch_name: str | Architecture,
    *,
    scale: float = 1.0,
    variant: str = "normal",
    ema: bool = False,
    schedule: bool = False,
    omit_optional: bool = False,
    bare: bool = False,
) -> Layout:
    """Every key of a single-file checkpoint with its shape, in ``state_dict`` order:
    schedule buffers, denoiser, its EMA copy, the other components.

    ``bare`` gives a diffusion-only file instead: the denoiser alone, its keys without the
    prefix (the way Black Forest Labs ship Flux.1 and U-Nets are shared on their own)."""
    arch = get_architecture(arch_name)
    in_channels = _variant_channels(arch, variant)
    if bare:
        local = arch.denoiser.spec.layout(scale, in_channels=in_channels)
        return dict(local)
    out: Layout = {}
    if schedule and arch.schedule_keys:
        out.update(schedule_layout(arch.schedule_keys))
    for comp in arch.components:
        is_denoiser = comp is arch.denoiser
        layout = component_layout(
            comp,
            scale=scale,
            in_channels=in_channels if is_denoiser else None,
            omit_optional=omit_optional,
        )
        out.update(layout)
        if is_denoiser and ema and arch.ema_prefix is not None:
            out.update(ema_layout(layout, arch.ema_prefix))
    return out


def _variant_channels(arch: Architecture, variant: str) -> int | None:
    spec = arch.variants
    if spec is None:
        if variant != "normal":
            raise ValueError(f"unknown variant {variant!r} (valid: normal)")
        return None
    try:
        return spec.channels[variant]
    except KeyError:
        valid = ", ".join(spec.channels)
        raise ValueError(f"unknown variant {variant!r} (valid: {valid})") from None


def optional_keys(arch_name: str | Architecture) -> frozenset[str]:
    """Every key of the architecture that a published file may leave out."""
    arch = get_architecture(arch_name)
    keys: set[str] = set()
    for comp in arch.components:
        keys.update(comp.prefix + key for key in comp.spec.optional_keys())
    return frozenset(keys)


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


def file_layout(arch: Architecture, keys: Iterable[str]) -> FileLayout:
    """Whether a file of ``arch`` with these keys is ``bare`` (denoiser keys without their
    prefix, and none with it) or ``all_in_one``."""
    denoiser = arch.denoiser
    bare = False
    for key in keys:
        if key.startswith(denoiser.prefix):
            return "all_in_one"
        if not bare and denoiser.local(key) is not None:
            bare = True
    return "bare" if bare else "all_in_one"


def canonical_names(arch: Architecture, keys: Iterable[str]) -> dict[str, str]:
    """Each key of a file -> its name in the architecture's all-in-one layout, for the keys
    whose names differ: a bare file's denoiser keys get the denoiser's prefix. Inputs of both
    layouts are merged under these names, so their keys line up."""
    names = list(keys)
    if file_layout(arch, names) != "bare":
        return {}
    denoiser = arch.denoiser
    return {key: denoiser.prefix + key for key in names if denoiser.local(key) is not None}


def output_name(arch: Architecture, key: str, layout: FileLayout) -> str | None:
    """The name a canonical (all-in-one) key is written under in a file of ``layout``, or
    ``None`` when that layout has no place for it (a bare file holds the denoiser alone)."""
    if layout == "all_in_one":
        return key
    prefix = arch.denoiser.prefix
    return key[len(prefix) :] if key.startswith(prefix) else None
