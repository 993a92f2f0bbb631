"""Pieces every method family uses: float32 operands, filling ``out``, the ``base=``
parameter. Importing this module does not import torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mergelang.methods.registry import Param

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["MODEL_A_KEPT", "MODEL_B_TAKEN", "as_float32", "base_param", "into", "lerp"]


MODEL_A_KEPT = Param("a", "model", doc="model A: kept where alpha is 0")
"""Model A of a two-model interpolation."""

MODEL_B_TAKEN = Param("b", "model", doc="model B: taken where alpha is 1")
"""Model B of a two-model interpolation."""


def as_float32(tensor: Tensor) -> Tensor:
    """``tensor`` as float32 (itself when it already is). The executor hands kernels float32
    tensors; this keeps a kernel correct when called directly with other types."""
    import torch

    return tensor if tensor.dtype == torch.float32 else tensor.to(torch.float32)


def into(value: Tensor, out: Tensor | None) -> Tensor:
    """``value``, copied into ``out`` when the caller gave a buffer."""
    return value if out is None else out.copy_(value)


def lerp(a: Tensor, b: Tensor, weight: float, out: Tensor | None = None) -> Tensor:
    """``(1 - weight) * a + weight * b`` in float32, each product rounded then added: the
    weighted sum every interpolation shares, bit for bit, into ``out`` when given."""
    import torch

    if out is None:
        return (1 - weight) * a + weight * b
    torch.mul(a, 1 - weight, out=out)
    return out.add_(weight * b)


def base_param(weights: str, what: str) -> Param:
    """The ``base=`` number that sets the BASE of weights parameter ``weights``; ``what``
    names the value (``"B's share"``)."""
    return Param(
        "base",
        "number",
        default=None,
        base_of=weights,
        doc=f"{what} for BASE (text encoders and other keys outside the U-Net blocks); "
        f"overrides the BASE that {weights} sets",
    )
