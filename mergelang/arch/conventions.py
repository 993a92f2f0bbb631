"""Key -> block conventions: where the keys the tools users know disagree on go.

Every tool agrees on the U-Net's numbered blocks (``input_blocks.N.`` is ``IN{N}``,
``middle_block.`` is ``M00``, ``output_blocks.N.`` is ``OUT{N}``, ``out.`` is the last OUT
block) and on the text encoders (``BASE``). They disagree on three groups of keys: the U-Net's
timestep embedding (``time_embed.*``), SDXL's size/pooled-text embedding (``label_emb.*``) and
the VAE. A block scheme sends those keys to named *slots* (``@time_embed``, ``@label_emb``,
``@vae``; see :mod:`mergelang.arch.scheme`) and a :class:`Convention` says where each slot
goes, so a recipe can reproduce the numbers of the tool its weights were tuned with.

A target is a block name (``"IN00"``), ``BASE``, ``FIRST_BLOCK`` (the scheme's first block,
IN00), ``LAST_BLOCK`` (its last: OUT11 for SD1/SD2, OUT08 for SDXL), or ``None``: the key is
not merged and the output takes it from the first model. A slot a convention does not name
takes the scheme's own target. A convention whose rule differs between block schemes (SD1's
U-Net and SDXL's) gives the difference in ``by_scheme``, keyed by the scheme's name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from mergelang.arch.scheme import BASE, FIRST_BLOCK, LAST_BLOCK

FIRST_IN = FIRST_BLOCK
"""The target "the scheme's first block" (IN00 for the U-Nets)."""


@dataclass(frozen=True)
class Convention:
    """Where each convention slot goes (``None``: not merged).

    ``by_scheme`` maps a block scheme's name (``"sdxl_unet"``) to the slots that differ for
    it; :meth:`slots_for` gives a scheme's slots with those applied.
    """

    name: str
    slots: Mapping[str, str | None] = field(default_factory=lambda: MappingProxyType({}))
    doc: str = ""
    by_scheme: Mapping[str, Mapping[str, str | None]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    supermerger_statistics: bool = False
    """Whether a statistics pass (``cosine_a``/``cosine_b``) measures the keys SuperMerger's
    does: the merged keys outside the VAE (``first_stage_model.``), plus the text encoders'
    ``position_ids`` that both models have, which are never merged. Otherwise it measures
    exactly the merged keys."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "slots", MappingProxyType(dict(self.slots)))
        overrides = {
            scheme: MappingProxyType({**self.slots, **slots})
            for scheme, slots in self.by_scheme.items()
        }
        object.__setattr__(self, "by_scheme", MappingProxyType(overrides))

    def slots_for(self, scheme: str) -> Mapping[str, str | None]:
        """The slots of this convention for the block scheme called ``scheme``."""
        return self.by_scheme.get(scheme, self.slots)

    def __hash__(self) -> int:
        return hash(self.name)

    @property
    def time_embed(self) -> str | None:
        return self.slots.get("time_embed", BASE)

    @property
    def label_emb(self) -> str | None:
        return self.slots.get("label_emb", BASE)

    @property
    def vae(self) -> str | None:
        return self.slots.get("vae", BASE)


MBW = Convention(
    name="mbw",
    slots={"time_embed": FIRST_IN, "label_emb": FIRST_IN, "vae": BASE},
    doc=(
        "Merge Block Weighted and kohya's merge script: time_embed (and SDXL label_emb) with "
        "IN00, out.* with the last OUT block, text encoders and VAE with BASE. The default: "
        "the layer-influence study and the 25-value MBW presets were made with it."
    ),
)

KOHYA = Convention(
    name="kohya",
    slots={"time_embed": FIRST_IN, "label_emb": FIRST_IN, "vae": BASE},
    doc="The same rules as mbw, under the name of kohya's script that introduced them.",
)

SUPERMERGER = Convention(
    name="supermerger",
    slots={"time_embed": FIRST_IN, "label_emb": FIRST_IN, "vae": BASE},
    supermerger_statistics=True,
    doc=(
        "SuperMerger at its current commit (since 2025-11, and SD1 before 2023-07): "
        "time_embed (and SDXL label_emb) with IN00, out.* with the last OUT block, text "
        "encoders and VAE with BASE."
    ),
)

SUPERMERGER_2023 = Convention(
    name="supermerger_2023",
    slots={"time_embed": LAST_BLOCK, "label_emb": None, "vae": BASE},
    by_scheme={"sdxl_unet": {"time_embed": None, "label_emb": None}},
    supermerger_statistics=True,
    doc=(
        "SuperMerger from 2023-07 to 2025-11: SD1/SD2 time_embed with OUT11 (its block index "
        "wrapped around to the last entry), SDXL time_embed and label_emb not merged (taken "
        "from the first model); out.* with the last OUT block, text encoders and VAE with BASE."
    ),
)

SD_MECHA = Convention(
    name="sd_mecha",
    slots={"time_embed": BASE, "label_emb": BASE, "vae": BASE},
    by_scheme={"sdxl_unet": {"vae": None}},
    doc=(
        "sd-mecha 1.1.8: time_embed and label_emb with BASE, out.* with the last OUT block; "
        "the SD1/SD2 VAE with BASE (sd-mecha's SD1 block conversion sends every key outside "
        "model.diffusion_model. to BASE), the SDXL VAE not merged (sd-mecha gives it a VAE "
        "block of its own, which mergelang's block scheme does not have)."
    ),
)


CONVENTIONS: dict[str, Convention] = {
    c.name: c for c in (MBW, KOHYA, SUPERMERGER, SUPERMERGER_2023, SD_MECHA)
}

CONVENTION_NAMES: tuple[str, ...] = tuple(CONVENTIONS)
"""Valid convention names, the default first."""

DEFAULT_CONVENTION = MBW.name


def get_convention(name: str | Convention) -> Convention:
    """The convention called ``name``; ``ValueError`` listing the valid names otherwise."""
    if isinstance(name, Convention):
        return name
    try:
        return CONVENTIONS[name]
    except KeyError:
        valid = ", ".join(CONVENTION_NAMES)
        raise ValueError(f"unknown block convention {name!r} (valid: {valid})") from None
