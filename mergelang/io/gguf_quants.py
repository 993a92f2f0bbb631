"""The GGML K-quantisations mergelang writes (``Q6_K``, ``Q5_K``, ``Q4_K``, ``Q2_K``), in torch.

The ``gguf`` package dequantises the K-quants but has no quantiser for them, so they are
written here, following ggml's reference quantisers (``quantize_row_q6_K_ref``,
``quantize_row_q5_K_ref``, ``quantize_row_q4_K_ref`` and ``quantize_row_q2_K_ref`` in
``ggml-quants.c``), vectorised over blocks: every block of 256 values is quantised at once,
and the searches for the best scale (``make_qx_quants`` for ``Q6_K``, ``make_qkx2_quants``
for the others) loop over their candidate scales, not over blocks. On the CPU the blocks go
through in chunks of :data:`_CHUNK_BLOCKS`, so that the few working tensors of a chunk, made
once and overwritten in place by each candidate, stay in the processor's cache through the
candidates' passes (and memory stays bounded whatever the tensor's size); the bytes are the
same as quantising the whole tensor at once. The choices are ggml's (the
candidate scales, the weights of the error, rounding half to even, saturation, float16
super-scales). Two things differ in the last bits: float32 sums are added in torch's order,
not ggml's sequential one, and the squared error of each candidate of ``make_qkx2_quants``
is computed from the sums it already made (in float64) rather than value by value; so where
two candidates are within rounding of each other the other one may be chosen, and a value on
a rounding boundary may come out one level apart from ggml's own bytes.

Block layouts (little-endian, ``QK_K`` = 256 values a block):

- ``Q6_K`` (210 bytes): 128 bytes of low 4 bits, 64 bytes of high 2 bits, 16 signed 8-bit
  scales (one per 16 values), the float16 super-scale ``d``. Value = ``d * scale * (q - 32)``.
- ``Q5_K`` (176 bytes): float16 ``d`` and ``dmin``, 12 bytes of 6-bit scales and mins (one
  pair per 32 values), 32 bytes of fifth bits, 128 bytes of low 4 bits.
  Value = ``d * scale * q - dmin * min``.
- ``Q4_K`` (144 bytes): float16 ``d`` and ``dmin``, the same 12 bytes of scales and mins,
  128 bytes of 4-bit values.
- ``Q2_K`` (84 bytes): 16 bytes of a 4-bit scale and a 4-bit min per 16 values, 64 bytes of
  2-bit values, float16 ``d`` and ``dmin``.

:func:`quantise_k` quantises; :func:`dequantise_k` is the inverse, agreeing bit for bit with
``gguf.quants.dequantize``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["BLOCK_BYTES", "K_TYPES", "QK_K", "dequantise_k", "quantise_k"]

QK_K = 256
"""Values in one K-quant block."""

BLOCK_BYTES: dict[str, int] = {"Q6_K": 210, "Q5_K": 176, "Q4_K": 144, "Q2_K": 84}
"""Bytes of one block of each K-quant type mergelang writes."""

K_TYPES = frozenset(BLOCK_BYTES)

_GROUP_MAX_EPS = 1e-15

_CHUNK_BLOCKS = 1024
"""Blocks quantised at once on the CPU (256 Ki values, 1 MiB of float32 per working tensor)."""


def _nearest(value: torch.Tensor) -> torch.Tensor:
    """ggml's ``nearest_int``: round half to even (kept in float32: integer tensors are many
    times slower to make, and every level is exact in float32)."""
    import torch

    return torch.round(value)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The dot product of each row of ``a`` with the same row of ``b``."""
    import torch

    return torch.einsum("ij,ij->i", a, b)


def _bytes(levels: torch.Tensor) -> torch.Tensor:
    import torch

    return levels.to(torch.int64)


def _f16_bytes(value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``value`` (one per block) as float16: its two bytes a block, and it back in float32."""
    import torch

    half = value.to(torch.float16).contiguous()
    return half.view(torch.uint8).reshape(-1, 2), half.to(torch.float32)


def _make_qx_quants(x: torch.Tensor, nmax: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ggml's ``make_qx_quants`` with ``rmse_type`` 1 (weights ``x * x``), over rows of ``x``:
    each row's scale and its levels ``0 .. 2 * nmax - 1``."""
    import torch

    index = x.abs().argmax(dim=-1, keepdim=True)
    peak = x.gather(-1, index).squeeze(-1)
    zero = peak.abs() < _GROUP_MAX_EPS
    safe = torch.where(zero, torch.ones_like(peak), peak)
    weight = x * x
    cube = weight * x
    level = torch.empty_like(x)
    products = torch.empty_like(x)

    def levels(top: float) -> tuple[torch.Tensor, torch.Tensor]:
        iscale = torch.tensor(-top, dtype=torch.float32) / safe
        torch.mul(x, iscale.unsqueeze(-1), out=level)
        level.round_().clamp_(-nmax, nmax - 1)
        sumlx = _dot(cube, level)
        suml2 = _dot(torch.mul(weight, level, out=products), level)
        return sumlx, suml2

    sumlx, suml2 = levels(float(nmax))
    scale = torch.where(suml2 != 0, sumlx / torch.where(suml2 != 0, suml2, 1.0), 0.0)
    best = scale * sumlx
    chosen = level.clone()
    for step in range(-9, 10):
        if step == 0:
            continue
        top = float(torch.tensor(nmax, dtype=torch.float32) + torch.tensor(0.1) * step)
        sumlx, suml2 = levels(top)
        better = (suml2 > 0) & (sumlx * sumlx > best * suml2)
        torch.where(better.unsqueeze(-1), level, chosen, out=chosen)
        scale = torch.where(better, sumlx / torch.where(suml2 > 0, suml2, 1.0), scale)
        best = torch.where(better, scale * sumlx, best)
    chosen.add_(nmax)
    chosen.masked_fill_(zero.unsqueeze(-1), 0.0)
    return torch.where(zero, 0.0, scale), chosen


def _make_qkx2_quants(
    x: torch.Tensor,
    weight: torch.Tensor,
    nmax: int,
    rmin: float,
    rdelta: float,
    nstep: int,
    mad: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ggml's ``make_qkx2_quants`` over rows of ``x``: each row's scale, its minimum as a
    positive offset (value = ``scale * level - min``) and its levels ``0 .. nmax``. The error
    is squared, or absolute with ``mad`` (``Q2_K``)."""
    import torch

    low = x.min(dim=-1).values.clamp(max=0.0)
    high = x.max(dim=-1).values
    flat = high == low
    sum_w = weight.sum(-1)
    weighted = weight * x
    sum_x = weighted.sum(-1)
    level = torch.empty_like(x)
    products = torch.empty_like(x)

    def span() -> torch.Tensor:
        width = high - low
        return torch.where(width > 0, width, torch.ones_like(width))

    def make_levels(iscale: torch.Tensor) -> None:
        """``level`` = the nearest levels of ``iscale * (x - low)``, in place."""
        torch.sub(x, low.unsqueeze(-1), out=level)
        level.mul_(iscale.unsqueeze(-1)).round_().clamp_(0, nmax)

    def absolute_error(scale: torch.Tensor, minimum: torch.Tensor) -> torch.Tensor:
        """The weighted absolute error of ``level`` with ``scale`` and ``minimum``."""
        torch.mul(level, scale.unsqueeze(-1), out=products)
        products.add_(minimum.unsqueeze(-1)).sub_(x).abs_()
        return _dot(weight, products).double()

    iscale = nmax / span()
    scale = 1.0 / iscale
    make_levels(iscale)
    if mad:
        best = absolute_error(scale, low)
    else:
        torch.mul(level, scale.unsqueeze(-1), out=products)
        products.add_(low.unsqueeze(-1)).sub_(x)
        best = _dot(weight * products, products).double()
    chosen = level.clone()
    sum_w64, sum_x64, sum_wx2 = sum_w.double(), sum_x.double(), _dot(weighted, x).double()
    for step in range(nstep + 1):
        top = float(torch.tensor(rmin) + torch.tensor(rdelta) * step + nmax)
        make_levels(top / span())
        sum_xl = _dot(weighted, level)
        torch.mul(weight, level, out=products)
        sum_l = products.sum(-1)
        sum_l2 = _dot(products, level)
        det = sum_w * sum_l2 - sum_l * sum_l
        safe_det = torch.where(det > 0, det, torch.ones_like(det))
        this_scale = (sum_w * sum_xl - sum_x * sum_l) / safe_det
        this_min = (sum_l2 * sum_x - sum_l * sum_xl) / safe_det
        positive = this_min > 0
        this_scale = torch.where(
            positive, sum_xl / torch.where(sum_l2 != 0, sum_l2, 1.0), this_scale
        )
        this_min = torch.where(positive, 0.0, this_min)
        # The weighted squared error from the sums already made (float64 over rows): the
        # same as summing it value by value, without three more passes over the block.
        s, m = this_scale.double(), this_min.double()
        if mad:
            error = absolute_error(this_scale, this_min)
        else:
            error = (
                s * s * sum_l2.double()
                + 2 * s * m * sum_l.double()
                - 2 * s * sum_xl.double()
                + m * m * sum_w64
                - 2 * m * sum_x64
                + sum_wx2
            )
        better = (det > 0) & (error < best) & ~flat
        torch.where(better.unsqueeze(-1), level, chosen, out=chosen)
        best = torch.where(better, error, best)
        scale = torch.where(better, this_scale, scale)
        low = torch.where(better, this_min, low)
    chosen.masked_fill_(flat.unsqueeze(-1), 0.0)
    return torch.where(flat, 0.0, scale), -low, chosen


def _pack_scales(ls: torch.Tensor, lm: torch.Tensor) -> torch.Tensor:
    """The 12 bytes of eight 6-bit scales and eight 6-bit mins of a ``Q4_K``/``Q5_K`` block
    (ggml's layout: see ``get_scale_min_k4``)."""
    import torch

    first = ls[:, :4] | ((ls[:, 4:] >> 4) << 6)
    second = lm[:, :4] | ((lm[:, 4:] >> 4) << 6)
    third = (ls[:, 4:] & 0xF) | ((lm[:, 4:] & 0xF) << 4)
    return torch.cat([first, second, third], dim=-1)


def _quantise_k_min(
    x: torch.Tensor, nmax: int, rmin: float, nstep: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The shared part of ``Q4_K`` and ``Q5_K``: per block the header bytes (``d``, ``dmin``
    and the 12 bytes of scales) and the levels ``0 .. nmax`` of its 256 values."""
    import torch

    blocks = x.shape[0]
    groups = x.reshape(blocks, 8, 32)
    average = torch.sqrt((groups * groups).sum(-1) / 32)
    weight = average.unsqueeze(-1) + groups.abs()
    scales, mins, levels = _make_qkx2_quants(
        groups.reshape(-1, 32), weight.reshape(-1, 32), nmax, rmin, 0.1, nstep
    )
    scales = scales.reshape(blocks, 8)
    mins = mins.reshape(blocks, 8)
    levels = levels.reshape(blocks, 8, 32)
    max_scale = scales.max(dim=-1).values.clamp(min=0.0)
    max_min = mins.max(dim=-1).values.clamp(min=0.0)
    inv_scale = torch.where(max_scale > 0, 63.0 / max_scale, 0.0)
    inv_min = torch.where(max_min > 0, 63.0 / max_min, 0.0)
    ls = (_bytes(_nearest(inv_scale.unsqueeze(-1) * scales)) & 0xFF).clamp(max=63)
    lm = (_bytes(_nearest(inv_min.unsqueeze(-1) * mins)) & 0xFF).clamp(max=63)
    d_bytes, d = _f16_bytes(max_scale / 63.0)
    m_bytes, dmin = _f16_bytes(max_min / 63.0)
    step = d.unsqueeze(-1) * ls.to(torch.float32)
    offset = dmin.unsqueeze(-1) * lm.to(torch.float32)
    nonzero = step != 0
    safe = torch.where(nonzero, step, torch.ones_like(step))
    again = _nearest((groups + offset.unsqueeze(-1)) / safe.unsqueeze(-1)).clamp(0, nmax)
    levels = torch.where(nonzero.unsqueeze(-1), again, levels)
    header = torch.cat([d_bytes, m_bytes, _pack_scales(ls, lm).to(torch.uint8)], dim=-1)
    return header, _bytes(levels.reshape(blocks, QK_K))


def _quantise_q4_k(x: torch.Tensor) -> torch.Tensor:
    import torch

    header, levels = _quantise_k_min(x, 15, -1.0, 20)
    pairs = levels.reshape(-1, 4, 2, 32)
    qs = (pairs[:, :, 0] | (pairs[:, :, 1] << 4)).reshape(-1, 128)
    return torch.cat([header, qs.to(torch.uint8)], dim=-1)


def _quantise_q5_k(x: torch.Tensor) -> torch.Tensor:
    import torch

    header, levels = _quantise_k_min(x, 31, -0.5, 15)
    groups = levels.reshape(-1, 8, 32)
    high = groups >> 4
    shifts = torch.arange(8, dtype=torch.int64).reshape(1, 8, 1)
    qh = (high << shifts).sum(dim=1)
    low = (groups & 0xF).reshape(-1, 4, 2, 32)
    qs = (low[:, :, 0] | (low[:, :, 1] << 4)).reshape(-1, 128)
    return torch.cat([header, qh.to(torch.uint8), qs.to(torch.uint8)], dim=-1)


def _quantise_q6_k(x: torch.Tensor) -> torch.Tensor:
    import torch

    blocks = x.shape[0]
    groups = x.reshape(blocks, 16, 16)
    scales, levels = _make_qx_quants(groups.reshape(-1, 16), 32)
    scales = scales.reshape(blocks, 16)
    levels = levels.reshape(blocks, 16, 16)
    index = scales.abs().argmax(dim=-1, keepdim=True)
    max_scale = scales.gather(-1, index).squeeze(-1)
    empty = max_scale.abs() < _GROUP_MAX_EPS
    safe_max = torch.where(empty, torch.ones_like(max_scale), max_scale)
    iscale = -128.0 / safe_max
    d_bytes, d = _f16_bytes(torch.where(empty, 0.0, 1.0 / iscale))
    small = _bytes(_nearest(iscale.unsqueeze(-1) * scales)).clamp(max=127)
    small = torch.where(empty.unsqueeze(-1), torch.zeros_like(small), small)
    step = d.unsqueeze(-1) * small.to(torch.float32)
    nonzero = step != 0
    safe = torch.where(nonzero, step, torch.ones_like(step))
    again = _nearest(groups / safe.unsqueeze(-1)).clamp(-32, 31) + 32
    levels = torch.where(nonzero.unsqueeze(-1), again, levels)
    levels = torch.where(empty.reshape(-1, 1, 1), torch.zeros_like(levels), levels)
    quarters = _bytes(levels).reshape(blocks, 2, 4, 32)
    ql = torch.stack(
        [
            (quarters[:, :, 0] & 0xF) | ((quarters[:, :, 2] & 0xF) << 4),
            (quarters[:, :, 1] & 0xF) | ((quarters[:, :, 3] & 0xF) << 4),
        ],
        dim=2,
    ).reshape(blocks, 128)
    shifts = torch.tensor([0, 2, 4, 6], dtype=torch.int64).reshape(1, 1, 4, 1)
    qh = ((quarters >> 4) << shifts).sum(dim=2).reshape(blocks, 64)
    signed = (small & 0xFF).to(torch.uint8)
    d_bytes = torch.where(empty.unsqueeze(-1), torch.zeros_like(d_bytes), d_bytes)
    return torch.cat([ql.to(torch.uint8), qh.to(torch.uint8), signed, d_bytes], dim=-1)


def _quantise_q2_k(x: torch.Tensor) -> torch.Tensor:
    """``quantize_row_q2_K_ref``: 2-bit levels, a 4-bit scale and a 4-bit min per 16 values
    (absolute error, weights ``|x|``), float16 ``d`` and ``dmin``."""
    import torch

    blocks = x.shape[0]
    groups = x.reshape(blocks, 16, 16)
    scales, mins, levels = _make_qkx2_quants(
        groups.reshape(-1, 16), groups.abs().reshape(-1, 16), 3, -0.5, 0.1, 15, mad=True
    )
    scales = scales.reshape(blocks, 16)
    mins = mins.reshape(blocks, 16)
    levels = levels.reshape(blocks, 16, 16)
    max_scale = scales.max(dim=-1).values.clamp(min=0.0)
    max_min = mins.max(dim=-1).values.clamp(min=0.0)
    has_scale = (max_scale > 0).unsqueeze(-1)
    has_min = (max_min > 0).unsqueeze(-1)
    safe_scale = torch.where(max_scale > 0, max_scale, 1.0).unsqueeze(-1)
    safe_min = torch.where(max_min > 0, max_min, 1.0).unsqueeze(-1)
    ls = torch.where(has_scale, _bytes(_nearest(15.0 / safe_scale * scales)), 0)
    lm = torch.where(has_min, _bytes(_nearest(15.0 / safe_min * mins)), 0)
    packed = (ls | (lm << 4)) & 0xFF
    d_bytes, d = _f16_bytes(torch.where(max_scale > 0, max_scale / 15.0, 0.0))
    m_bytes, dmin = _f16_bytes(torch.where(max_min > 0, max_min / 15.0, 0.0))
    step = d.unsqueeze(-1) * (packed & 0xF).to(torch.float32)
    offset = dmin.unsqueeze(-1) * (packed >> 4).to(torch.float32)
    nonzero = step != 0
    safe = torch.where(nonzero, step, torch.ones_like(step))
    again = _nearest((groups + offset.unsqueeze(-1)) / safe.unsqueeze(-1)).clamp(0, 3)
    levels = _bytes(torch.where(nonzero.unsqueeze(-1), again, levels))
    quarters = levels.reshape(blocks, 2, 4, 32)
    shifts = torch.tensor([0, 2, 4, 6], dtype=torch.int64).reshape(1, 1, 4, 1)
    qs = (quarters << shifts).sum(dim=2).reshape(blocks, 64)
    return torch.cat([packed.to(torch.uint8), qs.to(torch.uint8), d_bytes, m_bytes], dim=-1)


_QUANTISERS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "Q6_K": _quantise_q6_k,
    "Q5_K": _quantise_q5_k,
    "Q4_K": _quantise_q4_k,
    "Q2_K": _quantise_q2_k,
}


def quantise_k(values: torch.Tensor, kind: str) -> torch.Tensor:
    """``values`` (a whole number of 256-value blocks, any shape) quantised to the K-quant
    ``kind``: a ``uint8`` tensor of one row of :data:`BLOCK_BYTES` per block."""
    import torch

    flat = values.detach().reshape(-1)
    if flat.numel() % QK_K:
        raise ValueError(f"{kind} quantises blocks of {QK_K} values, not {flat.numel()}")
    blocks = flat.reshape(-1, QK_K)
    quantiser = _QUANTISERS[kind]
    out = torch.empty(blocks.shape[0], BLOCK_BYTES[kind], dtype=torch.uint8, device=flat.device)
    # A chunk of rows at a time: each candidate scale is several passes over the values, and
    # a chunk's working set (a few tensors of its size) stays in the processor's cache
    # rather than streaming through memory at every pass; peak memory stays bounded too.
    rows = _CHUNK_BLOCKS if flat.device.type == "cpu" else blocks.shape[0]
    for first in range(0, blocks.shape[0], rows):
        chunk = blocks[first : first + rows].to(torch.float32)
        out[first : first + rows] = quantiser(chunk)
    return out


def _scales_mins(packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The eight 6-bit scales and mins of the 12 bytes of ``Q4_K``/``Q5_K`` blocks."""
    import torch

    raw = packed.to(torch.int32)
    first, second, third = raw[:, :4], raw[:, 4:8], raw[:, 8:]
    scales = torch.cat([first & 0x3F, (third & 0xF) | ((first >> 2) & 0x30)], dim=-1)
    mins = torch.cat([second & 0x3F, (third >> 4) | ((second >> 2) & 0x30)], dim=-1)
    return scales.to(torch.float32), mins.to(torch.float32)


def _half(raw: torch.Tensor) -> torch.Tensor:
    import torch

    return raw.contiguous().view(torch.float16).to(torch.float32)


def dequantise_k(packed: torch.Tensor, kind: str) -> torch.Tensor:
    """The float32 values (flat) of ``packed``, the ``uint8`` bytes of whole ``kind`` blocks;
    the same values, bit for bit, as ``gguf.quants.dequantize``."""
    import torch

    size = BLOCK_BYTES[kind]
    blocks = packed.reshape(-1, size)
    count = blocks.shape[0]
    if kind == "Q2_K":
        packed_scales = blocks[:, :16].to(torch.int32)
        d = _half(blocks[:, 80:82]).reshape(count, 1)
        dmin = _half(blocks[:, 82:84]).reshape(count, 1)
        step = (d * (packed_scales & 0xF).to(torch.float32)).reshape(count, 16, 1)
        offset = (dmin * (packed_scales >> 4).to(torch.float32)).reshape(count, 16, 1)
        shifts = torch.tensor([0, 2, 4, 6], dtype=torch.int32).reshape(1, 1, 4, 1)
        qs = (blocks[:, 16:80].to(torch.int32).reshape(count, 2, 1, 32) >> shifts) & 0x3
        q = qs.reshape(count, 16, 16).to(torch.float32)
        return (step * q - offset).reshape(-1)
    if kind == "Q6_K":
        ql, qh = blocks[:, :128].to(torch.int32), blocks[:, 128:192].to(torch.int32)
        scales = blocks[:, 192:208].contiguous().view(torch.int8).to(torch.float32)
        d = _half(blocks[:, 208:210]).reshape(count, 1)
        nibbles = torch.tensor([0, 4], dtype=torch.int32).reshape(1, 1, 2, 1)
        low = ((ql.reshape(count, 2, 1, 64) >> nibbles) & 0xF).reshape(count, 2, 4, 32)
        shifts = torch.tensor([0, 2, 4, 6], dtype=torch.int32).reshape(1, 1, 4, 1)
        high = (qh.reshape(count, 2, 1, 32) >> shifts) & 0x3
        q = ((low | (high << 4)) - 32).reshape(count, 16, 16).to(torch.float32)
        return ((d * scales).reshape(count, 16, 1) * q).reshape(-1)
    d = _half(blocks[:, 0:2]).reshape(count, 1)
    dmin = _half(blocks[:, 2:4]).reshape(count, 1)
    scales, mins = _scales_mins(blocks[:, 4:16])
    step = (d * scales).reshape(count, 8, 1)
    offset = (dmin * mins).reshape(count, 8, 1)
    qs = blocks[:, -128:].to(torch.int32).reshape(count, 4, 1, 32)
    q = ((qs >> torch.tensor([0, 4], dtype=torch.int32).reshape(1, 1, 2, 1)) & 0xF).reshape(
        count, 8, 32
    )
    if kind == "Q5_K":
        qh = blocks[:, 16:48].to(torch.int32).reshape(count, 1, 32)
        bits = (qh >> torch.arange(8, dtype=torch.int32).reshape(1, 8, 1)) & 1
        q = q | (bits << 4)
    return (step * q.to(torch.float32) - offset).reshape(-1)
