"""Stable Diffusion architectures as data: configs, key layouts, key -> block, detection.

Importing the package registers the built-in architectures (``sd1``, ``sd2``, ``sdxl``); each
lives in its own data module. See ``docs/architectures.md``.
"""

from __future__ import annotations

from mergelang.arch import sd1, sd2, sdxl
from mergelang.arch.align import Alignment, KeyPlan, align
from mergelang.arch.base import (
    ROLES,
    Architecture,
    KeyRule,
    Role,
    TextEncoderSpec,
    UNetConfig,
    VAEConfig,
    architecture_names,
    architectures,
    classify_role,
    get_architecture,
    register_architecture,
)
from mergelang.arch.blocks import BASE, SD_BLOCKS, SDXL_BLOCKS
from mergelang.arch.conventions import (
    CONVENTION_NAMES,
    DEFAULT_CONVENTION,
    Convention,
    get_convention,
)
from mergelang.arch.detect import Detected, detect
from mergelang.arch.layout import checkpoint_layout, key_dtype, parameter_count

SD1 = sd1.SD1
SD2 = sd2.SD2
SDXL = sdxl.SDXL

__all__ = [
    "BASE",
    "CONVENTION_NAMES",
    "DEFAULT_CONVENTION",
    "ROLES",
    "SD1",
    "SD2",
    "SDXL",
    "SDXL_BLOCKS",
    "SD_BLOCKS",
    "Alignment",
    "Architecture",
    "Convention",
    "Detected",
    "KeyPlan",
    "KeyRule",
    "Role",
    "TextEncoderSpec",
    "UNetConfig",
    "VAEConfig",
    "align",
    "architecture_names",
    "architectures",
    "checkpoint_layout",
    "classify_role",
    "detect",
    "get_architecture",
    "get_convention",
    "key_dtype",
    "parameter_count",
    "register_architecture",
]
