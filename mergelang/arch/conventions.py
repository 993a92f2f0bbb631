"""Key -> block conventions: where the keys outside ``input/middle/output_blocks`` go.

Every tool agrees on the U-Net's numbered blocks (``input_blocks.N.`` is ``IN{N}``,
``middle_block.`` is ``M00``, ``output_blocks.N.`` is ``OUT{N}``, ``out.`` is the last OUT
block) and on the text encoders (``BASE``). They disagree on three groups of keys: the U-Net's
timestep embedding (``time_embed.*``), SDXL's size/pooled-text embedding (``label_emb.*``) and
the VAE. A :class:`Convention` names where each of those goes, so a recipe can reproduce the
numbers of the tool its weights were tuned with.

A target is a block name (``"IN00"``), ``"BASE"``, ``"FIRST_IN"`` (the architecture's first
input block, IN00), ``"LAST_OUT"`` (its last output block: OUT11 for SD1/SD2, OUT08 for SDXL),
or ``None``: the key is not merged and the output takes it from the first model.
"""

from __future__ import annotations

from dataclasses import dataclass

FIRST_IN = "FIRST_IN"
LAST_OUT = "LAST_OUT"


@dataclass(frozen=True)
class Convention:
    """Where ``time_embed.*``, ``label_emb.*`` and the VAE go (``None``: not merged)."""

    name: str
    time_embed: str | None
    label_emb: str | None
    vae: str | None
    doc: str


MBW = Convention(
    name="mbw",
    time_embed=FIRST_IN,
    label_emb=FIRST_IN,
    vae="BASE",
    doc=(
        "Merge Block Weighted and kohya's merge script: time_embed (and SDXL label_emb) with "
        "IN00, out.* with the last OUT block, text encoders and VAE with BASE. The default: "
        "the layer-influence study and the 25-value MBW presets were made with it."
    ),
)

KOHYA = Convention(
    name="kohya",
    time_embed=FIRST_IN,
    label_emb=FIRST_IN,
    vae="BASE",
    doc="The same rules as mbw, under the name of kohya's script that introduced them.",
)

SUPERMERGER = Convention(
    name="supermerger",
    time_embed=None,
    label_emb=None,
    vae="BASE",
    doc=(
        "SuperMerger: time_embed and label_emb are not merged (taken from the first model), "
        "out.* with the last OUT block, text encoders and VAE with BASE."
    ),
)

SD_MECHA = Convention(
    name="sd_mecha",
    time_embed="BASE",
    label_emb="BASE",
    vae=None,
    doc=(
        "sd-mecha: time_embed and label_emb with BASE, out.* with the last OUT block, "
        "the VAE not merged (taken from the first model)."
    ),
)

CONVENTIONS: dict[str, Convention] = {c.name: c for c in (MBW, KOHYA, SUPERMERGER, SD_MECHA)}

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
