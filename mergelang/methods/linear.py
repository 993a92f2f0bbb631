"""Linear merge methods: weighted sum and add difference.

Kernels take float32 tensors (the executor casts; anything else is cast here too) and
compute exactly the formula in their docstring, in float32, in the order written, so the
result equals that formula evaluated on whole float32 tensors bit for bit, whatever chunks
the executor splits a tensor into. ``out``, when given, receives the result (it must have
the result's shape, be float32, and share no memory with an input).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mergelang.methods.common import MODEL_A_KEPT, MODEL_B_TAKEN, as_float32, lerp
from mergelang.methods.registry import Param, method

if TYPE_CHECKING:
    from torch import Tensor


@method(
    "weighted_sum",
    params=[
        MODEL_A_KEPT,
        MODEL_B_TAKEN,
        Param(
            "alpha",
            "weights",
            default=0.5,
            base_default=0.0,
            doc="B's share per block (values outside 0..1 extrapolate); an unset BASE is 0 "
            "(MBW's base_alpha default: A's text encoder kept) unless base= gives one",
        ),
        Param(
            "base",
            "number",
            default=None,
            base_of="alpha",
            doc="B's share for BASE (text encoders and other keys outside the U-Net blocks); "
            "overrides the BASE that alpha sets",
        ),
    ],
)
def weighted_sum(a: Tensor, b: Tensor, *, alpha: float, out: Tensor | None = None) -> Tensor:
    """(1 - alpha) * A + alpha * B

    Computed in float32 exactly as written: ``(1 - alpha) * a + alpha * b``; alpha is the
    weight of this key's block. alpha = 0 gives A, alpha = 1 gives B (MBW's convention:
    the value is model B's share; ComfyUI's ModelMergeSimple ratio is the opposite).
    """
    return lerp(as_float32(a), as_float32(b), alpha, out)


@method(
    "add_difference",
    params=[
        Param("a", "model", doc="model A: the base the difference is added to"),
        Param("b", "model", doc="model B: the model whose difference from C is added"),
        Param("c", "model", doc="model C: what B is compared with (usually B's own base)"),
        Param(
            "alpha",
            "weights",
            default=1.0,
            doc="how much of B - C to add per block (negative subtracts; no BASE default: "
            "give 26 values, a BASE: or default: entry, or base=)",
        ),
        Param(
            "base",
            "number",
            default=None,
            base_of="alpha",
            doc="the multiplier for BASE (text encoders and other keys outside the U-Net "
            "blocks); overrides the BASE that alpha sets",
        ),
    ],
)
def add_difference(
    a: Tensor, b: Tensor, c: Tensor, *, alpha: float, out: Tensor | None = None
) -> Tensor:
    """A + alpha * (B - C)

    Computed in float32 exactly as written: ``a + alpha * (b - c)``; alpha is the weight of
    this key's block. An unset BASE weight is an error for this method (no fallback).
    """
    a, b, c = as_float32(a), as_float32(b), as_float32(c)
    if out is None:
        return a + alpha * (b - c)
    import torch

    torch.sub(b, c, out=out)
    out.mul_(alpha)
    return out.add_(a)
