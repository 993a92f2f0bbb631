"""Architectures as data: components, block schemes, key layouts, detection, alignment.

Importing the package registers the built-in architectures (``sd1``, ``sd2``, ``sdxl``,
``flux-dev``, ``flux-schnell``, ``sd3-medium``, ``sd35-medium``, ``sd35-large``); each lives
in its own data module built from the parts in :mod:`mergelang.arch.parts`. See
``docs/architectures.md``, which also walks through adding one.
"""

from __future__ import annotations

from mergelang.arch import sd1, sd2, sdxl

# isort: split
# Registered after the SD families, whose schemes come first in messages and vectors.
from mergelang.arch import flux, sd3
from mergelang.arch.align import Alignment, KeyPlan, align
from mergelang.arch.architecture import (
    Architecture,
    architecture_names,
    architectures,
    block_schemes,
    classify_role,
    get_architecture,
    register_architecture,
    unregister_architecture,
)
from mergelang.arch.components import (
    ROLES,
    Component,
    ComponentLayout,
    KeyRule,
    Role,
    VariantSpec,
)
from mergelang.arch.conventions import (
    CONVENTION_NAMES,
    DEFAULT_CONVENTION,
    Convention,
    get_convention,
)
from mergelang.arch.detect import Detected, detect
from mergelang.arch.layout import checkpoint_layout, key_dtype, parameter_count
from mergelang.arch.parts.clip import TextEncoderSpec
from mergelang.arch.parts.unet import UNetConfig
from mergelang.arch.parts.vae import VAEConfig
from mergelang.arch.scheme import BASE, BlockRule, BlockScheme, VectorForm

SD1 = sd1.SD1
SD2 = sd2.SD2
SDXL = sdxl.SDXL
SD_BLOCKS = sd1.SD_BLOCKS
FLUX_DEV = flux.FLUX_DEV
FLUX_SCHNELL = flux.FLUX_SCHNELL
FLUX_BLOCKS = flux.FLUX_BLOCKS
SD3_MEDIUM = sd3.SD3_MEDIUM
SD35_MEDIUM = sd3.SD35_MEDIUM
SD35_LARGE = sd3.SD35_LARGE
SDXL_BLOCKS = sdxl.SDXL_BLOCKS

__all__ = [
    "BASE",
    "CONVENTION_NAMES",
    "DEFAULT_CONVENTION",
    "FLUX_BLOCKS",
    "FLUX_DEV",
    "FLUX_SCHNELL",
    "ROLES",
    "SD1",
    "SD2",
    "SD3_MEDIUM",
    "SD35_LARGE",
    "SD35_MEDIUM",
    "SDXL",
    "SDXL_BLOCKS",
    "SD_BLOCKS",
    "Alignment",
    "Architecture",
    "BlockRule",
    "BlockScheme",
    "Component",
    "ComponentLayout",
    "Convention",
    "Detected",
    "KeyPlan",
    "KeyRule",
    "Role",
    "TextEncoderSpec",
    "UNetConfig",
    "VAEConfig",
    "VariantSpec",
    "VectorForm",
    "align",
    "architecture_names",
    "architectures",
    "block_schemes",
    "checkpoint_layout",
    "classify_role",
    "detect",
    "get_architecture",
    "get_convention",
    "key_dtype",
    "parameter_count",
    "register_architecture",
    "unregister_architecture",
]
