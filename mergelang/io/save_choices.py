"""What a save can choose: one table of dtypes, ``with`` options and formats, and
:class:`SaveOptions`, the choices of one output.

The parser (Merge Board flags), the checker (``save ... as DTYPE with KEY=VALUE``), the
converters and the planner all read these tables; none of it imports torch. The formats
and their file suffixes are :data:`~mergelang.io.file_formats.FILE_FORMATS`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType

from mergelang.arch.prediction import PREDICTIONS
from mergelang.errors import UsageError
from mergelang.io.file_formats import FILE_FORMATS, SCALED_FP8_SAFETENSORS, FileFormat

__all__ = [
    "COMPONENT_FILES",
    "GGUF_TYPES",
    "SAVE_CHOICES",
    "SAVE_DTYPES",
    "SCALED_FP8",
    "SaveOptions",
    "listed",
]

SAVE_DTYPES: Mapping[str, str] = MappingProxyType(
    {
        "fp16": "F16",
        "bf16": "BF16",
        "fp32": "F32",
        "fp8": "F8_E4M3",
        "fp8_e5m2": "F8_E5M2",
        "fp8_scaled": "F8_E4M3",
        "q8_0": "F32",
        "q5_1": "F32",
        "q5_0": "F32",
        "q4_1": "F32",
        "q4_0": "F32",
        "q6_k": "F32",
        "q5_k": "F32",
        "q4_k": "F32",
        "q2_k": "F32",
    }
)
"""Output dtype names accepted in recipes and on the command line -> safetensors code
(``fp8`` is ``float8_e4m3fn``; which keys an fp8 save keeps wider is :mod:`mergelang.io.fp8`;
``fp8_scaled`` is ComfyUI's scaled fp8, :mod:`mergelang.io.scaled_fp8`)."""

GGUF_TYPES: Mapping[str, str] = MappingProxyType(
    {
        "q8_0": "Q8_0",
        "q5_1": "Q5_1",
        "q5_0": "Q5_0",
        "q4_1": "Q4_1",
        "q4_0": "Q4_0",
        "q6_k": "Q6_K",
        "q5_k": "Q5_K",
        "q4_k": "Q4_K",
        "q2_k": "Q2_K",
    }
)
"""The save dtypes that quantise a GGUF output -> GGML type (their keys are laid out as
float32 and quantised by the GGUF sink: :mod:`mergelang.io.gguf_format`)."""

SCALED_FP8 = "fp8_scaled"
"""The save dtype written as a scaled fp8 safetensors file."""

SAVE_CHOICES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "ema": ("keep", "drop"),
        "schedule": ("keep", "drop"),
        "position_ids": ("keep", "reset"),
        "format": tuple(FILE_FORMATS),
        "layout": ("all_in_one", "bare"),
        "prediction": ("auto", *PREDICTIONS),
    }
)
"""``save ... with KEY=VALUE``: each option with a fixed set of values, and those values
(the first listed is not always the default: see :class:`SaveOptions`; ``layout`` unset
follows the save's first input)."""


COMPONENT_FILES: Mapping[str, str] = MappingProxyType(
    {"clip_l": "clip_l", "clip_g": "clip_g", "t5": "t5xxl"}
)
"""``save ... with OPTION="file"``: the text-encoder files a save can bake in, each option ->
the name of the architecture's component it replaces (``vae=`` is the VAE's)."""


def listed(names: Iterable[str]) -> str:
    """``["fp16", "bf16", "fp32"]`` -> ``"fp16, bf16 or fp32"``."""
    items = list(names)
    if len(items) < 2:
        return "".join(items)
    return ", ".join(items[:-1]) + " or " + items[-1]


@dataclass(frozen=True)
class SaveOptions:
    """How to store one output. ``dtype`` is a name of :data:`SAVE_DTYPES` or ``None`` (each
    key keeps its own); the other fields take the values of :data:`SAVE_CHOICES`. ``layout``
    ``None`` names the keys as the save's first input does (see
    :data:`mergelang.arch.layout.FILE_LAYOUTS`)."""

    dtype: str | None = None
    ema: str = "drop"
    schedule: str = "keep"
    vae: Path | None = None
    position_ids: str = "keep"
    format: str = "safetensors"
    layout: str | None = None
    prediction: str = "auto"
    """``auto``: the inputs' common prediction (:mod:`mergelang.arch.prediction`); or the
    one the output declares."""

    def __post_init__(self) -> None:
        if self.dtype is not None and self.dtype not in SAVE_DTYPES:
            raise UsageError(
                f"unknown save dtype {self.dtype!r}", hint="use " + listed(SAVE_DTYPES)
            )
        for name, choices in SAVE_CHOICES.items():
            value = getattr(self, name)
            if value not in choices and not (name == "layout" and value is None):
                raise UsageError(
                    f"unknown {name} option {value!r}", hint="use " + " or ".join(choices)
                )
        if self.dtype == SCALED_FP8 and self.format != "safetensors":
            raise UsageError(
                f"a {self.format} file cannot hold scaled fp8",
                hint="save fp8_scaled as safetensors, or use fp8 or fp16",
            )
        if self.dtype in GGUF_TYPES and self.format != "gguf":
            raise UsageError(
                f"{self.dtype} is a GGUF quantisation, but the output is {self.format}",
                hint="save it to a .gguf file (or with format=gguf)",
            )
        if self.format == "gguf" and self.dtype is not None and self.dtype.startswith("fp8"):
            raise UsageError(
                "a GGUF file cannot hold fp8", hint="use " + listed(GGUF_TYPES) + " or fp16"
            )
        if self.vae is not None and not isinstance(self.vae, Path):
            object.__setattr__(self, "vae", Path(self.vae))

    @property
    def dtype_code(self) -> str | None:
        """The safetensors code floats are saved as, or ``None`` to keep each key's."""
        return None if self.dtype is None else SAVE_DTYPES[self.dtype]

    @property
    def file_format(self) -> FileFormat:
        """The format's line of :data:`~mergelang.io.file_formats.FILE_FORMATS` (for a save
        ``as fp8_scaled``, its scaled fp8 variant)."""
        if self.dtype == SCALED_FP8:
            return SCALED_FP8_SAFETENSORS
        if self.dtype is not None and self.dtype in GGUF_TYPES:
            return replace(FILE_FORMATS[self.format], quant=GGUF_TYPES[self.dtype])
        return FILE_FORMATS[self.format]
