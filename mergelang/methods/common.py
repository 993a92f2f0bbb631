"""Pieces every method family uses: float32 operands, the shared weighted sum, the common
model parameters and the ``base=`` number. Importing this module does not import torch."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, TypeAlias

from mergelang.methods.params import BaseNumber, Doc

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "DiffReferenceC",
    "DiffSourceB",
    "DiffTargetA",
    "ModelAKept",
    "ModelBTaken",
    "as_float32",
    "base_number",
    "lerp",
]

ModelAKept: TypeAlias = Annotated["Tensor", Doc("model A: kept where alpha is 0")]
"""Model A of a two-model interpolation."""

ModelBTaken: TypeAlias = Annotated["Tensor", Doc("model B: taken where alpha is 1")]
"""Model B of a two-model interpolation."""

DiffTargetA: TypeAlias = Annotated["Tensor", Doc("model A: the base the difference is added to")]
"""Model A of an add-difference merge."""

DiffSourceB: TypeAlias = Annotated[
    "Tensor", Doc("model B: the model whose difference from C is added")
]
"""Model B of an add-difference merge."""

DiffReferenceC: TypeAlias = Annotated[
    "Tensor", Doc("model C: what B is compared with (usually B's own base)")
]
"""Model C of an add-difference merge."""


def as_float32(tensor: Tensor) -> Tensor:
    """``tensor`` as float32 (itself when it already is). The executor hands kernels float32
    tensors; this keeps a kernel correct when called directly with other types."""
    import torch

    return tensor if tensor.dtype == torch.float32 else tensor.to(torch.float32)


def lerp(a: Tensor, b: Tensor, weight: float, out: Tensor) -> Tensor:
    """``(1 - weight) * a + weight * b`` in float32 into ``out``, each product rounded then
    added: the weighted sum every interpolation shares, bit for bit."""
    import torch

    torch.mul(a, 1 - weight, out=out)
    return out.add_(weight * b)


def base_number(
    weights: str,
    what: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
) -> BaseNumber:
    """The ``base=`` number that sets the BASE of weights parameter ``weights`` (whose
    metadata it goes in); ``what`` names the value (``"B's share"``)."""
    return BaseNumber(
        f"{what} for BASE (text encoders and other keys outside the U-Net blocks); "
        f"overrides the BASE that {weights} sets",
        minimum=minimum,
        maximum=maximum,
    )
