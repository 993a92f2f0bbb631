"""Speed of the low-precision conversions, one CPU thread, on a 3072 x 3072 float32 matrix
(a Flux attention projection):

- fp8: torch's plain cast to ``float8_e4m3fn`` against mergelang's saturating cast, and the
  cast back to float32 (what reading an fp8 input costs);
- scaled fp8: quantising with a per-tensor scale and dequantising;
- GGUF: the ``gguf`` package's reference quantisers and dequantisers (numpy), for the types
  it quantises; for the K-quants mergelang writes (``Q6_K``, ``Q5_K``, ``Q4_K``, ``Q2_K``),
  mergelang's torch quantiser and dequantiser (:mod:`mergelang.io.gguf_quants`) beside the
  package's dequantiser; the package's dequantiser of ``Q3_K``, read only.

Prints millions of values a second for each. Usage: ``python bench/lowprec_codecs.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

import torch

from mergelang.io.fp8 import saturating_cast
from mergelang.io.scaled_fp8 import dequantise, quantise

SIDE = 3072


def rate(run: Callable[[], object], repeats: int = 3, warm: bool = True) -> float:
    """Millions of values a second of ``run`` over the SIDE x SIDE matrix (after one
    untimed call when ``warm``)."""
    if warm:
        run()
    start = time.perf_counter()
    for _ in range(repeats):
        run()
    return SIDE * SIDE * repeats / (time.perf_counter() - start) / 1e6


def main() -> None:
    torch.set_num_threads(1)
    values = torch.randn(SIDE, SIDE, generator=torch.Generator().manual_seed(0)) * 0.02
    out = torch.empty_like(values, dtype=torch.float8_e4m3fn)
    narrow = values.to(torch.float8_e4m3fn)
    print(f"fp8 plain cast         {rate(lambda: out.copy_(values)):8.0f} Mval/s")
    print(f"fp8 saturating cast    {rate(lambda: saturating_cast(values, 'F8_E4M3', out)):8.0f}")
    print(f"fp8 -> float32         {rate(lambda: narrow.to(torch.float32)):8.0f}")
    scaled = quantise(values)
    print(f"scaled fp8 quantise    {rate(lambda: quantise(values)):8.0f}")
    print(f"scaled fp8 dequantise  {rate(lambda: dequantise(*scaled)):8.0f}")
    try:
        import numpy as np
        from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
        from gguf.quants import dequantize, quantize
    except ImportError:
        print("gguf: not installed (pip install 'mergelang[gguf]')")
        return
    array = values.numpy()
    for name in ("Q8_0", "Q5_1", "Q5_0", "Q4_1", "Q4_0"):
        kind = GGMLQuantizationType[name]
        packed = quantize(array, kind)
        print(
            f"gguf {name:5} quantise {rate(lambda k=kind: quantize(array, k), 1):8.0f}"
            f"   dequantise {rate(lambda p=packed, k=kind: dequantize(p, k), 1):8.0f}"
        )
    from mergelang.io.gguf_quants import dequantise_k, quantise_k

    for name in ("Q6_K", "Q5_K", "Q4_K", "Q2_K"):
        kind = GGMLQuantizationType[name]
        packed_k = quantise_k(values, name)
        raw_k = packed_k.numpy()
        quantising = rate(partial(quantise_k, values, name), 1, warm=False)
        mine = rate(partial(dequantise_k, packed_k, name), 1)
        theirs = rate(partial(dequantize, raw_k, kind), 1)
        print(
            f"mergelang {name} quantise {quantising:8.1f}   dequantise {mine:8.0f}"
            f"   (gguf dequantise {theirs:6.0f})"
        )
    rng = np.random.default_rng(0)
    for name in ("Q3_K",):
        kind = GGMLQuantizationType[name]
        block, size = GGML_QUANT_SIZES[kind]
        raw = rng.integers(0, 256, (SIDE, SIDE // block * size), dtype=np.uint8)
        with np.errstate(all="ignore"):
            speed = rate(lambda r=raw, k=kind: dequantize(r, k), 1)
            print(f"gguf {name:5} dequantise {speed:8.0f}")


if __name__ == "__main__":
    main()
