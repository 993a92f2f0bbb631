"""Saving as fp8: which keys take the 8-bit type, and a cast that saturates and counts.

``as fp8`` saves as ``float8_e4m3fn`` (safetensors ``F8_E4M3``, largest value 448, no
infinities), ``as fp8_e5m2`` as ``float8_e5m2`` (``F8_E5M2``, largest finite value 57344).
A value is rounded to the nearest representable one by torch's own cast, from the float32
result of the merge. Torch's cast does not saturate: beyond the range, ``float8_e4m3fn``
gives NaN and ``float8_e5m2`` infinity. :func:`saturating_cast` clamps to the format's
largest finite value first and returns how many values it clamped, which the run reports as
a warning per output (never a silent NaN). NaN stays NaN (the ``nan`` policy of the run
decides about those).

Which keys take the 8-bit type (:func:`keeps_precision`): like ComfyUI's scaled fp8
releases and the Flux fp8 checkpoints' quantised layers, only the weight matrices and
convolution kernels (floating-point tensors of two or more dimensions) are stored in fp8.
Biases, norm scales and every other tensor of fewer than two dimensions keep their own
type: they are a tiny part of the bytes (under 0.1% of Flux or SDXL) and the most sensitive
to rounding. Embedding tables are matrices and are stored in fp8 like the other weights.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from mergelang.errors import Diagnostic

if TYPE_CHECKING:
    import torch

__all__ = [
    "FP8_CODES",
    "FP8_MAX",
    "clamped_warning",
    "is_fp8_code",
    "keeps_precision",
    "saturating_cast",
]

FP8_CODES: frozenset[str] = frozenset({"F8_E4M3", "F8_E5M2"})
"""The safetensors codes of the 8-bit float types."""

FP8_MAX: dict[str, float] = {"F8_E4M3": 448.0, "F8_E5M2": 57344.0}
"""The largest finite value of each fp8 type (``torch.finfo(...).max``)."""


def is_fp8_code(code: str | None) -> bool:
    return code in FP8_CODES


def keeps_precision(shape: Sequence[int]) -> bool:
    """Whether a floating-point key of ``shape`` keeps its own type under an fp8 save (see the
    module docstring): tensors of fewer than two dimensions."""
    return len(shape) < 2


def saturating_cast(
    value: torch.Tensor, code: str, out: torch.Tensor | None = None
) -> tuple[torch.Tensor, int]:
    """``value`` cast to the fp8 type ``code`` with saturation, and how many of its values
    lay beyond the type's range (infinities included) and were clamped.

    ``out``, when given, is a tensor of the fp8 type and of ``value``'s size that receives the
    result (a reused buffer).
    """
    import torch

    from mergelang.io.dtypes import torch_dtype

    limit = FP8_MAX[code]
    dtype = torch_dtype(code)
    clamped = 0
    if value.numel():
        low, high = (float(v) for v in torch.aminmax(value))
        if not (low >= -limit and high <= limit):  # also when a NaN hides the extremes
            clamped = int(torch.count_nonzero(value.abs() > limit))
    source = value.clamp(-limit, limit) if clamped else value
    if out is None:
        return source.to(dtype), clamped
    return out.copy_(source), clamped


def clamped_warning(output: str, code: str, counts: Mapping[str, int]) -> Diagnostic:
    """The warning of an fp8 output where ``counts[key]`` values of ``key`` were clamped."""
    total = sum(counts.values())
    worst = max(counts, key=lambda k: counts[k])
    keys = "1 key" if len(counts) == 1 else f"{len(counts)} keys"
    values = "1 value" if total == 1 else f"{total} values"
    limit = f"{FP8_MAX[code]:g}"
    return Diagnostic(
        f"{values} beyond the range of {code} (±{limit}) clamped in {keys} of {output}; "
        f"most in {worst!r} ({counts[worst]})",
        "fp8-clamped",
        path=output,
        severity="warning",
        key=worst,
        hint="save as fp16, bf16 or fp32 to keep them",
    )
