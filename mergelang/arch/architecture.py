"""What an architecture is: components, block schemes, detection clues, variants; a registry.

An :class:`Architecture` is plain data (frozen dataclasses): the components a checkpoint of it
holds (:mod:`mergelang.arch.components`), one or more block schemes
(:mod:`mergelang.arch.scheme`; the first is the one plain weight vectors and block names are
read in), the :class:`KeyRule` clues detection adds to its name-by-name score, the variants
(inpainting...) and the training extras some files carry (an EMA copy of the denoiser, noise
schedule buffers). Every key name and shape of a checkpoint follows from the components
(:mod:`mergelang.arch.layout`), and :meth:`Architecture.block_of` maps any key to its merge
block. Supporting another architecture is writing one data module that builds an
``Architecture`` and calls :func:`register_architecture`; nothing else changes.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from mergelang.arch.components import (
    DENOISER_ROLES,
    Component,
    KeyRule,
    Role,
    VariantSpec,
)
from mergelang.arch.conventions import DEFAULT_CONVENTION, Convention, get_convention
from mergelang.arch.scheme import BASE, BlockScheme

__all__ = [
    "MARKER_KEYS",
    "MARKER_PREFIXES",
    "Architecture",
    "architecture_names",
    "architectures",
    "block_schemes",
    "classify_role",
    "get_architecture",
    "register_architecture",
    "unregister_architecture",
]

MARKER_KEYS: frozenset[str] = frozenset({"v_pred", "ztsnr", "denoiser.sigmas"})
MARKER_PREFIXES: tuple[str, ...] = ("edm_vpred.", "edm_eps.", "denoiser.")
"""Keys that mark a prediction type or hold sampler buffers: never weights to merge."""


@dataclass(frozen=True)
class Architecture:
    """A model family: its components, block schemes, detection clues and variants.

    ``claims`` maps wider prefixes to a role for keys no component's prefix matches (SD1's
    older ``cond_stage_model.transformer.encoder...`` names are still text-encoder keys).
    ``key_aliases`` are (old prefix, current prefix) pairs detection reads as the current
    names. ``ema_prefix`` and ``schedule_keys`` describe the training extras: the EMA copy of
    the denoiser (its names without ``model.`` and without dots, under the prefix) and the
    noise-schedule buffers, none of which are ever merged.
    """

    name: str
    title: str
    components: tuple[Component, ...]
    schemes: tuple[BlockScheme, ...]
    signature: tuple[KeyRule, ...] = ()
    claims: tuple[tuple[str, Role], ...] = ()
    key_aliases: tuple[tuple[str, str], ...] = ()
    variants: VariantSpec | None = None
    ema_prefix: str | None = None
    schedule_keys: tuple[str, ...] = ()
    modelspec: str = ""
    """The model-spec architecture id outputs carry (``stable-diffusion-v1``)."""
    prediction_markers: bool = False
    """Whether checkpoints mark their prediction with ``v_pred``/``ztsnr`` keys, decided by
    the rule of :mod:`mergelang.arch.prediction`."""
    _blocks: dict[tuple[str, str], str | None] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        denoisers = [c for c in self.components if c.role in DENOISER_ROLES]
        if len(denoisers) != 1:
            raise ValueError(f"architecture {self.name}: needs exactly one denoiser component")
        if not self.schemes:
            raise ValueError(f"architecture {self.name}: needs a block scheme")
        names = [c.name for c in self.components]
        if len(set(names)) != len(names):
            raise ValueError(f"architecture {self.name}: two components share a name")

    def __hash__(self) -> int:
        return hash(self.name)

    # -- parts

    @functools.cached_property
    def denoiser(self) -> Component:
        """The U-Net or transformer: the part every checkpoint of this architecture has
        (kept once found: detection and key roles ask for it per key)."""
        return next(c for c in self.components if c.role in DENOISER_ROLES)

    @property
    def scheme(self) -> BlockScheme:
        """The block scheme plain vectors and block names are read in."""
        return self.schemes[0]

    @property
    def blocks(self) -> tuple[str, ...]:
        """The merge blocks of :attr:`scheme`, in order."""
        return self.scheme.blocks

    def component(self, name: str) -> Component:
        for comp in self.components:
            if comp.name == name:
                return comp
        raise KeyError(f"architecture {self.name} has no component {name!r}")

    def components_with(self, role: Role) -> tuple[Component, ...]:
        return tuple(c for c in self.components if c.role == role)

    def component_of(self, key: str) -> tuple[Component, str] | None:
        """The component ``key`` belongs to and its name inside it, or ``None``."""
        for comp in self.components:
            local = comp.local(key)
            if local is not None:
                return comp, local
        return None

    def denoiser_local(self, key: str) -> str | None:
        """The key's name inside the denoiser (prefix removed), or None if it is no
        denoiser key. Keys of a denoiser saved on its own (no prefix) are recognised by
        their first segment."""
        return self.denoiser.local(key)

    # -- roles and blocks

    def role(self, key: str) -> Role:
        """What part of a checkpoint ``key`` belongs to."""
        denoiser = self.denoiser
        if denoiser.local(key) is not None:
            return denoiser.role
        if self.ema_prefix is not None and key.startswith(self.ema_prefix):
            return "ema"
        found = self.component_of(key)
        if found is not None:
            return found[0].role
        for prefix, role in self.claims:
            if key.startswith(prefix):
                return role
        if key in self.schedule_keys:
            return "schedule"
        if key in MARKER_KEYS or key.startswith(MARKER_PREFIXES):
            return "marker"
        return "other"

    def block_of(self, key: str, convention: Convention | str = DEFAULT_CONVENTION) -> str | None:
        """The merge block of ``key`` in :attr:`scheme`: ``"BASE"``, a block name, or None
        (never merged).

        Component keys follow the scheme's rules, segment by segment, so
        ``input_blocks.1.`` is IN01 and never IN10. EMA copies, schedule buffers, markers and
        ``position_ids`` give None: the output takes them from the first model. Keys of no
        known part ("other") and keys no rule places go with BASE, as in MBW, where every
        key outside the blocks takes ``base_alpha``.
        """
        conv = get_convention(convention)
        memo = self._blocks
        found = memo.get((conv.name, key), _UNSET)
        if found is _UNSET:
            found = self._block_of(key, conv)
            memo[conv.name, key] = found
        return found

    def _block_of(self, key: str, conv: Convention) -> str | None:
        if key.endswith("position_ids"):
            return None
        denoiser = self.denoiser
        local = denoiser.local(key)
        if local is not None:
            return self.scheme.block_of(denoiser.name, local, conv.slots_for(self.scheme.name))
        if self.role(key) in ("ema", "schedule", "marker"):
            return None
        found = self.component_of(key)
        if found is not None:
            comp, local = found
            return self.scheme.block_of(comp.name, local, conv.slots_for(self.scheme.name))
        return BASE


_UNSET = "\0unset"

_REGISTRY: dict[str, Architecture] = {}


def register_architecture(arch: Architecture) -> Architecture:
    """Make ``arch`` known to detection and lookup; returns it. Names must be unique, and a
    block scheme name names one scheme (architectures may share a scheme object)."""
    existing = _REGISTRY.get(arch.name)
    if existing is not None and existing is not arch:
        raise ValueError(f"an architecture named {arch.name!r} is already registered")
    for scheme in arch.schemes:
        for other in block_schemes():
            if other.name == scheme.name and other != scheme:
                raise ValueError(f"a block scheme named {scheme.name!r} is already registered")
    _REGISTRY[arch.name] = arch
    return arch


def unregister_architecture(name: str) -> Architecture | None:
    """Forget the architecture called ``name`` (a plugin being reloaded, a test's own
    architecture); returns it, or ``None`` when none was registered."""
    return _REGISTRY.pop(name, None)


def architectures() -> tuple[Architecture, ...]:
    """Every registered architecture, in registration order."""
    return tuple(_REGISTRY.values())


def architecture_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def block_schemes() -> tuple[BlockScheme, ...]:
    """Every block scheme of a registered architecture, each once, in registration order."""
    found: dict[str, BlockScheme] = {}
    for arch in _REGISTRY.values():
        for scheme in arch.schemes:
            found.setdefault(scheme.name, scheme)
    return tuple(found.values())


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
