"""slerp's variants by name: mergekit 0.1.5's and sd-mecha 1.1.8's, against restatements of
their sources written here (float32 torch, in the order each peer computes)."""

from __future__ import annotations

import math

import pytest
import torch

from mergelang.methods import get_method
from mergelang.methods.geometry import slerp


def mergekit_slerp(t: float, v0: torch.Tensor, v1: torch.Tensor) -> torch.Tensor:
    """mergekit 0.1.5 ``merge_methods/slerp.py`` for one weight (batched as one output row,
    a key smaller than its 2**20-element chunk): norms in float32, a norm <= 1e-8 read as 1,
    the dot of the normalised vectors clamped, lerp coefficients above 0.9995."""
    x = v0.reshape(1, -1)
    y = v1.reshape(1, -1)
    tt = torch.tensor([t], dtype=torch.float32).reshape(-1, 1)
    na = torch.linalg.vector_norm(torch.linalg.vector_norm(x, dim=1, keepdim=True)[None], dim=0)
    nb = torch.linalg.vector_norm(torch.linalg.vector_norm(y, dim=1, keepdim=True)[None], dim=0)
    na = torch.where(na > 1e-8, na, 1)
    nb = torch.where(nb > 1e-8, nb, 1)
    dot = ((x / na) * (y / nb)).sum(dim=1, keepdim=True)[None].sum(dim=0).clamp(-1, 1)
    linear = dot.abs() > 0.9995
    theta = torch.acos(torch.where(linear, 0, dot))
    ca = torch.where(linear, 1 - tt, torch.sin((1 - tt) * theta) / torch.sin(theta))
    cb = torch.where(linear, tt, torch.sin(tt * theta) / torch.sin(theta))
    return (ca * x + cb * y).reshape(v0.shape)


def sd_mecha_slerp(a: torch.Tensor, b: torch.Tensor, alpha: float) -> torch.Tensor:
    """sd-mecha 1.1.8 ``merge_methods/linear.py`` ``slerp``, alpha a float32 tensor."""
    t = torch.tensor(alpha, dtype=torch.float32)
    an = a / a.norm()
    bn = b / b.norm()
    omega = torch.arccos((an * bn).sum().clamp(-1, 1))
    scaled = (an * torch.sin((1 - t) * omega) + bn * torch.sin(t * omega)) / torch.sin(omega)
    res: torch.Tensor = scaled * torch.lerp(a.norm(), b.norm(), t)
    if res.isnan().any():
        lerped: torch.Tensor = torch.lerp(a, b, t)
        return lerped
    return res


def pair(seed: int, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)


SHAPES = [(7,), (5, 3), (4, 3, 3, 3), (320, 768)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 1.0])
def test_mergekit_variant_is_mergekit_bit_for_bit(shape: tuple[int, ...], alpha: float) -> None:
    a, b = pair(3, shape)
    assert torch.equal(slerp(a, b, alpha=alpha, variant="mergekit"), mergekit_slerp(alpha, a, b))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 1.0])
def test_sd_mecha_variant_is_sd_mecha_bit_for_bit(shape: tuple[int, ...], alpha: float) -> None:
    a, b = pair(4, shape)
    assert torch.equal(slerp(a, b, alpha=alpha, variant="sd_mecha"), sd_mecha_slerp(a, b, alpha))


def test_the_variants_differ_where_the_peers_do() -> None:
    a, b = pair(5, (64, 32))
    ours = slerp(a, b, alpha=0.3)
    mecha = slerp(a, b, alpha=0.3, variant="sd_mecha")
    # sd-mecha rescales to lerp(|A|, |B|, alpha); mergelang's result has the norm of the arc
    assert math.isclose(
        float(mecha.norm()), float(torch.lerp(a.norm(), b.norm(), torch.tensor(0.3))), rel_tol=1e-5
    )
    assert not math.isclose(float(ours.norm()), float(mecha.norm()), rel_tol=1e-4)
    # mergekit's is the same formula as mergelang's, rounded in float32 instead of double
    kit = slerp(a, b, alpha=0.3, variant="mergekit")
    assert torch.allclose(kit, ours, rtol=0, atol=1e-5)


def test_a_zero_model_is_lerp_for_mergelang_and_sd_mecha_but_not_for_mergekit() -> None:
    a = torch.zeros(6)
    b = torch.arange(1.0, 7.0)
    assert torch.equal(slerp(a, b, alpha=0.25), torch.lerp(a, b, 0.25))
    assert torch.equal(slerp(a, b, alpha=0.25, variant="sd_mecha"), torch.lerp(a, b, 0.25))
    # mergekit reads a zero norm as 1: the angle is 90 degrees, B's coefficient sin(t pi/2)
    kit = slerp(a, b, alpha=0.25, variant="mergekit")
    assert torch.allclose(kit, math.sin(0.25 * math.pi / 2) * b, rtol=1e-6, atol=0)


def test_the_default_variant_is_mergelang_and_documented() -> None:
    spec = get_method("slerp")
    assert spec is not None
    variant = spec.param("variant")
    assert variant is not None
    assert variant.default == "mergelang"
    assert variant.choices == ("mergelang", "mergekit", "sd_mecha")
    with pytest.raises(ValueError, match="variant is one of"):
        slerp(torch.ones(2), torch.ones(2), alpha=0.5, variant="comfy")
