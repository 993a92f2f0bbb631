"""Speed of the low-precision conversions, one CPU thread, on a 3072 x 3072 float32 matrix
(a Flux attention projection):

- fp8: torch's plain cast to ``float8_e4m3fn`` against mergelang's saturating cast, and the
  cast back to float32 (what reading an fp8 input costs);
- scaled fp8: quantising with a per-tensor scale and dequantising;
- GGUF: the ``gguf`` package's reference quantisers and dequantisers (numpy), for the types
  it quantises; for the K-quants mergelang writes (``Q6_K``, ``Q5_K``, ``Q4_K``, ``Q2_K``),
  mergelang's torch quantiser and dequantiser (:mod:`mergelang.io.gguf_quants`) beside the
  package's dequantiser; the package's dequantiser of ``Q3_K``, read only.

The K-quant quantisers are timed on a 4096 x 3072 matrix (a Flux MLP projection). With
``--before FILE`` (an earlier :mod:`mergelang.io.gguf_quants`, e.g. from
``git show REV:mergelang/io/gguf_quants.py > before.py``) it is timed in the same run, and
both are compared: whether their bytes are the same, and the RMS error of each on Gaussian
values and on "real-like" ones (heavy-tailed, rows of different scales, a few outliers).
``--only kquant`` skips the other conversions.

Prints millions of values a second for each. Usage: ``python bench/lowprec_codecs.py``.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import ModuleType

import torch

from mergelang.io.fp8 import saturating_cast
from mergelang.io.scaled_fp8 import dequantise, quantise

SIDE = 3072
K_ROWS = 4096
"""Rows of the matrix the K-quant quantisers are timed on (``K_ROWS`` x ``SIDE``)."""


def rate(
    run: Callable[[], object], repeats: int = 3, warm: bool = True, values: int = SIDE * SIDE
) -> float:
    """Millions of values a second of ``run`` over ``values`` values (the SIDE x SIDE matrix
    unless told; after one untimed call when ``warm``)."""
    if warm:
        run()
    start = time.perf_counter()
    for _ in range(repeats):
        run()
    return values * repeats / (time.perf_counter() - start) / 1e6


def load_module(path: Path) -> ModuleType:
    """The Python module in the file ``path`` (an earlier quantiser to compare with)."""
    spec = importlib.util.spec_from_file_location("gguf_quants_before", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"{path}: not a Python module")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def real_like(rows: int, generator: torch.Generator) -> torch.Tensor:
    """Values shaped like a trained weight: Student-t (3 degrees of freedom) tails, a scale
    per row over two decades, and one value in ten thousand twenty times larger."""
    t = torch.distributions.StudentT(3.0).sample((rows, SIDE))
    row_scale = 10 ** (torch.rand(rows, 1, generator=generator) * 2 - 3)
    outliers = torch.rand(rows, SIDE, generator=generator) < 1e-4
    return (t * row_scale * torch.where(outliers, 20.0, 1.0)).to(torch.float32)


def rms_error(module: ModuleType, values: torch.Tensor, name: str) -> float:
    """The RMS error of ``values`` quantised to ``name`` by ``module`` and read back."""
    packed = module.quantise_k(values, name)
    back = module.dequantise_k(packed, name)
    return float((back - values.reshape(-1)).pow(2).mean().sqrt())


def kquants(before: ModuleType | None) -> None:
    """The K-quant lines: speed of mergelang's quantiser (and ``before``'s), dequantisers,
    and with ``before`` whether the bytes agree and each one's RMS error."""
    import numpy as np
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    from mergelang.io import gguf_quants

    generator = torch.Generator().manual_seed(1)
    values = torch.randn(K_ROWS, SIDE, generator=generator) * 0.02
    torch.manual_seed(2)
    realistic = real_like(1024, generator)
    count = K_ROWS * SIDE
    for name in ("Q6_K", "Q5_K", "Q4_K", "Q2_K"):
        kind = GGMLQuantizationType[name]
        packed_k = gguf_quants.quantise_k(values, name)
        raw_k: np.ndarray = packed_k.numpy()
        quantising = rate(partial(gguf_quants.quantise_k, values, name), 1, False, count)
        mine = rate(partial(gguf_quants.dequantise_k, packed_k, name), 1, values=count)
        theirs = rate(partial(dequantize, raw_k, kind), 1, values=count)
        print(
            f"mergelang {name} quantise {quantising:8.1f}   dequantise {mine:8.0f}"
            f"   (gguf dequantise {theirs:6.0f})",
            flush=True,
        )
        if before is None:
            continue
        old = rate(partial(before.quantise_k, values, name), 1, False, count)
        same = bool(torch.equal(before.quantise_k(values, name), packed_k))
        blocks_differ = int(
            (before.quantise_k(realistic, name) != gguf_quants.quantise_k(realistic, name))
            .any(-1)
            .sum()
        )
        print(
            f"  before {name} quantise {old:8.2f}   speed-up {quantising / old:5.1f}x"
            f"   same bytes (Gaussian) {same}"
            f"   blocks differing (real-like) {blocks_differ}",
            flush=True,
        )
        for label, data in (("Gaussian", values), ("real-like", realistic)):
            now, then = rms_error(gguf_quants, data, name), rms_error(before, data, name)
            print(
                f"  {name} RMS error {label:9}: before {then:.6e}  after {now:.6e}"
                f"  (after / before {now / then:.6f})",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, help="an earlier gguf_quants.py to compare")
    parser.add_argument("--only", choices=("all", "kquant"), default="all")
    args = parser.parse_args()
    torch.set_num_threads(1)
    before = None if args.before is None else load_module(args.before)
    if args.only == "kquant":
        kquants(before)
        return
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
            f"gguf {name:5} quantise {rate(partial(quantize, array, kind), 1):8.0f}"
            f"   dequantise {rate(partial(dequantize, packed, kind), 1):8.0f}"
        )
    kquants(before)
    rng = np.random.default_rng(0)
    for name in ("Q3_K",):
        kind = GGMLQuantizationType[name]
        block, size = GGML_QUANT_SIZES[kind]
        raw = rng.integers(0, 256, (SIDE, SIDE // block * size), dtype=np.uint8)
        with np.errstate(all="ignore"):
            speed = rate(partial(dequantize, raw, kind), 1)
            print(f"gguf {name:5} dequantise {speed:8.0f}")


if __name__ == "__main__":
    main()
