"""Checkpoint input and output.

- :mod:`~mergelang.io.safetensors_header`: header parsing and validation (pure Python).
- :mod:`~mergelang.io.readers`: lazy, memory-mapped reading; :func:`open_checkpoint`.
- :mod:`~mergelang.io.ckpt`: weights-only pickle loading and the legacy ``.ckpt`` writer.
- :mod:`~mergelang.io.writer`: atomic output files and the header-first streaming writer.
- :mod:`~mergelang.io.file_formats`: the table of file formats (names, suffixes, sinks);
  :mod:`~mergelang.io.formats`: telling a file's format from its first bytes.
- :mod:`~mergelang.io.sinks`: the sink protocol outputs are written through, and the
  in-memory sink; :mod:`~mergelang.io.memory_reader`: tensors in memory read like a file.
- :mod:`~mergelang.io.save_choices`: the table of save choices and :class:`SaveOptions`;
  :mod:`~mergelang.io.save_options`: output layouts.
- :mod:`~mergelang.io.hashing`, :mod:`~mergelang.io.locate`, :mod:`~mergelang.io.metadata`:
  hashes, finding models, provenance.

The names below are imported on first use, so ``import mergelang.io`` (or a torch-free
submodule such as the header parser, the locator or the hashes) does not import torch.
See ``docs/io.md``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mergelang.io.ckpt import CkptReader, load_state_dict, save_ckpt
    from mergelang.io.dtypes import (
        is_float_code,
        output_code,
        save_dtype_code,
        torch_dtype,
    )
    from mergelang.io.file_formats import FILE_FORMATS, FileFormat
    from mergelang.io.hashing import FileHashes, default_cache_dir, file_hashes
    from mergelang.io.locate import ModelLocator
    from mergelang.io.metadata import (
        InputRecord,
        Provenance,
        build_metadata,
        input_record,
        read_provenance,
    )
    from mergelang.io.readers import (
        CheckpointReader,
        SafetensorsReader,
        TensorMeta,
        open_checkpoint,
    )
    from mergelang.io.safetensors_header import (
        SafetensorsHeader,
        TensorInfo,
        read_safetensors_header,
    )
    from mergelang.io.save_choices import SAVE_DTYPES, SaveOptions
    from mergelang.io.save_options import (
        OutputKey,
        output_layout,
        output_tensor,
        save_checkpoint,
    )
    from mergelang.io.writer import AtomicFile, OutputEntry, SafetensorsWriter

_EXPORTS: dict[str, str] = {
    "CkptReader": "ckpt",
    "load_state_dict": "ckpt",
    "save_ckpt": "ckpt",
    "SAVE_DTYPES": "save_choices",
    "SaveOptions": "save_choices",
    "FILE_FORMATS": "file_formats",
    "FileFormat": "file_formats",
    "is_float_code": "dtypes",
    "output_code": "dtypes",
    "save_dtype_code": "dtypes",
    "torch_dtype": "dtypes",
    "FileHashes": "hashing",
    "default_cache_dir": "hashing",
    "file_hashes": "hashing",
    "ModelLocator": "locate",
    "InputRecord": "metadata",
    "Provenance": "metadata",
    "build_metadata": "metadata",
    "input_record": "metadata",
    "read_provenance": "metadata",
    "CheckpointReader": "readers",
    "SafetensorsReader": "readers",
    "TensorMeta": "readers",
    "open_checkpoint": "readers",
    "SafetensorsHeader": "safetensors_header",
    "TensorInfo": "safetensors_header",
    "read_safetensors_header": "safetensors_header",
    "OutputKey": "save_options",
    "output_layout": "save_options",
    "output_tensor": "save_options",
    "save_checkpoint": "save_options",
    "AtomicFile": "writer",
    "OutputEntry": "writer",
    "SafetensorsWriter": "writer",
}

__all__ = [
    "FILE_FORMATS",
    "SAVE_DTYPES",
    "AtomicFile",
    "CheckpointReader",
    "CkptReader",
    "FileFormat",
    "FileHashes",
    "InputRecord",
    "ModelLocator",
    "OutputEntry",
    "OutputKey",
    "Provenance",
    "SafetensorsHeader",
    "SafetensorsReader",
    "SafetensorsWriter",
    "SaveOptions",
    "TensorInfo",
    "TensorMeta",
    "build_metadata",
    "default_cache_dir",
    "file_hashes",
    "input_record",
    "is_float_code",
    "load_state_dict",
    "open_checkpoint",
    "output_code",
    "output_layout",
    "output_tensor",
    "read_provenance",
    "read_safetensors_header",
    "save_checkpoint",
    "save_ckpt",
    "save_dtype_code",
    "torch_dtype",
]


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mergelang.io' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"mergelang.io.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
