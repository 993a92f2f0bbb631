"""Peers' rules offered as parameters: sd-meh's sign of zero in ``multiply_difference`` and
sd-mecha's row rounding in ``tensor_sum``, each against the peer's rule restated here, and
the documented difference from mergelang's default pinned."""

from __future__ import annotations

import math

import pytest
import torch

from mergelang.methods import get_method
from mergelang.methods.blend import tensor_sum


def sd_meh_multiply_difference(
    a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, alpha: float, beta: float
) -> torch.Tensor:
    """sd-meh 0.9.5 ``merge_methods.multiply_difference``."""
    diff_a = torch.pow(torch.abs(a.float() - c), (1 - alpha))
    diff_b = torch.pow(torch.abs(b.float() - c), alpha)
    difference = torch.copysign(diff_a * diff_b, (1 - beta) * a + beta * b - c)
    result: torch.Tensor = c + difference
    return result


def test_copysign_is_sd_meh_and_zero_differs_exactly_where_the_weighted_sum_is_c() -> None:
    gen = torch.Generator().manual_seed(7)
    a = torch.randn(4096, generator=gen)
    b = torch.randn(4096, generator=gen)
    c = torch.randn(4096, generator=gen)
    # a quarter of the elements where (A + B) / 2 == C exactly: B mirrors A around C
    b[:1024] = 2 * c[:1024] - a[:1024]
    mid = (0.5 * a + 0.5 * b - c) == 0
    assert int(mid.sum()) > 100
    peer = sd_meh_multiply_difference(a, b, c, 0.3, 0.5)
    spec = get_method("multiply_difference")
    assert spec is not None
    ours = spec(a, b, c, alpha=0.3, beta=0.5)
    theirs = spec(a, b, c, alpha=0.3, beta=0.5, zero_sign="copysign")
    # sd-meh's powers are float32 torch.pow, mergelang's a float64 route: rounding only
    assert torch.allclose(theirs, peer, rtol=1e-6, atol=1e-6)
    # the documented difference: C where the weighted sum is C, C + |A-C|^(1-a)|B-C|^a there
    assert torch.equal(ours[mid], c[mid])
    magnitude = (a - c).abs().double() ** 0.7 * (b - c).abs().double() ** 0.3
    assert torch.allclose(theirs[mid].double(), (c.double() + magnitude)[mid], rtol=0, atol=1e-6)
    assert torch.equal(ours[~mid], theirs[~mid])


def sd_mecha_tensor_sum(
    a: torch.Tensor, b: torch.Tensor, width: float, offset: float
) -> torch.Tensor:
    """sd-mecha 1.1.8 ``slicing.tensor_sum`` with ``ratio_to_region`` (width, offset in 0..1)."""
    a, b = a.clone(), b.clone()
    if a.shape == ():
        return b if width > 0.5 else a
    n = a.size(0)
    offset = math.fmod(offset, 1.0)
    if width + offset <= 1:
        start, end, inverted = offset * n, (width + offset) * n, False
    else:
        start, end, inverted = (width + offset - 1) * n, offset * n, True
    start_i, end_i = round(start), round(end)
    if inverted:
        b[start_i:end_i] = a[start_i:end_i]
        return b
    a[start_i:end_i] = b[start_i:end_i]
    return a


@pytest.mark.parametrize("rows", [1, 3, 7, 10, 320])
@pytest.mark.parametrize(
    ("alpha", "beta"), [(0.5, 0.0), (0.35, 0.25), (0.25, 0.9), (0.45, 0.75), (1.0, 0.0)]
)
def test_round_is_sd_mechas_rows(rows: int, alpha: float, beta: float) -> None:
    a = torch.zeros(rows, 3)
    b = torch.ones(rows, 3)
    got = tensor_sum(a, b, alpha=alpha, beta=beta, boundary="round")
    assert torch.equal(got, sd_mecha_tensor_sum(a, b, alpha, beta))


def test_floor_and_round_differ_at_row_boundaries_as_documented() -> None:
    a = torch.zeros(10)
    b = torch.ones(10)
    # rows 0.35 * 10 = 3.5 .. 6.0: floor takes B's rows 3, 4, 5; round (half to even) 4, 5
    assert tensor_sum(a, b, alpha=0.25, beta=0.35).tolist() == [0, 0, 0, 1, 1, 1, 0, 0, 0, 0]
    assert tensor_sum(a, b, alpha=0.25, beta=0.35, boundary="round").tolist() == [
        0,
        0,
        0,
        0,
        1,
        1,
        0,
        0,
        0,
        0,
    ]
    # a 0-D key: floor takes B only when the window covers the whole row, round above 0.5
    zero_a, zero_b = torch.tensor(2.0), torch.tensor(5.0)
    assert tensor_sum(zero_a, zero_b, alpha=0.6, beta=0.0).item() == 2.0
    assert tensor_sum(zero_a, zero_b, alpha=0.6, beta=0.0, boundary="round").item() == 5.0
