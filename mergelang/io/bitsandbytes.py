"""bitsandbytes 4-bit checkpoints (NF4, FP4), recognised and refused with a clear error.

A bitsandbytes 4-bit file stores each quantised weight as packed ``U8`` bytes beside its
quantisation state: ``X.weight.absmax``, ``X.weight.quant_map`` and a
``X.weight.quant_state.bitsandbytes__nf4`` (or ``__fp4``) tensor holding the state as JSON.
mergelang does not dequantise these yet; merging the packed bytes as if they were weights
would be silently wrong, so such a file is an error (``unsupported-quantisation``) naming the
format when the input is resolved.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from mergelang.errors import CheckpointError

__all__ = ["refuse_bitsandbytes"]

_STATE_MARKERS = {
    ".quant_state.bitsandbytes__nf4": "NF4",
    ".quant_state.bitsandbytes__fp4": "FP4",
}


def refuse_bitsandbytes(keys: Iterable[str], path: Path) -> None:
    """Raise :class:`CheckpointError` if ``keys`` are those of a bitsandbytes 4-bit file."""
    for key in keys:
        for marker, kind in _STATE_MARKERS.items():
            if key.endswith(marker):
                raise CheckpointError(
                    str(path),
                    f"a bitsandbytes {kind} (4-bit) checkpoint: mergelang cannot dequantise "
                    "its weights",
                    code="unsupported-quantisation",
                    key=key[: -len(marker)],
                    hint="merge the full-precision or fp8 release of the model instead",
                )
