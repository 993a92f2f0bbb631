"""Dtype codes, item sizes, save dtypes, and the torch-free import of the light modules."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mergelang.io.dtypes import (
    ITEM_SIZES,
    SAVE_DTYPES,
    code_for_torch,
    is_float_code,
    item_size,
    output_code,
    save_dtype_code,
    torch_dtype,
)


@pytest.mark.parametrize("code", sorted(ITEM_SIZES))
def test_item_sizes_and_torch_dtypes_agree(code: str) -> None:
    try:
        dtype = torch_dtype(code)
    except TypeError:
        pytest.skip(f"this torch has no dtype for {code}")
    assert torch.empty(0, dtype=dtype).element_size() == item_size(code)
    assert code_for_torch(dtype) == code
    assert is_float_code(code) == dtype.is_floating_point


def test_codes_of_the_format() -> None:
    assert set(ITEM_SIZES) >= {
        "F16",
        "BF16",
        "F32",
        "F64",
        "I64",
        "I32",
        "I16",
        "I8",
        "U8",
        "BOOL",
        "F8_E4M3",
        "F8_E5M2",
    }
    assert code_for_torch(torch.complex64) is None
    with pytest.raises(KeyError):
        torch_dtype("F12")


def test_save_dtypes() -> None:
    assert SAVE_DTYPES == {
        "fp16": "F16",
        "bf16": "BF16",
        "fp32": "F32",
        "fp8": "F8_E4M3",
        "fp8_e5m2": "F8_E5M2",
        "fp8_scaled": "F8_E4M3",
        "q8_0": "F32",
        "q5_1": "F32",
        "q5_0": "F32",
        "q4_1": "F32",
        "q4_0": "F32",
        "q6_k": "F32",
        "q5_k": "F32",
        "q4_k": "F32",
        "q2_k": "F32",
    }
    assert save_dtype_code("bf16") == "BF16"
    with pytest.raises(ValueError, match="unknown save dtype 'half'"):
        save_dtype_code("half")


@pytest.mark.parametrize(
    ("code", "save", "expected"),
    [
        ("F32", "F16", "F16"),
        ("BF16", "F32", "F32"),
        ("F64", "BF16", "BF16"),
        ("I64", "F16", "I64"),
        ("I32", "F16", "I32"),
        ("BOOL", "F16", "BOOL"),
        ("U8", "BF16", "U8"),
        ("F32", None, "F32"),
        ("I64", None, "I64"),
    ],
)
def test_output_code_casts_floats_only(code: str, save: str | None, expected: str) -> None:
    assert output_code(code, save) == expected


def test_light_modules_do_not_import_torch() -> None:
    code = (
        "import sys\n"
        "import mergelang.io\n"
        "import mergelang.io.dtypes, mergelang.io.safetensors_header, mergelang.io.locate\n"
        "import mergelang.io.hashing, mergelang.io.metadata, mergelang.io.writer\n"
        "from mergelang.io import ModelLocator, read_safetensors_header, file_hashes\n"
        "print('torch' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_package_exports_resolve() -> None:
    import mergelang.io as io

    for name in io.__all__:
        assert getattr(io, name) is not None
    with pytest.raises(AttributeError):
        io.no_such_name  # noqa: B018
