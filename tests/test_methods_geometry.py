"""The geometry and similarity methods: slerp, add_perpendicular, extract, cosine_a, cosine_b.

Each kernel is compared with a straightforward implementation written here: slerp as
mergekit writes it, add_perpendicular as a projection, extract and the cosine merges as
SuperMerger writes them (``torch.nn.functional.cosine_similarity``/``normalize``, the
percentile trimming through ``torch.quantile(..., interpolation="midpoint")``, numpy's
midpoint rule). The references work on whole tensors, in double precision where SuperMerger
does not fix the precision, so results are compared within a small tolerance (the kernels
reduce in float32). Special cases (zero vectors, parallel vectors, identical models, alpha
0 and 1) are checked exactly. One recipe runs every method end to end.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from run_helpers import declare, load, merged_float32, shared_models, write_recipe

import mergelang
from mergelang.arch import SD_BLOCKS, get_architecture
from mergelang.check import check
from mergelang.errors import RecipeError
from mergelang.lang.parser import parse
from mergelang.methods import get_method
from mergelang.methods.geometry import (
    PARALLEL_DOT,
    SimilarityRange,
    add_perpendicular,
    column_similarity,
    cosine_a,
    cosine_a_statistics,
    cosine_b,
    cosine_b_statistics,
    extract,
    midpoint_percentile,
    slerp,
    trimmed_range,
)

SHAPES = [(), (1,), (7,), (5, 3), (4, 3, 3, 3)]
"""0-D, 1-element, 1-D, 2-D and 4-D keys."""
ORIGINS = [torch.float32, torch.float16, torch.bfloat16]


def tensors(seed: int, shape: Sequence[int], count: int, dtype: torch.dtype) -> list[torch.Tensor]:
    """``count`` random tensors stored as ``dtype`` and cast to float32 (as the executor
    casts fp16/bf16 inputs before calling a kernel)."""
    gen = torch.Generator().manual_seed(seed)
    return [
        torch.randn(tuple(shape), generator=gen).to(dtype).to(torch.float32) for _ in range(count)
    ]


def close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert actual.dtype == torch.float32
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected.to(torch.float32), rtol=2e-5, atol=2e-6)


# ---- references --------------------------------------------------------------------------


def ref_slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """mergekit's slerp in float64: coefficients on the tensors themselves, lerp when the
    normalised dot product is above 0.9995 in magnitude or a vector is zero."""
    x, y = a.double(), b.double()
    nx, ny = float(x.norm()), float(y.norm())
    if nx == 0 or ny == 0:
        return (1 - t) * x + t * y
    dot = float(((x / nx) * (y / ny)).sum())
    if abs(dot) > 0.9995:
        return (1 - t) * x + t * y
    theta = math.acos(dot)
    return (math.sin((1 - t) * theta) * x + math.sin(t * theta) * y) / math.sin(theta)


def ref_add_perpendicular(
    a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, alpha: float
) -> torch.Tensor:
    ours, theirs = (a - c).double(), (b - c).double()
    if bool((ours == 0).all()):
        return a.double() + alpha * theirs
    along = (ours * theirs).sum() / (ours * ours).sum()
    return a.double() + alpha * (theirs - along * ours)


def ref_extract(
    a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, alpha: float, beta: float, gamma: float
) -> torch.Tensor:
    """SuperMerger's ``extract_super(A, B, C, alpha, beta, gamma)`` in float64."""
    base = a.double().reshape(a.shape or (1,))
    x = b.double().reshape(base.shape) - base
    y = c.double().reshape(base.shape) - base
    r = F.cosine_similarity(x, y, -1).clamp(-1, 1).unsqueeze(-1)
    d = ((r + 1) / 2) ** gamma
    return (base + torch.lerp(x, y, alpha) * torch.lerp(d, 1 - d, beta)).reshape(a.shape)


def sm_similarity_a(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """SuperMerger's cosineA statistics: column similarity of the column-normalised tensors."""
    an, bn = F.normalize(a, p=2, dim=0), F.normalize(b, p=2, dim=0)
    result: torch.Tensor = torch.nn.CosineSimilarity(dim=0)(an, bn)
    return result


def sm_combined_a(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    an, bn = F.normalize(a, p=2, dim=0), F.normalize(b, p=2, dim=0)
    simab = torch.nn.CosineSimilarity(dim=0)(an, bn)
    magnitude = torch.dot(an.reshape(-1), bn.reshape(-1)) / (an.norm() * bn.norm())
    result: torch.Tensor = (simab + magnitude) / 2
    return result


def sm_combined_b(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    simab = torch.nn.CosineSimilarity(dim=0)(a, b)
    magnitude = torch.dot(a.reshape(-1), b.reshape(-1)) / (a.norm() * b.norm())
    result: torch.Tensor = (simab + magnitude) / 2
    return result


def sm_bounds(values: Sequence[torch.Tensor]) -> tuple[float, float]:
    """SuperMerger's precosine: NaN dropped, below the 1st percentile deleted, then above
    the 99th percentile of what is left (numpy's midpoint method), min and max."""
    sims = torch.cat([v.reshape(-1) for v in values]).double()
    sims = sims[~torch.isnan(sims)]
    sims = sims[sims >= torch.quantile(sims, 0.01, interpolation="midpoint")]
    sims = sims[sims <= torch.quantile(sims, 0.99, interpolation="midpoint")]
    return float(sims.min()), float(sims.max())


def sm_cosine(
    a: torch.Tensor, b: torch.Tensor, shift: float, bounds: tuple[float, float], combined: bool
) -> torch.Tensor:
    """SuperMerger's ``cosine()`` merge (its default lerp path); ``combined`` picks the
    cosineB similarity, else cosineA's."""
    lo, hi = bounds
    similarity = sm_combined_b(a, b) if combined else sm_combined_a(a, b)
    k = ((similarity - lo) / (hi - lo) - shift).clip(min=0, max=1.0)
    return torch.lerp(b, a, k)


def statistics_of(
    factory: Callable[[], SimilarityRange], pairs: Sequence[tuple[torch.Tensor, torch.Tensor]]
) -> SimilarityRange:
    stats = factory()
    for i, (a, b) in enumerate(pairs):
        stats.add(f"key{i}", "BASE", a, b)
    stats.finish()
    return stats


def related_pairs(
    seed: int, shapes: Sequence[Sequence[int]]
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A "model" of several keys: A random, B = A plus noise of varying strength, so the
    column similarities spread over a range."""
    gen = torch.Generator().manual_seed(seed)
    pairs = []
    for i, shape in enumerate(shapes):
        a = torch.randn(tuple(shape), generator=gen)
        b = a + (0.3 + 0.4 * i) * torch.randn(tuple(shape), generator=gen)
        pairs.append((a, b))
    return pairs


MODEL_SHAPES = [(16, 12), (8, 6, 3, 3), (40,), (12, 20), (6, 4, 1, 1), (30, 5)]


# ---- registration ------------------------------------------------------------------------


def test_signatures_and_kinds() -> None:
    expected = {
        "slerp": 'slerp(a, b, alpha=0.5, variant="mergelang", base=None)',
        "add_perpendicular": "add_perpendicular(a, b, c, alpha=1.0, base=None)",
        "extract": "extract(a, b, c, alpha=0.5, beta=0.0, gamma=1.0, base=None)",
        "cosine_a": "cosine_a(a, b, alpha=0.5, base=None)",
        "cosine_b": "cosine_b(a, b, alpha=0.5, base=None)",
    }
    for name, signature in expected.items():
        spec = get_method(name)
        assert spec is not None, name
        assert spec.signature() == signature
        assert not spec.elementwise, name
        assert spec.needs_stats == name.startswith("cosine"), name
        assert spec.formula and "\n" not in spec.formula
    assert get_method("slerp").formula.startswith("sin((1 - alpha) * theta)")  # type: ignore[union-attr]
    assert get_method("cosine_a").stats is cosine_a_statistics  # type: ignore[union-attr]
    assert get_method("cosine_b").stats is cosine_b_statistics  # type: ignore[union-attr]


def check_errors(text: str) -> list[tuple[int, int, str]]:
    with pytest.raises(RecipeError) as info:
        check(parse(text, path="r.merge"))
    return [(d.line or 0, d.column or 0, d.message) for d in info.value.diagnostics]


def test_out_of_range_arguments_are_refused_at_their_place() -> None:
    text = (
        'model a = "a.safetensors"\nmodel b = "b.safetensors"\nmodel c = "c.safetensors"\n'
        "s = slerp(a, b, alpha=1.5)\n"
        "e = extract(a, b, c, alpha=0.5, beta=-0.1, gamma=1)\n"
        "g = extract(a, b, c, gamma=-2)\n"
    )
    found = check_errors(text)
    assert any(line == 4 and col == 23 and "alpha is at most 1.0" in m for line, col, m in found)
    assert any(line == 5 and col == 38 and "beta is at least 0.0" in m for line, col, m in found)
    assert any(line == 6 and col == 28 and "gamma is at least 0.0" in m for line, col, m in found)


# ---- slerp -------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("origin", ORIGINS)
@pytest.mark.parametrize("alpha", [0.25, 0.5, 0.8])
def test_slerp_matches_mergekit(shape: tuple[int, ...], origin: torch.dtype, alpha: float) -> None:
    a, b = tensors(1, shape, 2, origin)
    close(slerp(a, b, alpha=alpha), ref_slerp(a, b, alpha))


def test_slerp_interpolates_along_the_arc() -> None:
    # two orthogonal unit vectors: the result stays on the unit circle at angle alpha * 90°
    a = torch.tensor([1.0, 0.0])
    b = torch.tensor([0.0, 1.0])
    result = slerp(a, b, alpha=1 / 3)
    close(result, torch.tensor([math.cos(math.pi / 6), math.sin(math.pi / 6)]))


@pytest.mark.parametrize("shape", [(1,), (7,), (4, 3, 3, 3)])
def test_slerp_alpha_0_and_1_are_exact(shape: tuple[int, ...]) -> None:
    a, b = tensors(2, shape, 2, torch.float16)
    assert torch.equal(slerp(a, b, alpha=0.0), a)
    assert torch.equal(slerp(a, b, alpha=1.0), b)


def test_slerp_of_a_zero_tensor_is_lerp() -> None:
    (a,) = tensors(3, (5, 3), 1, torch.float32)
    zero = torch.zeros(5, 3)
    assert torch.equal(slerp(a, zero, alpha=0.25), torch.lerp(a, zero, 0.25))
    assert torch.equal(slerp(zero, a, alpha=0.25), torch.lerp(zero, a, 0.25))
    assert torch.equal(slerp(zero, zero, alpha=0.4), zero)


def test_slerp_of_nearly_parallel_tensors_is_lerp() -> None:
    (a,) = tensors(4, (6, 4), 1, torch.float32)
    twice = 2 * a
    assert torch.equal(slerp(a, twice, alpha=0.3), torch.lerp(a, twice, 0.3))
    opposite = -a
    assert torch.equal(slerp(a, opposite, alpha=0.3), torch.lerp(a, opposite, 0.3))
    # just inside the threshold the spherical formula applies
    b = a.clone()
    b[0, 0] += 2.0
    cos = float((a * b).sum() / (a.norm() * b.norm()))
    assert cos < PARALLEL_DOT
    close(slerp(a, b, alpha=0.3), ref_slerp(a, b, 0.3))


@pytest.mark.parametrize("cos", [0.999, 0.9994, 0.9996, -0.9997])
def test_the_parallel_threshold_is_mergekits(cos: float) -> None:
    angle = math.acos(cos)
    a = torch.tensor([3.0, 0.0, 0.0])
    b = torch.tensor([2 * math.cos(angle), 2 * math.sin(angle), 0.0])
    result = slerp(a, b, alpha=0.5)
    assert PARALLEL_DOT == 0.9995
    if abs(cos) > 0.9995:
        assert torch.equal(result, torch.lerp(a, b, 0.5))
    else:
        close(result, ref_slerp(a, b, 0.5))
        lerped = torch.lerp(a, b, 0.5)
        assert float((result - lerped).abs().max()) > 1e-4 * float(lerped.abs().max())


finite = st.one_of(
    st.just(0.0),
    st.floats(2**-10, 1024.0, width=32),
    st.floats(-1024.0, -(2**-10), width=32),
)
vectors = st.lists(finite, min_size=1, max_size=12)


@settings(max_examples=40, deadline=None)
@given(values=vectors, t=st.floats(0, 1))
def test_slerp_of_a_tensor_with_itself_is_the_tensor(values: list[float], t: float) -> None:
    a = torch.tensor(values, dtype=torch.float32)
    assert torch.equal(slerp(a, a.clone(), alpha=t), a)


@settings(max_examples=40, deadline=None)
@given(
    pair=st.integers(1, 12).flatmap(
        lambda n: st.tuples(
            st.lists(finite, min_size=n, max_size=n), st.lists(finite, min_size=n, max_size=n)
        )
    ),
    t=st.floats(0, 1),
)
def test_slerp_is_symmetric(pair: tuple[list[float], list[float]], t: float) -> None:
    a = torch.tensor(pair[0], dtype=torch.float32)
    b = torch.tensor(pair[1], dtype=torch.float32)
    scale = float(torch.maximum(a.abs().max(), b.abs().max()))
    torch.testing.assert_close(
        slerp(a, b, alpha=t), slerp(b, a, alpha=1 - t), rtol=1e-4, atol=1e-5 * scale + 1e-6
    )


# ---- add_perpendicular ------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("origin", ORIGINS)
@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.0, -0.5])
def test_add_perpendicular_matches_the_projection(
    shape: tuple[int, ...], origin: torch.dtype, alpha: float
) -> None:
    a, b, c = tensors(5, shape, 3, origin)
    result = add_perpendicular(a, b, c, alpha=alpha)
    close(result, ref_add_perpendicular(a, b, c, alpha))
    if alpha == 0:
        assert torch.equal(result, a)


def test_add_perpendicular_with_a_equal_to_c_adds_the_whole_difference() -> None:
    a, b = tensors(6, (4, 3, 3, 3), 2, torch.float32)
    assert torch.equal(add_perpendicular(a, b, a.clone(), alpha=0.7), a + 0.7 * (b - a))


def test_add_perpendicular_adds_nothing_along_a_parallel_difference() -> None:
    c, delta = tensors(7, (6, 5), 2, torch.float32)
    a = c + delta
    b = c + 3 * delta  # B - C is parallel to A - C: no perpendicular part
    torch.testing.assert_close(add_perpendicular(a, b, c, alpha=1.0), a, rtol=0, atol=1e-5)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 40), alpha=st.floats(-2, 2))
def test_the_added_part_is_perpendicular_to_a_minus_c(seed: int, n: int, alpha: float) -> None:
    a, b, c = tensors(seed, (n,), 3, torch.float32)
    added = (add_perpendicular(a, b, c, alpha=alpha) - a).double()
    ours = (a - c).double()
    assert abs(float((added * ours).sum())) <= 1e-4 * (float(added.norm()) * float(ours.norm()) + 1)


# ---- extract -----------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("origin", ORIGINS)
@pytest.mark.parametrize(
    ("alpha", "beta", "gamma"), [(0.0, 0.0, 1.0), (0.3, 0.2, 2.0), (1.0, 1.0, 0.5), (0.5, 0.5, 4)]
)
def test_extract_matches_supermerger(
    shape: tuple[int, ...], origin: torch.dtype, alpha: float, beta: float, gamma: float
) -> None:
    a, b, c = tensors(8, shape, 3, origin)
    close(
        extract(a, b, c, alpha=alpha, beta=beta, gamma=gamma),
        ref_extract(a, b, c, alpha, beta, gamma),
    )


def test_extract_measures_similarity_per_row_of_the_last_dimension() -> None:
    a = torch.zeros(2, 3)
    b = torch.tensor([[1.0, 2.0, 3.0], [1.0, 0.0, 0.0]])
    c = torch.tensor([[2.0, 4.0, 6.0], [-1.0, 0.0, 0.0]])
    # row 0: B - A and C - A point the same way (r = 1, d = 1); row 1: opposite (r = -1, d = 0)
    result = extract(a, b, c, alpha=0.5, beta=0.0, gamma=1.0)
    expected = torch.tensor([[1.5, 3.0, 4.5], [0.0, 0.0, 0.0]])
    close(result, expected)
    flipped = extract(a, b, c, alpha=0.5, beta=1.0, gamma=1.0)
    close(flipped, torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))


def test_extract_with_gamma_0_ignores_similarity() -> None:
    a, b, c = tensors(9, (5, 4), 3, torch.float32)
    result = extract(a, b, c, alpha=0.25, beta=0.3, gamma=0.0)
    close(result, a + torch.lerp(b - a, c - a, 0.25) * 0.7)


def test_extract_of_zero_rows_uses_similarity_0() -> None:
    a, c = tensors(10, (3, 4), 2, torch.float32)
    b = a.clone()  # B - A is zero in every row: r = 0, d = 0.5 ** gamma
    result = extract(a, b, c, alpha=0.5, beta=0.0, gamma=2.0)
    close(result, a + 0.5 * (c - a) * 0.25)
    assert bool(torch.isfinite(result).all())


# ---- cosine_a / cosine_b -----------------------------------------------------------------


def test_midpoint_percentile_follows_numpy() -> None:
    values = torch.tensor([1.0, 2.0, 3.0, 4.0, 10.0], dtype=torch.float64)
    assert midpoint_percentile(values, 50) == 3.0  # a whole position: the value itself
    assert midpoint_percentile(values, 60) == 3.5  # position 2.4: mean of 3 and 4
    assert midpoint_percentile(values, 99) == 7.0  # position 3.96: mean of 4 and 10
    assert midpoint_percentile(values, 1) == 1.5


@settings(max_examples=30, deadline=None)
@given(
    values=st.lists(st.floats(-1, 1, width=32), min_size=1, max_size=300),
    nans=st.integers(0, 3),
)
def test_trimmed_range_matches_quantile_trimming(values: list[float], nans: int) -> None:
    data = torch.tensor(values + [math.nan] * nans, dtype=torch.float32)
    assert trimmed_range(data) == sm_bounds([data])


def test_trimmed_range_of_nothing_is_none() -> None:
    assert trimmed_range(torch.tensor([])) is None
    assert trimmed_range(torch.tensor([math.nan])) is None
    assert cosine_a_statistics().bounds() is None


def test_statistics_keep_one_value_per_column() -> None:
    pairs = related_pairs(11, [(64, 8), (5,), (3, 2, 3, 3)])
    stats = statistics_of(cosine_b_statistics, pairs)
    assert stats.keys == 3
    assert stats.count == 8 + 1 + 2 * 3 * 3


@pytest.mark.parametrize("combined", [False, True])
@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.9])
def test_cosine_merges_match_supermerger(combined: bool, alpha: float) -> None:
    pairs = related_pairs(12, MODEL_SHAPES)
    if combined:
        stats = statistics_of(cosine_b_statistics, pairs)
        bounds = sm_bounds([sm_combined_b(a, b) for a, b in pairs])
    else:
        stats = statistics_of(cosine_a_statistics, pairs)
        bounds = sm_bounds([sm_similarity_a(a, b) for a, b in pairs])
    found = stats.bounds()
    assert found is not None
    assert found == pytest.approx(bounds, rel=1e-6, abs=1e-7)
    kernel = cosine_b if combined else cosine_a
    for a, b in pairs:
        result = kernel(a, b, alpha=alpha, stats=stats)
        close(result, sm_cosine(a, b, alpha, found, combined))


def test_cosine_a_ignores_the_sign_of_alpha_and_cosine_b_does_not() -> None:
    pairs = related_pairs(13, MODEL_SHAPES)
    a, b = pairs[0]
    stats_a = statistics_of(cosine_a_statistics, pairs)
    assert torch.equal(
        cosine_a(a, b, alpha=-0.4, stats=stats_a), cosine_a(a, b, alpha=0.4, stats=stats_a)
    )
    stats_b = statistics_of(cosine_b_statistics, pairs)
    bounds = stats_b.bounds()
    assert bounds is not None
    close(cosine_b(a, b, alpha=-0.4, stats=stats_b), sm_cosine(a, b, -0.4, bounds, True))
    assert not torch.equal(
        cosine_b(a, b, alpha=-0.4, stats=stats_b), cosine_b(a, b, alpha=0.4, stats=stats_b)
    )


@pytest.mark.parametrize("origin", [torch.float16, torch.bfloat16])
def test_cosine_merges_of_low_precision_inputs(origin: torch.dtype) -> None:
    pairs = [
        (a.to(origin).float(), b.to(origin).float()) for a, b in related_pairs(14, MODEL_SHAPES)
    ]
    stats = statistics_of(cosine_b_statistics, pairs)
    bounds = stats.bounds()
    assert bounds is not None
    for a, b in pairs:
        close(cosine_b(a, b, alpha=0.2, stats=stats), sm_cosine(a, b, 0.2, bounds, True))


@pytest.mark.parametrize("kernel", [cosine_a, cosine_b])
def test_a_zero_key_merges_to_defined_values(kernel: Callable[..., torch.Tensor]) -> None:
    pairs = related_pairs(15, MODEL_SHAPES)
    factory = cosine_a_statistics if kernel is cosine_a else cosine_b_statistics
    zero = torch.zeros(6, 5)
    (b,) = tensors(16, (6, 5), 1, torch.float32)
    stats = statistics_of(factory, [*pairs, (zero, b)])
    bounds = stats.bounds()
    assert bounds is not None
    # the zero key's similarity is 0 in every column (SuperMerger gets NaN from 0 / 0 here)
    assert torch.equal(column_similarity(zero, b), torch.zeros(5))
    result = kernel(zero, b, alpha=0.25, stats=stats)
    assert bool(torch.isfinite(result).all())
    lo, hi = bounds
    k = min(max((0.0 - lo) / (hi - lo) - 0.25, 0.0), 1.0)
    close(result, torch.lerp(b, zero, torch.tensor(k, dtype=torch.float32)))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), alpha=st.floats(-1, 1), shape_index=st.integers(0, 4))
def test_cosine_of_a_model_with_itself_is_the_model(
    seed: int, alpha: float, shape_index: int
) -> None:
    pairs = related_pairs(seed, MODEL_SHAPES)
    (a,) = tensors(seed, SHAPES[shape_index], 1, torch.float32)
    for factory, kernel in ((cosine_a_statistics, cosine_a), (cosine_b_statistics, cosine_b)):
        stats = statistics_of(factory, pairs)
        assert torch.equal(kernel(a, a.clone(), alpha=alpha, stats=stats), a)


def test_a_single_similarity_makes_a_step() -> None:
    # one 1-D key: one similarity value, so lo == hi: k is 1 at or above it, 0 below
    a = torch.tensor([1.0, 2.0, 3.0])
    b = torch.tensor([1.0, 2.5, 2.0])
    stats = statistics_of(cosine_b_statistics, [(a, b)])
    bounds = stats.bounds()
    assert bounds is not None and bounds[0] == bounds[1]
    assert torch.equal(cosine_b(a, b, alpha=0.5, stats=stats), a)
    other = torch.tensor([-1.0, 0.5, 2.0])  # less similar than the only value seen: B
    assert torch.equal(cosine_b(a, other, alpha=0.5, stats=stats), other)


def test_a_key_the_statistics_never_saw_uses_its_own_range() -> None:
    a, b = related_pairs(17, [(8, 4)])[0]
    empty = cosine_a_statistics()
    empty.finish()
    own = trimmed_range(column_similarity(a, b))
    assert own is not None
    close(cosine_a(a, b, alpha=0.1, stats=empty), sm_cosine(a, b, 0.1, own, False))


# ---- end to end --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_models(tmp_path_factory, ["a", "b", "c", "inpaint"])


ONE_BLOCK = [0.0] * 25
ONE_BLOCK[SD_BLOCKS.index("IN04")] = 0.7


def merged_keys(models: Sequence[Mapping[str, torch.Tensor]]) -> list[str]:
    """The keys the statistics pass sees: merged (a block, floating point) and of one shape."""
    arch = get_architecture("sd1")
    return [
        key
        for key, tensor in models[0].items()
        if arch.block_of(key) is not None
        and tensor.is_floating_point()
        and len({tuple(m[key].shape) for m in models}) == 1
    ]


def cosine_reference(
    models: Sequence[Mapping[str, torch.Tensor]], alpha: float, combined: bool
) -> Callable[[Sequence[torch.Tensor], str], torch.Tensor]:
    keys = merged_keys(models)
    measure = sm_combined_b if combined else sm_similarity_a
    bounds = sm_bounds([measure(models[0][k].float(), models[1][k].float()) for k in keys])

    def formula(xs: Sequence[torch.Tensor], block: str) -> torch.Tensor:
        return sm_cosine(xs[0], xs[1], alpha, bounds, combined)

    return formula


def test_every_method_runs_end_to_end(models: Path, tmp_path: Path) -> None:
    vector = "[" + ", ".join(repr(v) for v in ONE_BLOCK) + "]"
    recipe = write_recipe(
        tmp_path,
        declare(models, "a", "b", "c", "inpaint")
        + 'save slerp(a, b, alpha=0.3) to "slerp.safetensors" as fp32\n'
        + f'save slerp(a, b, alpha={vector}) to "slerp_block.safetensors" as fp32\n'
        + 'save add_perpendicular(a, b, c, alpha=0.8) to "perp.safetensors" as fp32\n'
        + 'save extract(a, b, c, alpha=0.4, beta=0.3, gamma=2) to "extract.safetensors" as fp32\n'
        + 'save cosine_a(a, b, alpha=0.2) to "cos_a.safetensors" as fp32\n'
        + 'save cosine_b(inpaint, b, alpha=0.1) to "cos_b.safetensors" as fp32\n',
    )
    planned = mergelang.plan(recipe, cache_dir=tmp_path / "cache")
    assert planned.passes == ["statistics", "merge"]
    mergelang.run(recipe, cache_dir=tmp_path / "cache")
    a, b, c, inpaint = (load(models / f"{n}.safetensors") for n in ("a", "b", "c", "inpaint"))

    def expect(
        name: str,
        inputs: Sequence[Mapping[str, torch.Tensor]],
        formula: Callable[..., torch.Tensor],
    ) -> None:
        out = load(tmp_path / f"{name}.safetensors")
        expected = merged_float32("sd1", inputs, formula)
        assert set(out) == set(expected), name
        for key, value in expected.items():
            if value.is_floating_point():
                assert out[key].dtype == torch.float32
                torch.testing.assert_close(
                    out[key],
                    value.float(),
                    rtol=2e-5,
                    atol=2e-6,
                    msg=f"{name}: {key}",
                )
            else:
                assert torch.equal(out[key], value), (name, key)

    expect("slerp", [a, b], lambda xs, block: ref_slerp(xs[0], xs[1], 0.3).float())
    expect(
        "perp", [a, b, c], lambda xs, block: ref_add_perpendicular(xs[0], xs[1], xs[2], 0.8).float()
    )
    expect(
        "extract",
        [a, b, c],
        lambda xs, block: ref_extract(xs[0], xs[1], xs[2], 0.4, 0.3, 2.0).float(),
    )
    expect("cos_a", [a, b], cosine_reference([a, b], 0.2, combined=False))
    # the inpainting input convolution merges its first 4 channels, a key the statistics
    # pass does not see: it is placed in the range of the others
    expect("cos_b", [inpaint, b], cosine_reference([inpaint, b], 0.1, combined=True))

    # per-block weights change only their block's keys; an unset BASE is 0 for slerp
    arch = get_architecture("sd1")
    out = load(tmp_path / "slerp_block.safetensors")
    seen = 0
    for key, value in a.items():
        if arch.block_of(key) == "IN04":
            seen += 1
            torch.testing.assert_close(
                out[key],
                ref_slerp(value.float(), b[key].float(), 0.7).float(),
                rtol=2e-5,
                atol=2e-6,
            )
        else:
            assert torch.equal(out[key], value.float() if value.is_floating_point() else value), key
    assert seen > 0


def test_a_vector_without_base_is_an_error_for_the_cosine_merges(
    models: Path, tmp_path: Path
) -> None:
    vector = "[" + ", ".join(["0.5"] * 25) + "]"
    recipe = write_recipe(
        tmp_path,
        declare(models, "a", "b") + f'save cosine_a(a, b, alpha={vector}) to "x.safetensors"\n',
    )
    with pytest.raises(RecipeError) as info:
        mergelang.plan(recipe, cache_dir=tmp_path / "cache")
    (diagnostic,) = info.value.diagnostics
    assert (diagnostic.line, diagnostic.column) == (3, 27)
    assert diagnostic.message.startswith("alpha of cosine_a with sd1 models: a 25-value vector")
    assert "sets no BASE weight" in diagnostic.message


# ---- CUDA --------------------------------------------------------------------------------

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@CUDA
@pytest.mark.parametrize("shape", [(), (7,), (64, 48, 3, 3)])
def test_cuda_kernels_give_the_cpu_results(shape: tuple[int, ...]) -> None:
    a, b, c = tensors(18, shape, 3, torch.float16)
    ga, gb, gc = a.cuda(), b.cuda(), c.cuda()
    pairs = related_pairs(19, MODEL_SHAPES)
    cases: list[tuple[torch.Tensor, torch.Tensor]] = [
        (slerp(ga, gb, alpha=0.3), slerp(a, b, alpha=0.3)),
        (add_perpendicular(ga, gb, gc, alpha=0.8), add_perpendicular(a, b, c, alpha=0.8)),
        (
            extract(ga, gb, gc, alpha=0.4, beta=0.3, gamma=2),
            extract(a, b, c, alpha=0.4, beta=0.3, gamma=2),
        ),
    ]
    for factory, kernel in ((cosine_a_statistics, cosine_a), (cosine_b_statistics, cosine_b)):
        on_cpu = statistics_of(factory, pairs)
        on_gpu = statistics_of(factory, [(x.cuda(), y.cuda()) for x, y in pairs])
        assert on_gpu.bounds() == pytest.approx(on_cpu.bounds(), rel=1e-6, abs=1e-7)
        cases.append(
            (kernel(ga, gb, alpha=0.2, stats=on_gpu), kernel(a, b, alpha=0.2, stats=on_cpu))
        )
    for gpu, cpu in cases:
        assert gpu.device.type == "cuda"
        close(gpu.cpu(), cpu)


@CUDA
def test_cuda_runs_write_the_cpu_results(models: Path, tmp_path: Path) -> None:
    recipe = write_recipe(
        tmp_path,
        declare(models, "a", "b", "c")
        + 'save slerp(a, b, alpha=0.3) to "slerp.safetensors" as fp32\n'
        + 'save extract(a, b, c, alpha=0.4, beta=0.3, gamma=2) to "extract.safetensors" as fp32\n'
        + 'save cosine_b(a, b, alpha=0.1) to "cos_b.safetensors" as fp32\n',
    )
    mergelang.run(recipe, out_dir=tmp_path / "cpu", cache_dir=tmp_path / "cache-cpu")
    mergelang.run(recipe, out_dir=tmp_path / "gpu", cache_dir=tmp_path / "cache-gpu", device="cuda")
    for name in ("slerp", "extract", "cos_b"):
        cpu = load(tmp_path / "cpu" / f"{name}.safetensors")
        gpu = load(tmp_path / "gpu" / f"{name}.safetensors")
        assert set(cpu) == set(gpu)
        for key, value in cpu.items():
            torch.testing.assert_close(gpu[key], value, rtol=2e-5, atol=2e-6, msg=f"{name}: {key}")
