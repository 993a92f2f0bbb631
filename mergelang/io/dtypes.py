"""Tensor element types: safetensors codes, their sizes, torch dtypes and save dtypes.

Everything mergelang stores about a tensor's element type is a safetensors code (``"F16"``,
``"BF16"``, ``"I64"``...). The table of codes and item sizes is pure Python, so header
inspection and the language checker never import torch; :func:`torch_dtype` and
:func:`code_for_torch` import torch only when called.

Output conversion rule (:func:`output_code`): when a save dtype is chosen, floating-point keys
are cast to it; integer and boolean keys (``position_ids``, step counters) keep their type. An
fp8 save keeps tensors of fewer than two dimensions (biases, norms) in their own type
(:mod:`mergelang.io.fp8`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from mergelang.io.fp8 import is_fp8_code, keeps_precision
from mergelang.io.save_choices import SAVE_DTYPES

__all__ = [
    "FLOAT_CODES",
    "ITEM_SIZES",
    "SAVE_DTYPES",
    "code_for_torch",
    "is_float_code",
    "is_known_code",
    "item_size",
    "output_code",
    "save_dtype_code",
    "torch_dtype",
]

if TYPE_CHECKING:
    import torch

ITEM_SIZES: dict[str, int] = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U64": 8,
    "U32": 4,
    "U16": 2,
    "U8": 1,
    "BOOL": 1,
}
"""Bytes per element of every safetensors code mergelang reads and writes."""

FLOAT_CODES: frozenset[str] = frozenset({"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"})


_TORCH_NAMES: dict[str, str] = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U64": "uint64",
    "U32": "uint32",
    "U16": "uint16",
    "U8": "uint8",
    "BOOL": "bool",
}


def is_known_code(code: str) -> bool:
    return code in ITEM_SIZES


def item_size(code: str) -> int:
    """Bytes per element of ``code``; ``KeyError`` for an unknown code."""
    return ITEM_SIZES[code]


def is_float_code(code: str) -> bool:
    return code in FLOAT_CODES


def save_dtype_code(name: str) -> str:
    """``"fp16"`` -> ``"F16"`` and so on; ``ValueError`` naming the choices otherwise."""
    try:
        return SAVE_DTYPES[name]
    except KeyError:
        choices = ", ".join(SAVE_DTYPES)
        raise ValueError(f"unknown save dtype {name!r} (choose one of {choices})") from None


def output_code(code: str, save_code: str | None, shape: Sequence[int] | None = None) -> str:
    """The code a key of type ``code`` (and ``shape``) is written as when saving with
    ``save_code``.

    Floating-point keys take the save dtype; integer and boolean keys keep their own, as does
    every key when no save dtype is chosen. Under an fp8 save dtype, a key whose ``shape`` has
    fewer than two dimensions keeps its own type too.
    """
    if save_code is None or not is_float_code(code):
        return code
    if is_fp8_code(save_code) and shape is not None and keeps_precision(shape):
        return code
    return save_code


def torch_dtype(code: str) -> torch.dtype:
    """The torch dtype for a safetensors code.

    ``KeyError`` for an unknown code, ``TypeError`` when this torch build lacks the type.
    """
    import torch

    name = _TORCH_NAMES[code]
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"this torch build has no {name} (safetensors {code})")
    return dtype


def code_for_torch(dtype: torch.dtype) -> str | None:
    """The safetensors code of a torch dtype, or ``None`` if safetensors has none for it."""
    import torch

    for code, name in _TORCH_NAMES.items():
        if getattr(torch, name, None) == dtype:
            return code
    return None
