"""Linear merge methods: weighted sum and add difference.

Kernels take float32 tensors (the executor casts; anything else is cast here too) and
compute exactly the formula in their docstring, in float32, in the order written, so the
result equals that formula evaluated on whole float32 tensors bit for bit, whatever chunks
the executor splits a tensor into. ``out`` receives the result (it has the result's shape,
is float32, and shares no memory with an input).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from mergelang.methods.common import (
    DiffReferenceC,
    DiffSourceB,
    DiffTargetA,
    ModelAKept,
    ModelBTaken,
    as_float32,
    base_number,
    lerp,
)
from mergelang.methods.params import BaseDefault, Doc, Weights
from mergelang.methods.registry import method

if TYPE_CHECKING:
    from torch import Tensor


@method("weighted_sum", propagates_nonfinite=True)
def weighted_sum(
    a: ModelAKept,
    b: ModelBTaken,
    *,
    alpha: Annotated[
        Weights,
        Doc(
            "B's share per block (values outside 0..1 extrapolate); an unset BASE is 0 "
            "(MBW's base_alpha default: A's text encoder kept) unless base= gives one"
        ),
        BaseDefault(0.0),
        base_number("alpha", "B's share"),
    ] = 0.5,
    out: Tensor,
) -> Tensor:
    """(1 - alpha) * A + alpha * B

    Computed in float32 exactly as written: ``(1 - alpha) * a + alpha * b``; alpha is the
    weight of this key's block. alpha = 0 gives A, alpha = 1 gives B (MBW's convention:
    the value is model B's share; ComfyUI's ModelMergeSimple ratio is the opposite).
    """
    return lerp(as_float32(a), as_float32(b), alpha, out)


@method("add_difference", propagates_nonfinite=True)
def add_difference(
    a: DiffTargetA,
    b: DiffSourceB,
    c: DiffReferenceC,
    *,
    alpha: Annotated[
        Weights,
        Doc(
            "how much of B - C to add per block (negative subtracts; no BASE default: "
            "give 26 values, a BASE: or default: entry, or base=)"
        ),
        base_number("alpha", "the multiplier"),
    ] = 1.0,
    out: Tensor,
) -> Tensor:
    """A + alpha * (B - C)

    Computed in float32 exactly as written: ``a + alpha * (b - c)``; alpha is the weight of
    this key's block. An unset BASE weight is an error for this method (no fallback).
    """
    import torch

    a, b, c = as_float32(a), as_float32(b), as_float32(c)
    torch.sub(b, c, out=out)
    out.mul_(alpha)
    return out.add_(a)
