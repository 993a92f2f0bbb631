"""Geometric and similarity merges: slerp, add_perpendicular, extract, cosine_a, cosine_b.

Each of these looks at a key as a whole, through norms, dot products or cosine similarities,
so none is elementwise: the executor gives the kernels each key's whole float32 tensors in
their shapes, and they return a new float32 tensor of that shape.

- :func:`slerp` and :func:`add_perpendicular` measure the whole key, flattened.
- :func:`extract` (SuperMerger's ``extract`` calc mode) measures cosine similarity per row
  of the last dimension, as SuperMerger's ``torch.nn.functional.cosine_similarity(..., -1)``
  does: a 2-D weight row by row, a 4-D convolution kernel row by kernel row, a 1-D tensor
  as a whole.
- :func:`cosine_a` and :func:`cosine_b` (SuperMerger's ``cosineA``/``cosineB``) measure
  cosine similarity per column (along dimension 0, as SuperMerger's
  ``CosineSimilarity(dim=0)``) and need a statistics pass: a :class:`SimilarityRange` sees
  every merged key of A and B first and keeps only their similarity values (one per
  column, never the tensors), from which it takes the trimmed range ``lo..hi``. The kernel
  then recomputes its own key's similarities from the whole tensors (the cost of a dot
  product) and places them in that range. This needs no key name, so it works the same for
  a key the statistics pass never saw (the merged channels of an inpainting input
  convolution): such a key is placed in the range of the keys that were seen.

A cosine similarity is ``x . y / (|x| |y|)``, computed in float32, and is 0 when either
vector is all zeros (where SuperMerger's torch functions give 0 through their epsilon).
Scalars derived from whole-key reductions (angles, projection coefficients) are computed in
double precision from the float32 reductions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Final, TypeAlias

from mergelang.methods.common import (
    DiffSourceB,
    ModelAKept,
    ModelBTaken,
    as_float32,
    base_number,
)
from mergelang.methods.params import BaseDefault, BaseNumber, Choices, Doc, Range, Weights
from mergelang.methods.registry import method

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "MERGEKIT_CHUNK",
    "PARALLEL_DOT",
    "SLERP_VARIANTS",
    "SimilarityRange",
    "add_perpendicular",
    "column_similarity",
    "cosine_a",
    "cosine_a_similarity",
    "cosine_a_statistics",
    "cosine_b",
    "cosine_b_similarity",
    "cosine_b_statistics",
    "extract",
    "midpoint_percentile",
    "slerp",
    "trimmed_range",
]

PARALLEL_DOT = 0.9995
"""slerp falls back to lerp when ``|cos(A, B)|`` is above this (mergekit's threshold): the
angle is then too small (or too close to pi) for ``sin(theta)`` to divide by safely."""

TRIM_PERCENTILES = (1.0, 99.0)
"""The percentiles that bound the similarity range of the cosine merges (SuperMerger's)."""


def _at_least_1d(tensor: Tensor) -> Tensor:
    """A 0-D tensor as a 1-element vector (so it has a dimension to measure along)."""
    return tensor.reshape(1) if tensor.dim() == 0 else tensor


def _dot(x: Tensor, y: Tensor) -> Tensor:
    """The dot product of ``x`` and ``y`` flattened, summed in float32."""
    import torch

    dot: Tensor = torch.linalg.vecdot(x.reshape(-1), y.reshape(-1))
    return dot


def _cosine(x: Tensor, y: Tensor, dim: int, *, keepdim: bool = False) -> Tensor:
    """Cosine similarity of ``x`` and ``y`` along ``dim``; 0 where either vector is zero."""
    import torch

    dot = torch.linalg.vecdot(x, y, dim=dim)
    if keepdim:
        dot = dot.unsqueeze(dim)
    norms = torch.linalg.vector_norm(x, dim=dim, keepdim=keepdim) * torch.linalg.vector_norm(
        y, dim=dim, keepdim=keepdim
    )
    return torch.where(norms > 0, dot / norms, torch.zeros_like(dot))


def _flat_cosine(x: Tensor, y: Tensor) -> float:
    """Cosine similarity of the flattened tensors (double precision from float32 sums);
    0 when either is all zeros."""
    import torch

    x_norm = float(torch.linalg.vector_norm(x))
    y_norm = float(torch.linalg.vector_norm(y))
    if x_norm == 0 or y_norm == 0:
        return 0.0
    return float(_dot(x, y)) / x_norm / y_norm


# ---------------------------------------------------------------------------------------------
# slerp


SLERP_VARIANTS: tuple[str, ...] = ("mergelang", "mergekit", "sd_mecha")
"""The ``variant`` choices of :func:`slerp`, the default first."""

MERGEKIT_CHUNK = 1024 * 1024
"""mergekit 0.1.5 sums a key's norms and dot product over chunks of this many elements."""


@method("slerp", elementwise=False, temporaries=2)
def slerp(
    a: ModelAKept,
    b: ModelBTaken,
    *,
    alpha: Annotated[
        Weights,
        Doc(
            "how far along the arc from A to B, per block (0..1); an unset BASE is 0 "
            "(A's text encoder kept) unless base= gives one"
        ),
        Range(0.0, 1.0),
        BaseDefault(0.0),
        base_number("alpha", "alpha", minimum=0.0, maximum=1.0),
    ] = 0.5,
    variant: Annotated[
        str,
        Doc(
            'whose slerp: "mergelang" (angle and coefficients in double, exact at the '
            'ends), "mergekit" (mergekit 0.1.5, all in float32) or "sd_mecha" (sd-mecha '
            "1.1.8: unit vectors interpolated, then scaled to the interpolated norm)"
        ),
        Choices(*SLERP_VARIANTS),
    ] = "mergelang",
) -> Tensor:
    """sin((1 - alpha) * theta) / sin(theta) * A + sin(alpha * theta) / sin(theta) * B

    ``theta`` is the angle between A and B, each flattened as a whole (one angle per key):
    ``acos(A . B / (|A| |B|))`` (dot product and norms summed in float32, the rest in
    double). As in mergekit, the coefficients multiply A and B themselves, not unit vectors.
    When ``|cos(theta)|`` is above :data:`PARALLEL_DOT` (nearly parallel or opposite), or A
    or B is all zeros, the result is the plain interpolation ``torch.lerp(A, B, alpha)``.
    ``slerp(A, A, t)`` is A, alpha = 0 gives A and alpha = 1 gives B, all exactly.

    ``variant="mergekit"`` is mergekit 0.1.5's ``slerp`` on one key (its leading "output"
    axis batches separate keys, so it too measures the whole key): in float32, norms
    ``|A|``, ``|B|`` as the norm of per-chunk norms (chunks of :data:`MERGEKIT_CHUNK`
    elements), a norm at or below 1e-8 read as 1; ``d = sum(A / |A| * B / |B|)`` clamped
    to -1..1; where ``|d| > 0.9995`` the coefficients are ``1 - alpha`` and ``alpha``, else
    ``sin((1 - alpha) * theta) / sin(theta)`` and ``sin(alpha * theta) / sin(theta)`` with
    ``theta = acos(d)``; the result ``c_a * A + c_b * B``. An all-zero A or B thus gives
    ``theta = pi / 2``, not a lerp, and the ends are exact only to float32 rounding.

    ``variant="sd_mecha"`` is sd-mecha 1.1.8's ``slerp``, in float32: ``u = A / |A|``,
    ``v = B / |B|``, ``omega = acos(clamp(sum(u * v), -1, 1))``,
    ``(u * sin((1 - alpha) * omega) + v * sin(alpha * omega)) / sin(omega)`` multiplied by
    ``torch.lerp(|A|, |B|, alpha)``; ``torch.lerp(A, B, alpha)`` if any element of that is
    NaN (a zero model, or A and B parallel so that ``sin(omega)`` is 0).
    """
    import torch

    if variant not in SLERP_VARIANTS:
        raise ValueError(f"variant is one of {', '.join(SLERP_VARIANTS)}, not {variant!r}")
    a, b = as_float32(a), as_float32(b)
    if variant == "mergekit":
        return _slerp_mergekit(a, b, alpha)
    if variant == "sd_mecha":
        return _slerp_sd_mecha(a, b, alpha)
    if alpha == 0 or torch.equal(a, b):
        return a.clone()
    if alpha == 1:
        return b.clone()
    a_norm = float(torch.linalg.vector_norm(a))
    b_norm = float(torch.linalg.vector_norm(b))
    if a_norm == 0 or b_norm == 0:
        return torch.lerp(a, b, alpha)
    cos = float(_dot(a, b)) / a_norm / b_norm
    if not math.isfinite(cos) or abs(cos) > PARALLEL_DOT:
        return torch.lerp(a, b, alpha)
    theta = math.acos(max(-1.0, min(1.0, cos)))
    sin_theta = math.sin(theta)
    s0 = math.sin((1 - alpha) * theta) / sin_theta
    s1 = math.sin(alpha * theta) / sin_theta
    return a * s0 + b * s1


def _slerp_mergekit(a: Tensor, b: Tensor, alpha: float) -> Tensor:
    """mergekit 0.1.5's slerp of one key (see :func:`slerp`), float32 throughout."""
    import torch

    x = a.reshape(1, -1)
    y = b.reshape(1, -1)
    t = torch.tensor([[alpha]], dtype=torch.float32, device=a.device)
    if x.shape[1] == 0:
        return ((1 - t) * x + t * y).reshape(a.shape)
    spans = range(0, x.shape[1], MERGEKIT_CHUNK)

    def norm(v: Tensor) -> Tensor:
        parts = [
            torch.linalg.vector_norm(v[:, i : i + MERGEKIT_CHUNK], dim=1, keepdim=True)
            for i in spans
        ]
        whole = torch.linalg.vector_norm(torch.stack(parts), dim=0)
        return torch.where(whole > 1e-8, whole, 1)

    x_norm, y_norm = norm(x), norm(y)
    dots = [
        (x[:, i : i + MERGEKIT_CHUNK] / x_norm * (y[:, i : i + MERGEKIT_CHUNK] / y_norm)).sum(
            dim=1, keepdim=True
        )
        for i in spans
    ]
    dot = torch.stack(dots).sum(dim=0).clamp(-1, 1)
    linear = dot.abs() > PARALLEL_DOT
    theta = torch.acos(torch.where(linear, 0, dot))
    sin_theta = torch.sin(theta)
    coef_a = torch.where(linear, 1 - t, torch.sin((1 - t) * theta) / sin_theta)
    coef_b = torch.where(linear, t, torch.sin(t * theta) / sin_theta)
    return (coef_a * x + coef_b * y).reshape(a.shape)


def _slerp_sd_mecha(a: Tensor, b: Tensor, alpha: float) -> Tensor:
    """sd-mecha 1.1.8's slerp (see :func:`slerp`), float32 throughout."""
    import torch

    t = torch.tensor(alpha, dtype=torch.float32, device=a.device)
    a_norm = torch.linalg.vector_norm(a)
    b_norm = torch.linalg.vector_norm(b)
    u = a / a_norm
    v = b / b_norm
    omega = torch.arccos((u * v).sum().clamp(-1, 1))
    scaled = (u * torch.sin((1 - t) * omega) + v * torch.sin(t * omega)) / torch.sin(omega)
    result: Tensor = scaled * torch.lerp(a_norm, b_norm, t)
    if bool(result.isnan().any()):
        lerped: Tensor = torch.lerp(a, b, t)
        return lerped
    return result


# ---------------------------------------------------------------------------------------------
# add_perpendicular


@method("add_perpendicular", elementwise=False, temporaries=2)
def add_perpendicular(
    a: Annotated[Tensor, Doc("model A: the base the perpendicular part is added to")],
    b: DiffSourceB,
    c: Annotated[Tensor, Doc("model C: the common ancestor of A and B")],
    *,
    alpha: Annotated[
        Weights,
        Doc(
            "how much of the perpendicular part of B - C to add per block (negative "
            "subtracts; no BASE default: give 26 values, a BASE: or default: entry, or base=)"
        ),
        base_number("alpha", "the multiplier"),
    ] = 1.0,
) -> Tensor:
    """A + alpha * ((B - C) - ((A - C) . (B - C)) / ((A - C) . (A - C)) * (A - C))

    The part of B's difference from C that is perpendicular to A's difference from C, dot
    products over the whole key flattened (summed in float32, their ratio in double), added
    to A: what B learned that A did not already learn (sd-meh/sd-mecha). When A - C is all
    zeros (A equals C) the whole B - C is added.
    """
    a, b, c = as_float32(a), as_float32(b), as_float32(c)
    ours = a - c
    theirs = b - c
    ours_squared = float(_dot(ours, ours))
    if ours_squared != 0:
        projection = float(_dot(ours, theirs)) / ours_squared
        theirs = theirs - projection * ours
    return a + alpha * theirs


# ---------------------------------------------------------------------------------------------
# extract


@method("extract", elementwise=False, temporaries=2)
def extract(
    a: Annotated[Tensor, Doc("model A: the base the extracted features are added to")],
    b: Annotated[Tensor, Doc("model B: its difference from A is one feature source")],
    c: Annotated[Tensor, Doc("model C: its difference from A is the other feature source")],
    *,
    alpha: Annotated[
        Weights,
        Doc(
            "mix of the two differences per block: 0 takes B - A, 1 takes C - A (no "
            "BASE default: give 26 values, a BASE: or default: entry, or base=)"
        ),
        Range(0.0, 1.0),
        base_number("alpha", "alpha", minimum=0.0, maximum=1.0),
    ] = 0.5,
    beta: Annotated[
        Weights,
        Doc(
            "per block, 0 keeps what B - A and C - A share (similar rows), 1 what they "
            "do not (dissimilar rows), 0.5 both alike (no BASE default)"
        ),
        Range(0.0, 1.0),
    ] = 0.0,
    gamma: Annotated[
        float,
        Doc(
            "sharpness of the similarity weighting (SuperMerger's opt value); 0 ignores similarity"
        ),
        Range(minimum=0.0),
    ] = 1.0,
) -> Tensor:
    """A + lerp(B - A, C - A, alpha) * lerp(d, 1 - d, beta), d = ((r + 1) / 2) ** gamma

    SuperMerger's ``extract`` calc mode: ``r`` is the cosine similarity of B - A and C - A
    per row of the last dimension (a 1-D tensor as a whole; 0 for a zero row), clamped to
    -1..1, so ``d`` is near 1 where the two differences point the same way. Computed in
    float32 with ``lerp(x, y, t) = torch.lerp(x, y, t)``. gamma = 0 makes ``d`` 1: the
    result is then ``A + lerp(B - A, C - A, alpha) * (1 - beta)``.
    """
    import torch

    a, b, c = as_float32(a), as_float32(b), as_float32(c)
    shape = a.shape
    a, b, c = _at_least_1d(a), _at_least_1d(b), _at_least_1d(c)
    ours = b - a
    theirs = c - a
    similarity = _cosine(ours, theirs, -1, keepdim=True).clamp_(-1.0, 1.0)
    d = ((similarity + 1) / 2) ** gamma
    result = a + torch.lerp(ours, theirs, alpha) * torch.lerp(d, 1 - d, beta)
    return result.reshape(shape)


# ---------------------------------------------------------------------------------------------
# cosine_a / cosine_b: similarities, the statistics collector, the kernels


def column_similarity(a: Tensor, b: Tensor) -> Tensor:
    """Cosine similarity of A and B per column, along dimension 0 (shape ``A.shape[1:]``;
    a 0-D result for a 1-D or 0-D key); 0 for a column that is all zeros in A or B."""
    a, b = _at_least_1d(as_float32(a)), _at_least_1d(as_float32(b))
    return _cosine(a, b, 0)


def _column_count(tensor: Tensor) -> int:
    """How many columns (along dimension 0) of ``tensor`` are not all zeros."""
    import torch

    return int((torch.linalg.vector_norm(_at_least_1d(tensor), dim=0) > 0).sum())


def cosine_a_similarity(a: Tensor, b: Tensor) -> Tensor:
    """SuperMerger's cosineA similarity: ``(s + m) / 2`` per column, where ``s`` is the
    column similarity and ``m`` the cosine of the flattened tensors after each column of A
    and B is scaled to unit length, which is ``sum(s) / sqrt(n_A * n_B)`` (``n``: the
    number of nonzero columns; 0 when either is 0)."""
    a, b = as_float32(a), as_float32(b)
    columns = column_similarity(a, b)
    count = _column_count(a) * _column_count(b)
    magnitude = float(columns.sum()) / math.sqrt(count) if count else 0.0
    return (columns + magnitude) / 2


def cosine_b_similarity(a: Tensor, b: Tensor) -> Tensor:
    """SuperMerger's cosineB similarity: ``(s + m) / 2`` per column, where ``s`` is the
    column similarity and ``m`` the cosine of the flattened tensors A and B."""
    a, b = as_float32(a), as_float32(b)
    return (column_similarity(a, b) + _flat_cosine(a, b)) / 2


def midpoint_percentile(ordered: Tensor, percent: float) -> float:
    """The ``percent`` percentile of the sorted 1-D ``ordered`` by the midpoint rule (numpy's
    ``method="midpoint"``): at position ``(n - 1) * percent / 100``, the mean of the values
    just below and just above it (the value itself at a whole position)."""
    position = (ordered.numel() - 1) * (percent / 100)
    below = float(ordered[math.floor(position)])
    above = float(ordered[math.ceil(position)])
    return (below + above) / 2


def trimmed_range(values: Tensor) -> tuple[float, float] | None:
    """SuperMerger's similarity range: NaN values dropped, then values below the 1st
    percentile, then (of those left) values above the 99th percentile (midpoint rule, in
    double); the smallest and largest values left. ``None`` when no value is left."""
    import torch

    data = values.reshape(-1).to(device="cpu", dtype=torch.float64)
    data = data[~torch.isnan(data)]
    if data.numel() == 0:
        return None
    data = torch.sort(data).values
    low, high = TRIM_PERCENTILES
    data = data[data >= midpoint_percentile(data, low)]
    data = data[data <= midpoint_percentile(data, high)]
    return float(data[0]), float(data[-1])


class SimilarityRange:
    """Statistics of a cosine merge: the trimmed range of a similarity over every merged key.

    ``add`` measures one key (``measure(A, B)``, one value per column) and keeps the values
    on the CPU in float32; ``finish`` (or the first ``bounds`` call) computes the range with
    :func:`trimmed_range` and drops the values. ``keys`` and ``count`` say how many keys and
    similarity values were seen.
    """

    def __init__(self, measure: Callable[[Tensor, Tensor], Tensor]) -> None:
        self.measure = measure
        self.keys = 0
        self.count = 0
        self._values: list[Tensor] = []
        self._bounds: tuple[float, float] | None = None
        self._finished = False

    def add(self, key: str, block: str, a: Tensor, b: Tensor) -> None:
        import torch

        values = self.measure(a, b).reshape(-1).to(device="cpu", dtype=torch.float32)
        self._values.append(values)
        self.keys += 1
        self.count += values.numel()

    def finish(self) -> None:
        import torch

        if self._finished:
            return
        if self._values:
            self._bounds = trimmed_range(torch.cat(self._values))
        self._values = []
        self._finished = True

    def bounds(self) -> tuple[float, float] | None:
        """``(lo, hi)``, or ``None`` when no similarity was seen."""
        self.finish()
        return self._bounds


def cosine_a_statistics() -> SimilarityRange:
    """The collector of :func:`cosine_a`: SuperMerger's cosineA range is taken over the
    column similarities alone."""
    return SimilarityRange(column_similarity)


def cosine_b_statistics() -> SimilarityRange:
    """The collector of :func:`cosine_b`: the range of the combined cosineB similarity."""
    return SimilarityRange(cosine_b_similarity)


def _cosine_mix(
    a: Tensor, b: Tensor, similarity: Tensor, shift: float, stats: SimilarityRange
) -> Tensor:
    """``lerp(B, A, k)``, ``k = clamp((similarity - lo) / (hi - lo) - shift, 0, 1)``, with
    ``lo..hi`` from ``stats``; if the statistics saw no key, from this key's own values of
    what they measure."""
    import torch

    bounds = stats.bounds()
    if bounds is None:
        bounds = trimmed_range(stats.measure(a, b))
    lo, hi = bounds if bounds is not None else (0.0, 0.0)
    spread = hi - lo
    if spread > 0:
        share = ((similarity - lo) / spread - shift).clamp_(0.0, 1.0)
    else:
        share = (similarity >= hi).to(torch.float32)
    shape = a.shape
    result = torch.lerp(_at_least_1d(b), _at_least_1d(a), share)
    return result.reshape(shape)


CosineA: TypeAlias = Annotated["Tensor", Doc("model A: taken where its columns are most like B's")]
CosineB: TypeAlias = Annotated["Tensor", Doc("model B: taken where the columns differ most")]
COSINE_BASE: Final = BaseNumber(
    "alpha for BASE (text encoders, VAE and other keys outside the U-Net blocks); "
    "overrides the BASE that alpha sets"
)


def _cosine_alpha_doc(favoured: str) -> Doc:
    return Doc(
        f"per block, how far to shift toward B ({favoured}): subtracted from the "
        "normalised similarity before clamping to 0..1 (no BASE default: give 26 "
        "values, a BASE: or default: entry, or base=)"
    )


@method("cosine_a", elementwise=False, stats=cosine_a_statistics, temporaries=1)
def cosine_a(
    a: CosineA,
    b: CosineB,
    *,
    alpha: Annotated[Weights, _cosine_alpha_doc("its sign is ignored"), COSINE_BASE] = 0.5,
    stats: SimilarityRange,
) -> Tensor:
    """k * A + (1 - k) * B, k = clamp((s - lo) / (hi - lo) - |alpha|, 0, 1) per column

    SuperMerger's cosineA: ``s`` is :func:`cosine_a_similarity` of the key's columns
    (dimension 0); ``lo..hi`` is the trimmed range (1st to 99th percentile, see
    :func:`trimmed_range`) of the plain column similarities over every merged key, from the
    statistics pass. Computed in float32 as ``torch.lerp(B, A, k)``, so identical columns
    give A exactly. When the range is a single value, ``k`` is 1 at or above it, else 0.
    """
    a, b = as_float32(a), as_float32(b)
    return _cosine_mix(a, b, cosine_a_similarity(a, b), abs(alpha), stats)


@method("cosine_b", elementwise=False, stats=cosine_b_statistics, temporaries=1)
def cosine_b(
    a: CosineA,
    b: CosineB,
    *,
    alpha: Annotated[Weights, _cosine_alpha_doc("negative shifts toward A"), COSINE_BASE] = 0.5,
    stats: SimilarityRange,
) -> Tensor:
    """k * A + (1 - k) * B, k = clamp((s - lo) / (hi - lo) - alpha, 0, 1) per column

    SuperMerger's cosineB: ``s`` is :func:`cosine_b_similarity` of the key's columns
    (dimension 0) and ``lo..hi`` its trimmed range (1st to 99th percentile, see
    :func:`trimmed_range`) over every merged key, from the statistics pass. Computed in
    float32 as ``torch.lerp(B, A, k)``, so identical columns give A exactly. When the range
    is a single value, ``k`` is 1 at or above it, else 0.
    """
    a, b = as_float32(a), as_float32(b)
    return _cosine_mix(a, b, cosine_b_similarity(a, b), alpha, stats)
