"""The table of file formats and save choices (``mergelang.io.file_formats``,
``mergelang.io.save_choices``), and the sinks each format opens."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from run_helpers import load, load_ckpt

from mergelang.check import SAVE_DTYPES, SAVE_OPTIONS
from mergelang.errors import OutputError, UsageError
from mergelang.io.ckpt import CkptSink, read_ckpt_metadata
from mergelang.io.file_formats import (
    DEFAULT_FORMAT,
    FILE_FORMATS,
    format_for_path,
    format_of_content,
    implied_format,
    input_suffixes,
)
from mergelang.io.formats import PICKLE_SUFFIXES, SAFETENSORS_SUFFIXES, sniff_format
from mergelang.io.locate import MODEL_SUFFIXES
from mergelang.io.safetensors_header import read_safetensors_header
from mergelang.io.save_choices import GGUF_TYPES, SAVE_CHOICES, SaveOptions, listed
from mergelang.io.save_choices import SAVE_DTYPES as SAVE_DTYPE_CODES
from mergelang.io.sinks import MemorySink, SinkTarget
from mergelang.io.writer import OutputEntry, SafetensorsWriter
from mergelang.lang.merge_board import DTYPE_FLAGS, FORMAT_FLAGS


def test_the_formats_and_their_suffixes() -> None:
    assert list(FILE_FORMATS) == ["safetensors", "ckpt", "gguf"]
    gguf = FILE_FORMATS["gguf"]
    assert (gguf.suffixes, gguf.content, gguf.streams) == ((".gguf",), "gguf", True)
    safetensors, ckpt = FILE_FORMATS["safetensors"], FILE_FORMATS["ckpt"]
    assert (safetensors.suffixes, safetensors.content, safetensors.streams) == (
        (".safetensors",),
        "safetensors",
        True,
    )
    assert (ckpt.suffixes, ckpt.content, ckpt.streams) == (
        (".ckpt", ".pt", ".pth"),
        "pickle",
        False,
    )
    assert (safetensors.suffix, ckpt.suffix) == (".safetensors", ".ckpt")
    assert DEFAULT_FORMAT == "safetensors"


@pytest.mark.parametrize(
    ("path", "found"),
    [
        ("out/mix.safetensors", "safetensors"),
        ("mix.SAFETENSORS", "safetensors"),
        ("mix.ckpt", "ckpt"),
        ("mix.PT", "ckpt"),
        ("mix.pth", "ckpt"),
        ("mix.bin", None),
        ("mix", None),
    ],
)
def test_a_save_path_names_its_format(path: str, found: str | None) -> None:
    named = format_for_path(path)
    assert (named.name if named is not None else None) == found
    assert implied_format(path) == (found or "safetensors")


def test_every_reader_of_suffixes_reads_the_table() -> None:
    assert input_suffixes() == (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf")
    assert input_suffixes() == MODEL_SUFFIXES
    assert SAFETENSORS_SUFFIXES == (".safetensors",)
    assert PICKLE_SUFFIXES == (".ckpt", ".pt", ".pth", ".bin")


def test_every_reader_of_save_choices_reads_the_table() -> None:
    assert dict(SAVE_DTYPE_CODES) == {
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
    assert (
        SAVE_DTYPES
        == DTYPE_FLAGS
        == ("fp16", "bf16", "fp32", "fp8", "fp8_e5m2", "fp8_scaled", *GGUF_TYPES)
    )
    assert FORMAT_FLAGS == ("safetensors", "ckpt", "gguf") == SAVE_CHOICES["format"]
    assert dict(SAVE_OPTIONS) == {
        "ema": ("keep", "drop"),
        "schedule": ("keep", "drop"),
        "position_ids": ("keep", "reset"),
        "format": ("safetensors", "ckpt", "gguf"),
        "layout": ("all_in_one", "bare"),
        "prediction": ("auto", "eps", "v", "v_ztsnr"),
        "vae": (),
        "clip_l": (),
        "clip_g": (),
        "t5": (),
    }
    assert (
        listed(SAVE_DTYPES)
        == "fp16, bf16, fp32, fp8, fp8_e5m2, fp8_scaled, q8_0, q5_1, q5_0, q4_1, q4_0, "
        "q6_k, q5_k, q4_k or q2_k"
    )


def test_save_options_check_their_values_against_the_table() -> None:
    assert SaveOptions(format="ckpt").file_format is FILE_FORMATS["ckpt"]
    with pytest.raises(UsageError) as caught:
        SaveOptions(dtype="int8")
    assert (
        caught.value.diagnostics[0].hint
        == "use fp16, bf16, fp32, fp8, fp8_e5m2, fp8_scaled, q8_0, q5_1, q5_0, q4_1, q4_0, "
        "q6_k, q5_k, q4_k or q2_k"
    )
    with pytest.raises(UsageError) as caught:
        SaveOptions(format="onnx")
    assert caught.value.diagnostics[0].message == "unknown format option 'onnx'"
    assert caught.value.diagnostics[0].hint == "use safetensors or ckpt or gguf"


def test_the_tables_import_no_torch() -> None:
    code = (
        "import sys\n"
        "import mergelang.io.file_formats, mergelang.io.save_choices, mergelang.check\n"
        "import mergelang.lang.parser\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"


ENTRIES = (OutputEntry("w", "F32", (2, 3)), OutputEntry("step", "I64", ()))


def fill(sink: SafetensorsWriter | CkptSink | MemorySink) -> None:
    weight = torch.arange(6, dtype=torch.float32)
    sink.write_part("w", 3, weight[3:])
    sink.write_part("w", 0, weight[:3])
    sink.write_part("step", 0, torch.tensor([7]))


def test_the_safetensors_sink_streams_to_its_file(tmp_path: Path) -> None:
    target = SinkTarget(tmp_path / "sub" / "o.safetensors", ENTRIES, {"note": "x"})
    sink = FILE_FORMATS["safetensors"].open_sink(target)
    assert isinstance(sink, SafetensorsWriter)
    assert (tmp_path / "sub").is_dir()  # the folder is made when the file opens
    fill(sink)
    assert sink.commit() == tmp_path / "sub" / "o.safetensors"
    tensors = load(tmp_path / "sub" / "o.safetensors")
    assert torch.equal(tensors["w"], torch.arange(6, dtype=torch.float32).view(2, 3))
    assert int(tensors["step"]) == 7
    assert read_safetensors_header(tmp_path / "sub" / "o.safetensors").metadata == {"note": "x"}


def test_the_ckpt_sink_holds_the_model_and_saves_it_at_commit(tmp_path: Path) -> None:
    path = tmp_path / "o.ckpt"
    sink = FILE_FORMATS["ckpt"].open_sink(SinkTarget(path, ENTRIES, {"note": "x"}))
    assert isinstance(sink, CkptSink)
    fill(sink)
    assert not path.exists()
    assert sink.commit() == path
    tensors = load_ckpt(path)
    assert torch.equal(tensors["w"], torch.arange(6, dtype=torch.float32).view(2, 3))
    assert read_ckpt_metadata(path) == {"note": "x"}


@pytest.mark.parametrize("name", list(FILE_FORMATS))
def test_a_sink_refuses_to_replace_a_file_or_an_input(tmp_path: Path, name: str) -> None:
    suffix = FILE_FORMATS[name].suffix
    taken, guarded = tmp_path / f"taken{suffix}", tmp_path / f"input{suffix}"
    taken.write_bytes(b"x")
    guarded.write_bytes(b"y")
    with pytest.raises(OutputError) as caught:
        sink = FILE_FORMATS[name].open_sink(SinkTarget(taken, ENTRIES))
        fill(sink)
        sink.commit()
    assert caught.value.diagnostics[0].code == "exists"
    with pytest.raises(OutputError) as caught:
        target = SinkTarget(guarded, ENTRIES, overwrite=True, protected=(guarded,))
        sink = FILE_FORMATS[name].open_sink(target)
        fill(sink)
        sink.commit()
    assert caught.value.diagnostics[0].code == "overwrite-input"
    assert (taken.read_bytes(), guarded.read_bytes()) == (b"x", b"y")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([taken.name, guarded.name])


@pytest.mark.parametrize("name", list(FILE_FORMATS))
def test_each_format_reads_back_the_metadata_its_sink_wrote(tmp_path: Path, name: str) -> None:
    file_format = FILE_FORMATS[name]
    path = tmp_path / f"o{file_format.suffix}"
    sink = file_format.open_sink(SinkTarget(path, ENTRIES, {"mergelang.output_key": "abc"}))
    fill(sink)
    sink.commit()
    assert format_of_content(sniff_format(path)) is file_format
    assert dict(file_format.read_metadata(path)) == {"mergelang.output_key": "abc"}


def test_the_memory_sink_returns_its_tensors(tmp_path: Path) -> None:
    sink = MemorySink(ENTRIES)
    fill(sink)
    assert sink.commit() is None
    assert torch.equal(sink.result["w"], torch.arange(6, dtype=torch.float32).view(2, 3))
    assert sink.result["step"].dtype == torch.int64
