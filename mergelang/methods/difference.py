"""Difference-based merges: train difference, multiply difference, similarity add difference
and smooth add.

Like add_difference, each adds to A (or to C) what distinguishes B from C, shaped in its own
way. An unset BASE weight is an error for the additive ones (train_difference,
similarity_add_difference, smooth_add): give 26 values, a ``BASE:`` or ``default:`` entry,
or ``base=``.

The elementwise kernels take float32 tensors (anything else is cast) and compute exactly
the formula in their docstring, in float32, in the order the docstring states, so a chunk of
a key gives the same bits as the whole key; ``out`` receives the result.
``smooth_add`` filters across neighbouring elements, so it gets each key's whole tensors in
their shapes; its filters (:func:`median_filter3`, :func:`gaussian_filter`) reproduce
``scipy.ndimage.median_filter(x, size=3)`` and ``scipy.ndimage.gaussian_filter(x, sigma=1)``
(mode ``reflect``) on float32 tensors of any rank, with torch alone, bit for bit (compared
with scipy element by element on tensors of 1 to 5 dimensions).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated

from mergelang.methods.blend import power_product
from mergelang.methods.common import (
    DiffReferenceC,
    DiffSourceB,
    DiffTargetA,
    as_float32,
    base_number,
)
from mergelang.methods.params import BaseDefault, Choices, Doc, Range, Weights
from mergelang.methods.registry import method

if TYPE_CHECKING:
    import torch
    from torch import Tensor

__all__ = [
    "GAUSSIAN_RADIUS",
    "ZERO_SIGN_RULES",
    "gaussian_filter",
    "gaussian_weights",
    "median_filter3",
    "multiply_difference",
    "reflect_indices",
    "similarity_add_difference",
    "smooth_add",
    "train_difference",
]

GAUSSIAN_RADIUS = 4
"""scipy's radius for sigma 1 and its default truncate 4.0: ``int(4.0 * 1 + 0.5)``."""

WINDOW_ELEMENTS = 1 << 22
"""How many padded elements a Gaussian pass handles at once (32 MiB of float64): a large
tensor is filtered in slabs, so the memory stays a few times the key's own."""

MEDIAN_SLAB = 1 << 16
"""How many results the median network computes at once: its lists of up to 2 * 3^(rank-1)
slab-sized tensors then stay in the processor's caches."""


# ---------------------------------------------------------------------------------------------
# Elementwise


@method("train_difference")
def train_difference(
    a: DiffTargetA,
    b: Annotated[Tensor, Doc("model B: the trained model")],
    c: Annotated[Tensor, Doc("model C: what B was trained from")],
    *,
    alpha: Annotated[
        Weights,
        Doc(
            "how much of the scaled difference to add per block (no BASE default: give "
            "26 values, a BASE: or default: entry, or base=)"
        ),
        base_number("alpha", "the multiplier"),
    ] = 1.0,
    out: Tensor,
) -> Tensor:
    """A + 1.8 * alpha * sign(B - C) * |B - C| * |B - A| / (|B - C| + |B - A|)

    SuperMerger's "train difference": B - C is added where B is far from A and shrunk where
    A is already close to B, as if A had been trained the way B was. Where |B - C| + |B - A|
    is 0 (A = B = C) nothing is added; where B = C the result is A exactly. Computed in
    float32 in SuperMerger's order: ``q = |B - A| / (|B - C| + |B - A|)`` (0 where the
    denominator is 0), then ``A + ((sign(B - C) * q) * |B - C|) * (alpha * 1.8)``.
    """
    import torch

    a, b, c = as_float32(a), as_float32(b), as_float32(c)
    trained = b - c
    distance = (b - a).abs_()
    trained_size = trained.abs()
    total = trained_size + distance
    share = torch.where(total == 0, 0.0, distance / total)
    delta = torch.sign(trained).mul_(share).mul_(trained_size).mul_(alpha * 1.8)
    return torch.add(a, delta, out=out)


ZERO_SIGN_RULES: tuple[str, ...] = ("zero", "copysign")
"""The ``zero_sign`` choices of ``multiply_difference``: the sign where the weighted sum of A
and B equals C, 0 (mergelang) or that of the zero, as ``torch.copysign`` reads it (sd-meh)."""


@method("multiply_difference")
def multiply_difference(
    a: Annotated[Tensor, Doc("model A: its difference from C has exponent 1 - alpha")],
    b: Annotated[Tensor, Doc("model B: its difference from C has exponent alpha")],
    c: Annotated[Tensor, Doc("model C: the common base both differences start from")],
    *,
    alpha: Annotated[
        Weights,
        Doc(
            "B's exponent in the geometric mean of |A - C| and |B - C|, per block; an "
            "unset BASE is 0 (A, up to rounding) unless base= gives one"
        ),
        Range(0.0, 1.0),
        BaseDefault(0.0),
        base_number("alpha", "B's exponent"),
    ] = 0.5,
    beta: Annotated[
        Weights,
        Doc(
            "where between A (0) and B (1) the sign of the difference is read, per "
            "block; an unset BASE is 0"
        ),
        BaseDefault(0.0),
    ] = 0.5,
    zero_sign: Annotated[
        str,
        Doc(
            'the sign where the weighted sum equals C exactly: "zero" (the result is C) or '
            '"copysign" (that of the zero difference, +0 in practice: C plus the magnitude, '
            "as sd-meh's torch.copysign gives)"
        ),
        Choices(*ZERO_SIGN_RULES),
    ] = "zero",
    out: Tensor,
) -> Tensor:
    """C + sign((1 - beta) * A + beta * B - C) * |A - C|^(1 - alpha) * |B - C|^alpha

    sd-meh's multiply difference: the magnitudes of A's and B's differences from C are
    combined by a weighted geometric mean, with the sign of the difference of the weighted
    sum. ``0^0 = 1``, so alpha = 0 uses |A - C| and alpha = 1 uses |B - C| as they are;
    where the weighted sum equals C the sign is 0 and the result is C. Computed in float32:
    ``A - C`` and ``B - C``, their magnitudes combined by
    :func:`~mergelang.methods.blend.power_product` (float64 inside, rounded once), the
    weighted sum as weighted_sum computes it. alpha is in 0..1; alpha = beta = 0 gives
    C + (A - C), which is A up to float32 rounding. ``zero_sign="copysign"`` is sd-meh's
    rule, ``C + copysign(magnitude, weighted sum - C)``: where the weighted sum equals C the
    difference is +0 (a float32 subtraction of equal numbers), so the result is C plus the
    magnitude instead of C.
    """
    import torch

    if zero_sign not in ZERO_SIGN_RULES:
        raise ValueError(f'zero_sign is "zero" or "copysign", not {zero_sign!r}')
    a, b, c = as_float32(a), as_float32(b), as_float32(c)
    magnitude = power_product((a - c).abs_(), (b - c).abs_(), alpha)
    blended = (1 - beta) * a + beta * b
    if zero_sign == "copysign":
        torch.copysign(magnitude, blended.sub_(c), out=out)
        return out.add_(c)
    direction = torch.sign(blended.sub_(c))
    torch.mul(direction, magnitude, out=out)
    return out.add_(c)


@method("similarity_add_difference")
def similarity_add_difference(
    a: DiffTargetA,
    b: DiffSourceB,
    c: DiffReferenceC,
    *,
    alpha: Annotated[
        Weights,
        Doc(
            "how much of B - C to add per block, as in add_difference (no BASE "
            "default: give 26 values, a BASE: or default: entry, or base=)"
        ),
        base_number("alpha", "the multiplier"),
    ] = 1.0,
    beta: Annotated[
        Weights,
        Doc(
            "how far elements where A and B agree move from the add difference to the "
            "weighted sum, per block (0 = plain add difference); an unset BASE is 0"
        ),
        Range(0.0, 1.0),
        BaseDefault(0.0),
    ] = 1.0,
    out: Tensor,
) -> Tensor:
    """(1 - s) * (A + alpha * (B - C)) + s * ((1 - alpha / 2) * A + (alpha / 2) * B)

    sd-meh's similarity add difference, with ``s = ((A / t) * (B / t) + 1) / 2 * beta`` and
    ``t = max(|A|, |B|)``: where A and B are equal (s = beta) the result leans to a
    weighted sum of A and B, where they are opposite (s = 0) it is add difference, with
    everything in between. Where t = 0 (A = B = 0, a 0/0 that sd-meh turns into beta) s is
    beta. sd-meh computes ``A * B / t^2``; dividing each by t first is the same number but
    cannot underflow to 0/0 (or overflow) for tiny (or huge) weights. Computed in float32
    in the order written, ``s`` and ``1 - s`` per element.
    """
    import torch

    a, b, c = as_float32(a), as_float32(b), as_float32(c)
    largest = torch.maximum(a.abs(), b.abs())
    agreement = (a / largest).mul_(b / largest).add_(1).div_(2).mul_(beta)
    similarity = torch.where(largest == 0, beta, agreement)
    added = a + alpha * (b - c)
    blended = (1 - alpha / 2) * a + (alpha / 2) * b
    kept = (1 - similarity).mul_(added)
    moved = similarity.mul_(blended)
    return torch.add(kept, moved, out=out)


# ---------------------------------------------------------------------------------------------
# Filters (scipy.ndimage semantics, mode "reflect")


def reflect_indices(size: int, pad: int, device: torch.device | None = None) -> Tensor:
    """Source index of each position ``-pad .. size + pad - 1`` of an axis of ``size``
    extended with scipy's ``reflect`` mode: ``d c b a | a b c d | d c b a`` repeated with
    period ``2 * size`` as far as needed (an axis of one element repeats it; note torch's own
    "reflect" padding leaves out the edge element and refuses pads wider than the axis)."""
    import torch

    period = 2 * size
    indices = []
    for position in range(-pad, size + pad):
        folded = position % period
        indices.append(folded if folded < size else period - 1 - folded)
    return torch.tensor(indices, dtype=torch.long, device=device)


def median_filter3(x: Tensor) -> Tensor:
    """``scipy.ndimage.median_filter(x, size=3)``: each element becomes the median of the
    3 x 3 x ... box (3^rank elements, an odd count) around it, over every dimension, the
    tensor extended with ``reflect`` at its borders. A 0-D tensor is returned as is.

    A dimension of size 1 only repeats each value of the box 3 times, which leaves the
    median unchanged, so it is dropped first (a 1x1 convolution is filtered as a matrix).
    The median is then found by a comparator network (see :func:`_box_median`), a few rows
    at a time, which is several times faster than gathering every box for
    :func:`torch.median`.
    """
    import torch

    if x.numel() == 0:
        return x.clone()
    shape = [size for size in x.shape if size != 1]
    if not shape:
        return x.clone()
    core = x.reshape(shape)
    padded = core
    for dim in range(core.dim()):
        padded = padded.index_select(dim, reflect_indices(shape[dim], 1, x.device))
    order = sorted(range(len(shape)), key=lambda dim: shape[dim])
    slab_dim = order[-1]
    rows = shape[slab_dim]
    step = max(1, MEDIAN_SLAB * rows // math.prod(shape))
    parts = []
    for start in range(0, rows, step):
        stop = min(rows, start + step)
        part_shape = list(shape)
        part_shape[slab_dim] = stop - start
        part = padded.narrow(slab_dim, start, stop - start + 2)
        parts.append(_box_median(part, part_shape, order))
    return torch.cat(parts, dim=slab_dim).reshape(x.shape)


def _box_median(padded: Tensor, shape: list[int], order: list[int]) -> Tensor:
    """The median of every 3^rank box of ``padded`` (``shape`` plus 2 in every dimension).

    One dimension after another (in ``order``), each element's sorted list of the values in
    its box so far is merged with its two neighbours' along that dimension (Batcher's
    odd-even merge, elementwise min/max on whole tensors), so the lists grow 1, 3, 9, ...;
    on the last dimension only the middle element of the final merge is selected.
    """
    lists = [padded]
    middle = 3 ** len(shape) // 2
    for position, dim in enumerate(order):
        size = shape[dim]
        before, centre, after = ([t.narrow(dim, k, size) for t in lists] for k in range(3))
        if position == len(order) - 1:
            return _select(_merge(before, after), centre, middle)
        lists = _merge(_merge(before, centre), after)
    raise AssertionError("a box has at least one dimension")


def _merge(first: list[Tensor], second: list[Tensor]) -> list[Tensor]:
    """Batcher's odd-even merge of two elementwise-sorted lists of tensors (any lengths)."""
    import torch

    if not first or not second:
        return [*first, *second]
    if len(first) == 1 and len(second) == 1:
        return [torch.minimum(first[0], second[0]), torch.maximum(first[0], second[0])]
    even = _merge(first[0::2], second[0::2])
    odd = _merge(first[1::2], second[1::2])
    merged: list[Tensor] = []
    for i, value in enumerate(even):
        merged.append(value)
        if i < len(odd):
            merged.append(odd[i])
    for i in range(1, len(merged) - 1, 2):
        low, high = merged[i], merged[i + 1]
        merged[i], merged[i + 1] = torch.minimum(low, high), torch.maximum(low, high)
    return merged


def _select(first: list[Tensor], second: list[Tensor], rank: int) -> Tensor:
    """Element ``rank`` (from 0) of the merge of two elementwise-sorted lists: the smallest,
    over how many (j) of the ``rank + 1`` smallest come from ``second``, of the largest of
    ``first[rank - j]`` and ``second[j - 1]``."""
    import torch

    best: Tensor | None = None
    for taken in range(max(0, rank + 1 - len(first)), min(len(second), rank + 1) + 1):
        if taken == 0:
            candidate = first[rank]
        elif taken == rank + 1:
            candidate = second[rank]
        else:
            candidate = torch.maximum(first[rank - taken], second[taken - 1])
        best = candidate if best is None else torch.minimum(best, candidate)
    assert best is not None
    return best


def gaussian_weights(radius: int = GAUSSIAN_RADIUS) -> list[float]:
    """Weights ``w_0 .. w_radius`` of the sigma-1 Gaussian (``w_j = exp(-j^2 / 2)``),
    normalised so that ``w_0 + 2 * (w_1 + ... + w_radius) = 1``."""
    raw = [math.exp(-0.5 * j * j) for j in range(radius + 1)]
    total = math.fsum([raw[0], *(2 * w for w in raw[1:])])
    return [w / total for w in raw]


def gaussian_filter(x: Tensor) -> Tensor:
    """``scipy.ndimage.gaussian_filter(x, sigma=1)`` (truncate 4.0, mode ``reflect``) for a
    float32 tensor: a 9-tap Gaussian along dim 0, then along dim 1, ..., each pass summed in
    float64 and rounded to float32 before the next, as scipy does. A dimension of size 1 is
    left as it is (its taps all read the same element and sum to 1); a dimension shorter
    than the 9 taps has them folded onto its elements first. A 0-D tensor is returned as
    is."""
    result = as_float32(x).clone()
    for dim in range(x.dim()):
        if x.shape[dim] > 1 and x.numel() > 0:
            result = _gaussian_pass(result, dim)
    return result


def _gaussian_pass(x: Tensor, dim: int) -> Tensor:
    import torch

    size = x.shape[dim]
    before = math.prod(x.shape[:dim])
    after = math.prod(x.shape[dim + 1 :])
    lines = x.reshape(before, size, after)
    result = torch.empty_like(lines)
    radius = GAUSSIAN_RADIUS
    weights = gaussian_weights(radius)
    if size <= 2 * radius:
        folded = _folded_taps(size, weights)
        wide = lines.to(torch.float64)
        for i, row in enumerate(folded):
            total = wide[:, 0] * row[0]
            for k in range(1, size):
                total += wide[:, k] * row[k]
            result[:, i] = total
        return result.reshape(x.shape)
    index = reflect_indices(size, radius, x.device)
    padded_line = (size + 2 * radius) * after
    outer_step = max(1, WINDOW_ELEMENTS // padded_line)
    inner_step = after if outer_step > 1 else max(1, WINDOW_ELEMENTS // (size + 2 * radius))
    for outer in range(0, before, outer_step):
        for inner in range(0, after, inner_step):
            block = lines[outer : outer + outer_step, :, inner : inner + inner_step]
            padded = block.index_select(1, index).to(torch.float64)
            total = padded[:, radius : radius + size] * weights[0]
            for j in range(radius, 0, -1):
                left = padded[:, radius - j : radius - j + size]
                total += left.add(padded[:, radius + j : radius + j + size]).mul_(weights[j])
            result[outer : outer + outer_step, :, inner : inner + inner_step] = total
    return result.reshape(x.shape)


def _folded_taps(size: int, weights: list[float]) -> list[list[float]]:
    """For an axis shorter than the taps: ``folded[i][k]`` is the total weight that output
    ``i`` gives input ``k`` once every tap is reflected back into the axis."""
    radius = len(weights) - 1
    sources = reflect_indices(size, radius).tolist()
    folded = [[0.0] * size for _ in range(size)]
    for i in range(size):
        for offset in range(-radius, radius + 1):
            folded[i][sources[i + offset + radius]] += weights[abs(offset)]
    return folded


@method("smooth_add", elementwise=False, temporaries=10)
def smooth_add(
    a: Annotated[Tensor, Doc("model A: the base the smoothed difference is added to")],
    b: DiffSourceB,
    c: DiffReferenceC,
    *,
    alpha: Annotated[
        Weights,
        Doc(
            "how much of the smoothed B - C to add per block (no BASE default: give 26 "
            "values, a BASE: or default: entry, or base=)"
        ),
        base_number("alpha", "the multiplier"),
    ] = 1.0,
) -> Tensor:
    """A + alpha * gaussian_filter(median_filter(B - C, size=3), sigma=1)

    SuperMerger's "smooth add difference": B - C (float32) goes through a 3-wide median
    filter over every dimension (isolated spikes removed), then a sigma-1 Gaussian blur over
    every dimension, both with scipy.ndimage's semantics and ``reflect`` borders (see
    :func:`median_filter3` and :func:`gaussian_filter`); then ``A + alpha * smoothed`` in
    float32. A 0-D tensor is not filtered.

    Not elementwise, and costly: the median looks at 81 values around each element of a
    3 x 3 convolution (SD1's largest, 1280 x 1280 x 3 x 3, takes about 7 s of one CPU core,
    1 s on an H100), so a whole SD1 model takes minutes of CPU time.
    """
    a, b, c = as_float32(a), as_float32(b), as_float32(c)
    smoothed = gaussian_filter(median_filter3(b - c))
    return a + alpha * smoothed
