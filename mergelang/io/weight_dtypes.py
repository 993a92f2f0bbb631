"""Integer tensors where an architecture has floating-point weights.

A checkpoint whose ``model.diffusion_model...weight`` is stored as ``I32`` is broken (or
made to mislead): merged as numbers it would give an output of nonsense that still loads.
Such a file is refused, naming the key. The keys an architecture stores as integers
(``position_ids``, the EMA update counter; see :func:`mergelang.arch.layout.key_dtype`) and
keys of no component (markers, other tools' extras) are left alone.
"""

from __future__ import annotations

from collections.abc import Mapping

from mergelang.arch.architecture import Architecture
from mergelang.arch.layout import key_dtype
from mergelang.errors import CheckpointError
from mergelang.io.dtypes import is_float_code

__all__ = ["INTEGER_WEIGHT_CODE", "check_float_weights", "integer_weights"]

INTEGER_WEIGHT_CODE = "integer-weight"


def integer_weights(arch: Architecture, dtypes: Mapping[str, str]) -> list[str]:
    """The keys of ``arch``'s components that ``dtypes`` (key -> dtype code) gives a
    non-float type although the architecture stores them as floats, in key order."""
    return [
        key
        for key, code in dtypes.items()
        if not is_float_code(code)
        and is_float_code(key_dtype(key))
        and arch.component_of(key) is not None
    ]


def check_float_weights(path: str, arch: Architecture, dtypes: Mapping[str, str]) -> None:
    """Raise :class:`CheckpointError` (``integer-weight``) naming the first such key."""
    found = integer_weights(arch, dtypes)
    if not found:
        return
    more = f" (and {len(found) - 1} more keys)" if len(found) > 1 else ""
    raise CheckpointError(
        path,
        f"the {arch.name} architecture has a floating-point weight here, but the file "
        f"stores it as {dtypes[found[0]]} (integers){more}; integers are not merged as "
        "weights",
        code=INTEGER_WEIGHT_CODE,
        key=found[0],
        hint="the file is damaged or was not saved as a model; use another copy",
    )
