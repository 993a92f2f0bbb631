"""Interpolations: triple sum, sum twice, sigmoid sum, geometric and tensor sum.

Each result lies "between" its inputs: a weight of 0 keeps model A (on BASE too, by
default, so the text encoders stay A's unless the recipe says otherwise).

The elementwise kernels take float32 tensors (anything else is cast) and compute exactly
the formula in their docstring, in float32, in the order written, each product rounded to
float32 and then added left to right, so a chunk of a key gives the same bits as the whole
key. ``out`` receives the result (float32, the result's shape, sharing no memory with an
input).

Powers (:func:`power_product`, used by ``geometric`` and ``multiply_difference``) are
computed as ``exp((1 - alpha) * log x + alpha * log y)`` in float64 and then rounded to
float32. torch's float32 ``pow`` takes a different code path for the last few elements of a
tensor than for the rest, so its bits would depend on where the executor cuts chunks; the
float64 route is as accurate as a correctly rounded float32 power in all but a vanishing
share of elements, and the same however a key is chunked.

``tensor_sum`` is not elementwise: it copies whole rows, so it gets each key's tensors in
their shapes.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated

from mergelang.methods.common import ModelAKept, ModelBTaken, as_float32, base_number, lerp
from mergelang.methods.params import BaseDefault, Choices, Doc, Range, Weights
from mergelang.methods.registry import method

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "TENSOR_SUM_BOUNDARIES",
    "geometric",
    "power_product",
    "sigmoid_sum",
    "sigmoid_weight",
    "sum_twice",
    "tensor_rows",
    "tensor_sum",
    "triple_sum",
]


# ---------------------------------------------------------------------------------------------
# Three-model interpolations


@method("triple_sum")
def triple_sum(
    a: Annotated[Tensor, Doc("model A: kept where alpha and beta are 0")],
    b: Annotated[Tensor, Doc("model B: its share is alpha")],
    c: Annotated[Tensor, Doc("model C: its share is beta")],
    *,
    alpha: Annotated[
        Weights,
        Doc(
            "B's share per block; an unset BASE is 0 (A's text encoder kept) unless base= gives one"
        ),
        BaseDefault(0.0),
        base_number("alpha", "B's share"),
    ],
    beta: Annotated[
        Weights,
        Doc("C's share per block; an unset BASE is 0; A keeps 1 - alpha - beta"),
        BaseDefault(0.0),
    ],
    out: Tensor,
) -> Tensor:
    """(1 - alpha - beta) * A + alpha * B + beta * C

    Computed in float32 as written, left to right: ``(1 - alpha - beta) * a + alpha * b``
    first, then ``+ beta * c``. With beta = 0 it is weighted_sum(A, B, alpha) bit for bit.
    Shares need not lie in 0..1 (values outside extrapolate). From SuperMerger and sd-meh.
    """
    import torch

    a, b, c = as_float32(a), as_float32(b), as_float32(c)
    torch.mul(a, 1 - alpha - beta, out=out)
    out.add_(alpha * b)
    return out.add_(beta * c)


@method("sum_twice")
def sum_twice(
    a: Annotated[Tensor, Doc("model A: kept where alpha and beta are 0")],
    b: Annotated[Tensor, Doc("model B: blended into A first, with share alpha")],
    c: Annotated[Tensor, Doc("model C: blended into that result, with share beta")],
    *,
    alpha: Annotated[
        Weights,
        Doc(
            "B's share in the first weighted sum, per block; an unset BASE is 0 "
            "(A's text encoder kept) unless base= gives one"
        ),
        BaseDefault(0.0),
        base_number("alpha", "B's share"),
    ],
    beta: Annotated[
        Weights,
        Doc("C's share in the second weighted sum, per block; an unset BASE is 0"),
        BaseDefault(0.0),
    ],
    out: Tensor,
) -> Tensor:
    """(1 - beta) * ((1 - alpha) * A + alpha * B) + beta * C

    Two weighted sums in a row, computed in float32 as written. With beta = 0 it is
    weighted_sum(A, B, alpha) bit for bit. From SuperMerger and sd-meh.
    """
    a, b, c = as_float32(a), as_float32(b), as_float32(c)
    lerp(a, b, alpha, out)
    out.mul_(1 - beta)
    return out.add_(beta * c)


# ---------------------------------------------------------------------------------------------
# Two-model curves


def sigmoid_weight(alpha: float) -> float:
    """Merge Board's "sigmoid" share of B: ``1/2 - sin(asin(1 - 2 * alpha) / 3)``.

    This is the inverse of the smoothstep ``3x^2 - 2x^3``: shares near 0 and 1 move faster
    than alpha, shares near 1/2 slower. It is exactly 0, 1/2 and 1 at alpha = 0, 1/2, 1
    (the floating-point sine would be off by one unit in the last place at the ends).
    """
    if alpha == 0:
        return 0.0
    if alpha == 1:
        return 1.0
    return 0.5 - math.sin(math.asin(1 - 2 * alpha) / 3)


@method("sigmoid_sum")
def sigmoid_sum(
    a: ModelAKept,
    b: ModelBTaken,
    *,
    alpha: Annotated[
        Weights,
        Doc(
            "the position on Merge Board's sigmoid curve per block (0 = A, 1 = B); an "
            "unset BASE is 0 (A's text encoder kept) unless base= gives one"
        ),
        Range(0.0, 1.0),
        BaseDefault(0.0),
        base_number("alpha", "the curve position"),
    ] = 0.5,
    out: Tensor,
) -> Tensor:
    """(1 - s) * A + s * B, s = 1/2 - sin(asin(1 - 2 * alpha) / 3)

    Merge Board's sigmoid mode: a weighted sum whose share ``s`` of B is the inverse
    smoothstep of alpha (see :func:`sigmoid_weight`); s is exactly 0, 1/2 and 1 at alpha =
    0, 1/2 and 1, so those give A, weighted_sum(A, B, 0.5) and B. alpha is in 0..1.
    """
    a, b = as_float32(a), as_float32(b)
    return lerp(a, b, sigmoid_weight(alpha), out)


def power_product(x: Tensor, y: Tensor, alpha: float) -> Tensor:
    """``x^(1 - alpha) * y^alpha`` for non-negative float32 ``x``, ``y`` (float32 result).

    ``0^0 = 1``: alpha = 0 returns ``x`` itself and alpha = 1 returns ``y`` itself, zeros
    included. Otherwise computed as ``exp((1 - alpha) * log(x) + alpha * log(y))`` in
    float64, rounded once to float32 (a zero base gives 0 for 0 < alpha < 1).
    """
    import torch

    if alpha == 0:
        return x
    if alpha == 1:
        return y
    logs = torch.log(x.to(torch.float64)).mul_(1 - alpha)
    logs.add_(torch.log(y.to(torch.float64)).mul_(alpha))
    return logs.exp_().to(torch.float32)


@method("geometric")
def geometric(
    a: ModelAKept,
    b: ModelBTaken,
    *,
    alpha: Annotated[
        Weights,
        Doc(
            "B's exponent per block (0 = A, 1 = B); an unset BASE is 0 (A's text "
            "encoder kept) unless base= gives one"
        ),
        Range(0.0, 1.0),
        BaseDefault(0.0),
        base_number("alpha", "B's exponent"),
    ] = 0.5,
    out: Tensor,
) -> Tensor:
    """Re(A^(1 - alpha) * B^alpha) = s * |A|^(1 - alpha) * |B|^alpha

    The weighted geometric mean of each pair of elements, taken on the complex plane (the
    principal powers, as sd-mecha's geometric_sum does) and projected back to the reals, so
    negative weights give no NaN: ``s`` is +1 where A and B are both >= 0, -1 where both
    are negative, and ``sign(A) * cos(pi * alpha)`` where their signs differ (zeros count as
    positive). The result is continuous in alpha, is exactly A at alpha = 0 and exactly B at
    alpha = 1 (``0^0 = 1``), and is 0 at alpha = 1/2 where the signs differ.

    In float32: the magnitude is :func:`power_product` of ``|A|`` and ``|B|``, then
    multiplied by ``cos(pi * alpha)`` (rounded to float32; computed as ``sin(pi * (1/2 -
    alpha))``, exactly 1, 0, -1 at alpha = 0, 1/2, 1) where the signs differ, then negated
    where A is negative. alpha is in 0..1.
    """
    import torch

    a, b = as_float32(a), as_float32(b)
    negative_a = a < 0
    magnitude = power_product(a.abs(), b.abs(), alpha)
    cosine = math.sin(math.pi * (0.5 - alpha))
    if cosine != 1.0:
        factor = torch.where(negative_a != (b < 0), cosine, 1.0).to(torch.float32)
        magnitude = magnitude * factor
    return torch.where(negative_a, -magnitude, magnitude, out=out)


# ---------------------------------------------------------------------------------------------
# Row exchange


TENSOR_SUM_BOUNDARIES: tuple[str, ...] = ("floor", "round")
"""How ``tensor_sum`` turns the window's fractions into rows: ``floor`` (SuperMerger and
sd-meh) or ``round`` (sd-mecha 1.1.8: Python's ``round``, half to even)."""


def tensor_rows(
    count: int, alpha: float, beta: float, boundary: str = "floor"
) -> tuple[int, int, bool]:
    """Which rows of dim 0 (of ``count``) tensor_sum takes from B: ``(start, end, inside)``.

    ``inside`` True: rows ``start:end`` come from B, the rest from A (alpha + beta <= 1).
    ``inside`` False (alpha + beta > 1, the window wraps past the last row): rows
    ``start:end`` come from A and every other row from B, i.e. B's rows are
    ``floor(count * beta):count`` and ``0:floor(count * (alpha + beta - 1))``. With
    ``boundary="round"`` each ``floor`` is Python's ``round`` (sd-mecha's ``ratio_to_region``).
    """
    cut = math.floor if boundary == "floor" else round
    if alpha + beta <= 1:
        return cut(count * beta), cut(count * (alpha + beta)), True
    return cut(count * (alpha + beta - 1)), cut(count * beta), False


@method("tensor_sum", elementwise=False, temporaries=1)
def tensor_sum(
    a: Annotated[Tensor, Doc("model A: every row outside the window")],
    b: Annotated[Tensor, Doc("model B: the rows inside the window")],
    *,
    alpha: Annotated[
        Weights,
        Doc(
            "the window's width per block, as a fraction of dim 0 (0 = A unchanged, "
            "1 = B); an unset BASE is 0 (A's text encoder kept) unless base= gives one"
        ),
        Range(0.0, 1.0),
        BaseDefault(0.0),
        base_number("alpha", "the window's width"),
    ] = 0.5,
    beta: Annotated[
        Weights,
        Doc(
            "where the window starts per block, as a fraction of dim 0; a window that "
            "runs past the last row continues at row 0"
        ),
        Range(0.0, 1.0),
        BaseDefault(0.0),
    ] = 0.0,
    boundary: Annotated[
        str,
        Doc(
            'how the window\'s edges become rows: "floor" (rounded down, as SuperMerger and '
            'sd-meh) or "round" (to the nearest row, half to even, as sd-mecha; a 0-D key '
            "is then B when alpha is above 0.5)"
        ),
        Choices(*TENSOR_SUM_BOUNDARIES),
    ] = "floor",
) -> Tensor:
    """A with rows [floor(n * beta), floor(n * (alpha + beta))) of dim 0 taken from B

    n is the size of dim 0; a 1-D tensor exchanges single elements, and a 0-D tensor counts
    as one row (it is B only when the window covers it). SuperMerger's and sd-meh's tensor
    merge: when alpha + beta > 1 the window wraps around, so B gives rows from
    floor(n * beta) to the end and rows 0 to floor(n * (alpha + beta - 1)), A the rest (see
    :func:`tensor_rows`). Rows are copied, never blended; alpha and beta are in 0..1.
    ``boundary="round"`` is sd-mecha's rule: ``round`` instead of ``floor`` (Python's, half
    to even), and a 0-D key is B when alpha > 0.5, else A.
    """
    if boundary not in TENSOR_SUM_BOUNDARIES:
        raise ValueError(f'boundary is "floor" or "round", not {boundary!r}')
    a, b = as_float32(a), as_float32(b)
    if boundary == "round" and a.dim() == 0:
        return (b if alpha > 0.5 else a).clone()
    rows_a, rows_b = a.reshape(1) if a.dim() == 0 else a, b.reshape(1) if b.dim() == 0 else b
    start, end, inside = tensor_rows(rows_a.shape[0], alpha, beta, boundary)
    result = (rows_a if inside else rows_b).clone()
    result[start:end] = (rows_b if inside else rows_a)[start:end]
    return result.reshape(a.shape)
