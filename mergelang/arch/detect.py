"""Which architecture a checkpoint is, from its key names first and its shapes second.

Each registered architecture scores the file: one point per key whose name and number of
dimensions match the architecture's layout, penalties for keys that do not belong, for
expected keys that are missing from a part the file has, and for a wrong number of
dimensions; plus the architecture's own :class:`~mergelang.arch.components.KeyRule` clues (e.g. SD2
is SD1's U-Net with linear ``proj_in``). Names and ranks do not change when widths are scaled,
so tiny fixtures are detected like full-size files. The best score wins if it covers the U-Net
well and leaves few keys unexplained; otherwise the file is an unknown layout and the error
names the closest architecture and the keys that differ. The variant (inpainting,
instruct-pix2pix) is read from the width of the key the architecture's
:class:`~mergelang.arch.components.VariantSpec` names (``input_blocks.0.0.weight``'s input
channels for the U-Nets).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache

from mergelang.arch.architecture import Architecture, architectures, classify_role
from mergelang.arch.components import DENOISER_ROLES, Component, Variant
from mergelang.arch.layout import checkpoint_layout, optional_keys
from mergelang.errors import CheckpointError

UNET_COVERAGE = 0.9
"""Share of the architecture's U-Net keys a file must have (name and rank) to be detected."""
UNEXPECTED_SHARE = 0.1
"""Largest share of a file's model keys that may be foreign to the detected architecture."""
EXAMPLES = 5
"""How many differing keys an error or note quotes."""

_NOT_MODEL = ("ema", "schedule", "marker")
_LORA = re.compile(r"(?:^|[._])(?:lora|lokr|hada|oft)_")
"""Key segments of LoRA-style networks (kohya ``lora_unet_...``, PEFT ``lora_A``, LyCORIS)."""


@dataclass(frozen=True)
class Detected:
    """The result of :func:`detect`: the architecture, the U-Net variant, and remarks worth
    showing a user (EMA present, parts missing, optional keys left out...)."""

    arch: Architecture
    variant: Variant
    notes: tuple[str, ...] = ()
    in_channels: int | None = None


@dataclass(frozen=True)
class _Expected:
    ndims: dict[str, int]
    component: dict[str, str]
    optional: frozenset[str]
    unet_total: int


@cache
def _expected(arch: Architecture) -> _Expected:
    layout = checkpoint_layout(arch)
    component: dict[str, str] = {}
    for key in layout:
        found = arch.component_of(key)
        assert found is not None, key
        component[key] = found[0].title
    denoiser = arch.denoiser.title
    unet_total = sum(1 for c in component.values() if c == denoiser)
    ndims = {key: len(shape) for key, shape in layout.items()}
    return _Expected(ndims, component, optional_keys(arch), unet_total)


@dataclass
class _Match:
    arch: Architecture
    score: float = 0.0
    matched: int = 0
    unet_matched: int = 0
    considered: int = 0
    rank_mismatch: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    optional_missing: int = 0
    components: set[str] = field(default_factory=set)
    aliased: int = 0
    bare_unet: int = 0

    @property
    def unet_coverage(self) -> float:
        total = _expected(self.arch).unet_total
        return self.unet_matched / total if total else 0.0

    @property
    def acceptable(self) -> bool:
        if self.unet_coverage < UNET_COVERAGE:
            return False
        return len(self.unexpected) <= UNEXPECTED_SHARE * max(self.considered, 1)


def normalize_key(arch: Architecture, key: str) -> str:
    """``key`` as it would be named in the architecture's current layout: a bare denoiser
    key gets the denoiser's prefix, an older prefix (``key_aliases``) the current one."""
    prefix = arch.denoiser.prefix
    if not key.startswith(prefix) and arch.denoiser_local(key) is not None:
        return prefix + key
    for old, new in arch.key_aliases:
        if key.startswith(old) and not key.startswith(new):
            return new + key[len(old) :]
    return key


def _score(arch: Architecture, shapes: Mapping[str, tuple[int, ...]]) -> _Match:
    expected = _expected(arch)
    match = _Match(arch)
    denoiser = arch.denoiser
    present: dict[str, tuple[int, ...]] = {}
    for key, shape in shapes.items():
        if arch.role(key) in _NOT_MODEL:
            continue
        match.considered += 1
        name = normalize_key(arch, key)
        if name != key:
            if name.startswith(denoiser.prefix) and not key.startswith(denoiser.prefix):
                match.bare_unet += 1
            else:
                match.aliased += 1
        present[name] = shape
        ndim = expected.ndims.get(name)
        if ndim is None:
            match.unexpected.append(key)
        elif ndim != len(shape):
            match.rank_mismatch.append(key)
        else:
            match.matched += 1
            component = expected.component[name]
            match.components.add(component)
            if component == denoiser.title:
                match.unet_matched += 1
    for key, component in expected.component.items():
        if key in present:
            continue
        if key in expected.optional:
            if component in match.components:
                match.optional_missing += 1
        elif component in match.components or component == denoiser.title:
            match.missing.append(key)
    bonus = 0.0
    for rule in arch.signature:
        found = present.get(rule.key)
        if found is None:
            continue
        bonus += rule.weight if rule.ndim is None or rule.ndim == len(found) else -rule.weight
    match.score = (
        match.matched
        - 2 * len(match.rank_mismatch)
        - len(match.unexpected)
        - len(match.missing)
        + bonus
    )
    return match


def _examples(keys: Sequence[str]) -> str:
    shown = ", ".join(keys[:EXAMPLES])
    return shown + (", ..." if len(keys) > EXAMPLES else "")


def _variant(
    arch: Architecture, shapes: Mapping[str, tuple[int, ...]]
) -> tuple[Variant, int | None]:
    spec = arch.variants
    if spec is None:
        return "normal", None
    found = None
    for key, shape in shapes.items():
        if normalize_key(arch, key) == spec.key:
            found = shape
            break
    if found is None or len(found) != _expected(arch).ndims.get(spec.key):
        return spec.normal, None
    channels = found[spec.dim]
    return spec.of_channels(channels) or spec.normal, channels


def _notes(match: _Match, shapes: Mapping[str, tuple[int, ...]], channels: int | None) -> list[str]:
    arch = match.arch
    notes: list[str] = []
    roles: dict[str, int] = {}
    markers: list[str] = []
    for key in shapes:
        role = arch.role(key)
        roles[role] = roles.get(role, 0) + 1
        if role == "marker":
            markers.append(key)
    if roles.get("ema"):
        ema = f"{arch.denoiser.title} ({arch.ema_prefix}*)"
        notes.append(f"EMA copy of the {ema}: {roles['ema']} keys")
    if roles.get("schedule"):
        notes.append(f"DDPM schedule buffers: {roles['schedule']} keys")
    if markers:
        notes.append(f"prediction markers: {_examples(markers)}")
    absent = [
        c for c in dict.fromkeys(_expected(arch).component.values()) if c not in match.components
    ]
    if absent:
        notes.append("no " + " and no ".join(absent) + " in this file")
    if match.bare_unet:
        denoiser = arch.denoiser
        notes.append(f"{denoiser.title} keys saved without the {denoiser.prefix} prefix")
    if match.aliased:
        notes.append(f"{match.aliased} keys in an older naming (read as the current names)")
    if match.optional_missing:
        notes.append(f"{match.optional_missing} optional text-encoder keys left out")
    if match.missing:
        notes.append(f"{len(match.missing)} keys missing, e.g. {_examples(match.missing)}")
    if match.unexpected:
        notes.append(
            f"{len(match.unexpected)} keys unknown to {arch.name}, "
            f"e.g. {_examples(match.unexpected)}"
        )
    if match.rank_mismatch:
        notes.append(
            f"{len(match.rank_mismatch)} keys with an unexpected number of dimensions, "
            f"e.g. {_examples(match.rank_mismatch)}"
        )
    spec = arch.variants
    if spec is not None and channels is not None and spec.of_channels(channels) is None:
        notes.append(f"unusual {spec.component_title} input channels: {channels}")
    return notes


def detect(shapes: Mapping[str, Sequence[int]], *, path: str | None = None) -> Detected:
    """The architecture and variant of a checkpoint given its key -> shape map.

    Raises :class:`CheckpointError` (code ``unknown-architecture``) when no known architecture
    fits, naming the closest one and a few of the keys that differ.
    """
    where = path if path is not None else "<checkpoint>"
    norm = {key: tuple(int(d) for d in shape) for key, shape in shapes.items()}
    known = architectures()
    if not norm:
        raise CheckpointError(where, "the file holds no tensors", code="unknown-architecture")
    if all(classify_role(key) in _NOT_MODEL for key in norm):
        raise CheckpointError(
            where,
            "the file holds no model weights (only EMA, schedule or marker keys)",
            code="unknown-architecture",
        )
    layout = (tuple(norm.items()), tuple(id(arch) for arch in known))
    found = _DETECTED.get(layout)
    if found is not None:
        return found
    matches = [_score(arch, norm) for arch in known]
    best = max(matches, key=lambda m: m.score)
    if not best.acceptable:
        raise _partial(where, best, norm) or _unknown(where, best, known)
    variant, channels = _variant(best.arch, norm)
    found = Detected(best.arch, variant, tuple(_notes(best, norm, channels)), channels)
    if len(_DETECTED) >= _DETECTED_KEPT:
        _DETECTED.pop(next(iter(_DETECTED)))
    _DETECTED[layout] = found
    return found


_DETECTED: dict[tuple[object, ...], Detected] = {}
"""What :func:`detect` found for the last few distinct layouts (key names, shapes and the
architectures known), oldest first: a recipe's inputs are mostly files of one layout, and
scoring every architecture against a few thousand keys takes tens of milliseconds a file."""
_DETECTED_KEPT = 16


def _partial(
    where: str, best: _Match, shapes: Mapping[str, tuple[int, ...]]
) -> CheckpointError | None:
    """The error for a file that is not a whole checkpoint (a LoRA, a VAE or text encoder
    on its own), or ``None`` when the file has U-Net keys of its own."""
    keys = [key for key in shapes if classify_role(key) not in _NOT_MODEL]
    lora = [key for key in keys if _LORA.search(key)]
    if lora and 2 * len(lora) >= len(keys):
        return CheckpointError(
            where,
            f"not a checkpoint: {len(lora)} of the file's {len(keys)} keys are LoRA-style "
            f"network weights, e.g. {_examples(lora)}",
            code="unknown-architecture",
            hint="mergelang merges whole checkpoints; apply the LoRA to a checkpoint first",
        )
    arch = best.arch
    if any(arch.role(normalize_key(arch, key)) in DENOISER_ROLES for key in keys):
        return None
    encoder = _text_encoder_file(arch, keys)
    if encoder is not None:
        return CheckpointError(
            where,
            f"not a whole checkpoint: the file holds a {encoder.title} on its own "
            f"({len(keys)} keys)",
            code="unknown-architecture",
            hint=(
                "a text-encoder file is baked into an output with the save's clip_l=, clip_g= "
                "or t5= option; mergelang merges whole checkpoints (at least the denoiser)"
            ),
        )
    vae = _bare_vae(arch, keys)
    if vae is not None:
        held = f"a VAE on its own (without the {vae.prefix} prefix)"
    elif best.components:
        held = "only the " + " and the ".join(sorted(best.components))
    else:
        return None
    vae_only = held.startswith("a VAE") or best.components == {"VAE"}
    return CheckpointError(
        where,
        f"not a whole checkpoint: the file has no U-Net keys; it holds {held} ({len(keys)} keys)",
        code="unknown-architecture",
        hint=(
            "a VAE file is baked into an output with the save's vae= option"
            if vae_only
            else "mergelang merges whole checkpoints (at least a U-Net)"
        ),
    )


TEXT_ENCODER_HEAD = "transformer."
"""What ComfyUI puts before a text encoder's own names inside a checkpoint; a separate
text-encoder file (``t5xxl_fp16.safetensors``) has the names without it."""


def _text_encoder_file(best: Architecture, keys: Sequence[str]) -> Component | None:
    """The text-encoder component whose keys, without its prefix (and without ComfyUI's
    ``transformer.``), are what ``keys`` name: a separate text-encoder file."""
    if not keys:
        return None
    for arch in (best, *architectures()):
        for comp in arch.components_with("text_encoder"):
            names = set(comp.spec.layout(1.0))
            if all(
                key in names or TEXT_ENCODER_HEAD + key in names or comp.local(key) in names
                for key in keys
            ):
                return comp
    return None


def _bare_vae(best: Architecture, keys: Sequence[str]) -> Component | None:
    """The VAE component whose keys, without its prefix, are exactly what ``keys`` name:
    the closest architecture's first, then every other's (an SD VAE has the quant convs the
    16-channel VAEs lack)."""
    for arch in (best, *architectures()):
        names = _expected(arch).component
        for vae in arch.components_with("vae"):
            if all(names.get(vae.prefix + key) == vae.title for key in keys):
                return vae
    return None


def _unknown(where: str, best: _Match, known: Sequence[Architecture]) -> CheckpointError:
    arch = best.arch
    total = _expected(arch).unet_total
    if best.unet_coverage < UNET_COVERAGE:
        reason = f"only {best.unet_matched} of its {total} {arch.denoiser.title} keys match"
    else:
        reason = f"{len(best.unexpected)} of the file's {best.considered} keys are foreign to it"
    parts = [
        f"unknown checkpoint layout; the closest known architecture is {arch.name} "
        f"({arch.title}), but {reason}"
    ]
    if best.missing:
        parts.append(f"{len(best.missing)} keys missing, e.g. {_examples(best.missing)}")
    if best.unexpected:
        parts.append(f"{len(best.unexpected)} keys unexpected, e.g. {_examples(best.unexpected)}")
    if best.rank_mismatch:
        parts.append(
            f"{len(best.rank_mismatch)} keys with another number of dimensions, "
            f"e.g. {_examples(best.rank_mismatch)}"
        )
    names = ", ".join(f"{a.name} ({a.title})" for a in known)
    return CheckpointError(
        where,
        "; ".join(parts),
        code="unknown-architecture",
        hint=f"mergelang knows {names}",
    )
