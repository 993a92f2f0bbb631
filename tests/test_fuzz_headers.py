"""Fuzzing the safetensors reader: whatever a file holds, reading its header and every tensor
either succeeds or raises :class:`~mergelang.errors.CheckpointError`, never anything else and
never for long; ``mergelang show`` answers 0 or 1.

Files are valid ones (whose tensors must read back as the very bytes written), valid ones with
one field of the header mutated (length prefix, dtype, shape, data_offsets, holes and overlaps,
``__metadata__``, duplicate names in the raw JSON, deep nesting, huge numbers, non-UTF-8 bytes,
truncation) and random bytes; and ``torch.save`` files with damaged bytes, read through the
weights-only pickle loader.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mergelang.cli import main
from mergelang.errors import CheckpointError
from mergelang.io.dtypes import ITEM_SIZES, torch_dtype
from mergelang.io.readers import SafetensorsReader, open_checkpoint
from mergelang.io.safetensors_header import SafetensorsHeader, read_safetensors_header


def fuzz_settings(examples: int) -> Any:
    return settings(
        max_examples=examples,
        deadline=timedelta(seconds=5),
        derandomize=True,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.function_scoped_fixture,
            HealthCheck.data_too_large,
        ],
    )


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(autouse=True)
def _private_cache(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MERGELANG_CACHE", str(folder / "cache"))


# ---- valid files -------------------------------------------------------------------------------

DTYPES = sorted(ITEM_SIZES)
NAMES = st.text(st.characters(codec="utf-8"), min_size=1, max_size=10).filter(
    lambda name: name != "__metadata__"
)


@dataclass(frozen=True)
class Spec:
    """A valid file: tensors (name -> dtype, shape, bytes) in header order, the order of their
    bytes in the data section, and the metadata (``None``: no ``__metadata__``)."""

    tensors: dict[str, tuple[str, tuple[int, ...], bytes]]
    placement: tuple[str, ...]
    metadata: dict[str, str] | None

    def header(self) -> dict[str, Any]:
        offsets: dict[str, list[int]] = {}
        position = 0
        for key in self.placement:
            size = len(self.tensors[key][2])
            offsets[key] = [position, position + size]
            position += size
        document: dict[str, Any] = {}
        if self.metadata is not None:
            document["__metadata__"] = dict(self.metadata)
        for key, (dtype, shape, _) in self.tensors.items():
            document[key] = {"dtype": dtype, "shape": list(shape), "data_offsets": offsets[key]}
        return document

    def data(self) -> bytes:
        return b"".join(self.tensors[key][2] for key in self.placement)


@st.composite
def specs(draw: st.DrawFn) -> Spec:
    tensors: dict[str, tuple[str, tuple[int, ...], bytes]] = {}
    for key in draw(st.lists(NAMES, max_size=5, unique=True)):
        dtype = draw(st.sampled_from(DTYPES))
        shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
        size = math.prod(shape) * ITEM_SIZES[dtype]
        tensors[key] = (dtype, shape, draw(st.binary(min_size=size, max_size=size)))
    placement = tuple(draw(st.permutations(list(tensors))))
    metadata = draw(
        st.none() | st.dictionaries(st.text(max_size=8), st.text(max_size=12), max_size=3)
    )
    return Spec(tensors, placement, metadata)


def encode(document: Any, *, ascii: bool = True, pad: int = 0) -> bytes:
    return json.dumps(document, ensure_ascii=ascii).encode("utf-8") + b" " * pad


def safetensors_bytes(text: bytes, data: bytes, *, length: int | None = None) -> bytes:
    return struct.pack("<Q", len(text) if length is None else length) + text + data


def raw_bytes(tensor: torch.Tensor) -> bytes:
    return bytes(tensor.reshape(-1).view(torch.uint8).tolist())


def write(folder: Path, content: bytes) -> Path:
    path = folder / "fuzzed.safetensors"
    path.write_bytes(content)
    return path


@fuzz_settings(100)
@given(spec=specs(), ascii=st.booleans(), pad=st.integers(0, 8))
def test_a_valid_file_reads_back_the_bytes_written(
    folder: Path, spec: Spec, ascii: bool, pad: int
) -> None:
    path = write(
        folder, safetensors_bytes(encode(spec.header(), ascii=ascii, pad=pad), spec.data())
    )
    header = read_safetensors_header(path)
    assert list(header.tensors) == list(spec.tensors)
    assert header.metadata == (spec.metadata or {})
    with SafetensorsReader(path) as reader:
        for key, (dtype, shape, data) in spec.tensors.items():
            tensor = reader.get(key)
            assert reader.info(key).dtype == dtype
            assert tensor.dtype == torch_dtype(dtype)
            assert tuple(tensor.shape) == shape
            assert raw_bytes(tensor) == data


# ---- mutated files -----------------------------------------------------------------------------

JSON_SCALARS = (
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=6)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
BAD_DTYPES = (
    st.sampled_from(["f32", "F32 ", "", "F12", "float32", "U128", "__metadata__"]) | JSON_VALUES
)
BAD_SHAPES = st.one_of(
    st.lists(st.integers(-(2**70), 2**70), max_size=4),
    st.lists(st.sampled_from([-1, 2**31, 2**32, 2**63 - 1, 2**63, 2**64, 10**30]), max_size=3),
    st.lists(st.floats(), min_size=1, max_size=3),
    st.lists(st.lists(st.integers(0, 3), max_size=2), min_size=1, max_size=2),
    JSON_VALUES,
)
BAD_INTEGERS = st.integers(-(2**70), 2**70) | st.sampled_from([2**63, 2**64, -1])
BAD_OFFSETS = st.one_of(
    st.lists(BAD_INTEGERS, max_size=3),
    st.lists(st.floats() | st.text(max_size=3) | st.booleans(), min_size=2, max_size=2),
    JSON_VALUES,
)

Mutation = Callable[[st.DataObject, dict[str, Any], bytes], bytes]
"""(hypothesis data, a valid header as a dict, the data section) -> the whole file."""


def _some_entry(data: st.DataObject, document: dict[str, Any]) -> dict[str, Any] | None:
    keys = [k for k in document if k != "__metadata__"]
    if not keys:
        return None
    entry: dict[str, Any] = document[data.draw(st.sampled_from(keys))]
    return entry


def length_prefix(data: st.DataObject, document: dict[str, Any], section: bytes) -> bytes:
    text = encode(document)
    length = data.draw(
        st.integers(0, 2**64 - 1) | st.integers(-16, 16).map(lambda d: max(0, len(text) + d))
    )
    return safetensors_bytes(text, section, length=length)


def field(name: str, values: st.SearchStrategy[Any]) -> Mutation:
    def mutate(data: st.DataObject, document: dict[str, Any], section: bytes) -> bytes:
        entry = _some_entry(data, document)
        if entry is not None:
            if data.draw(st.integers(0, 4), label="drop the field") == 0:
                del entry[name]
            else:
                entry[name] = data.draw(values)
        return safetensors_bytes(encode(document), section)

    return mutate


def offsets(data: st.DataObject, document: dict[str, Any], section: bytes) -> bytes:
    entry = _some_entry(data, document)
    if entry is not None:
        start, end = entry["data_offsets"]
        others = [e["data_offsets"] for k, e in document.items() if k != "__metadata__"]
        entry["data_offsets"] = data.draw(
            st.sampled_from(
                [[end, start], [start, end + 1], [start + 1, end + 1], [start, len(section) + 8]]
                + [list(o) for o in others]
            )
            | BAD_OFFSETS
        )
    return safetensors_bytes(encode(document), section)


def layout(data: st.DataObject, document: dict[str, Any], section: bytes) -> bytes:
    """Bytes of no tensor (before, between or after the tensors), or two tensors sharing
    bytes with each keeping its size."""
    entries = [e for k, e in document.items() if k != "__metadata__"]
    change = data.draw(st.sampled_from(["hole", "trailing", "overlap"]))
    extra = data.draw(st.integers(1, 16))
    if change == "trailing" or not entries:
        return safetensors_bytes(encode(document), section + bytes(extra))
    entry = data.draw(st.sampled_from(entries))
    start, end = entry["data_offsets"]
    if change == "hole":
        for other in entries:
            if other["data_offsets"][0] >= start:
                other["data_offsets"] = [o + extra for o in other["data_offsets"]]
        return safetensors_bytes(encode(document), section[:start] + bytes(extra) + section[start:])
    shift = data.draw(st.integers(1, max(1, end - start)))
    entry["data_offsets"] = [max(0, start - shift), max(0, start - shift) + end - start]
    return safetensors_bytes(encode(document), section)


def metadata(data: st.DataObject, document: dict[str, Any], section: bytes) -> bytes:
    document["__metadata__"] = data.draw(
        JSON_VALUES | st.dictionaries(st.text(max_size=4), JSON_VALUES, min_size=1, max_size=3)
    )
    return safetensors_bytes(encode(document), section)


def whole_entry(data: st.DataObject, document: dict[str, Any], section: bytes) -> bytes:
    document[data.draw(NAMES)] = data.draw(JSON_VALUES)
    return safetensors_bytes(encode(document), section)


def duplicate_name(data: st.DataObject, document: dict[str, Any], section: bytes) -> bytes:
    name = data.draw(st.sampled_from([*document, "__metadata__"]))
    value = document.get(name, {})
    text = encode(document)
    twice = b"{" + json.dumps(name).encode() + b": " + encode(value) + (b", " if document else b"")
    return safetensors_bytes(twice + text[1:], section)


def deep_nesting(data: st.DataObject, document: dict[str, Any], section: bytes) -> bytes:
    depth = data.draw(st.integers(1, 50_000))
    opening, closing = data.draw(st.sampled_from([("[", "]"), ('{"a": ', "}")]))
    place = data.draw(st.sampled_from(["shape", "metadata", "entry"]))
    nested = opening * depth + ("0" if opening == "[" else "1") + closing * depth
    if place == "shape":
        text = '{"w": {"dtype": "U8", "shape": ' + nested + ', "data_offsets": [0, 1]}}'
    elif place == "metadata":
        text = '{"__metadata__": {"k": ' + nested + "}}"
    else:
        text = '{"w": ' + nested + "}"
    return safetensors_bytes(text.encode(), section)


def huge_number(data: st.DataObject, document: dict[str, Any], section: bytes) -> bytes:
    digits = data.draw(st.integers(1, 6000))
    literal = data.draw(st.sampled_from(["9" * digits, "1e" + "9" * min(digits, 400), "-0.5"]))
    field_name = data.draw(st.sampled_from(["shape", "data_offsets"]))
    value = f"[{literal}]" if field_name == "shape" else f"[0, {literal}]"
    text = '{"w": {"dtype": "U8", "' + field_name + '": ' + value
    other = "data_offsets" if field_name == "shape" else "shape"
    text += ', "' + other + '": ' + ("[0, 1]" if other == "data_offsets" else "[1]") + "}}"
    return safetensors_bytes(text.encode(), section)


def foreign_bytes(data: st.DataObject, document: dict[str, Any], section: bytes) -> bytes:
    text = encode(document, ascii=False)
    at = data.draw(st.integers(0, len(text)))
    junk = data.draw(st.binary(min_size=1, max_size=4))
    return safetensors_bytes(text[:at] + junk + text[at:], section)


def lone_surrogate(data: st.DataObject, document: dict[str, Any], section: bytes) -> bytes:
    """A JSON escape of half a surrogate pair in a name, a metadata name or a value."""
    escape = data.draw(st.sampled_from(["\\ud800", "\\udfff", "\\udc80x"]))
    place = data.draw(st.sampled_from(["name", "metadata-name", "metadata-value"]))
    if place == "name":
        head = '{"w' + escape + '": {"dtype": "U8", "shape": [0], "data_offsets": [0, 0]}'
    elif place == "metadata-name":
        head = '{"__metadata__": {"' + escape + '": "v"}'
    else:
        head = '{"__metadata__": {"k": "' + escape + '"}'
    document.pop("__metadata__", None)
    tail = encode(document)[1:].decode()
    return safetensors_bytes((head + (", " if document else "") + tail).encode(), section)


def flipped_bytes(data: st.DataObject, document: dict[str, Any], section: bytes) -> bytes:
    content = bytearray(safetensors_bytes(encode(document), section))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(content) - 1))
        content[at] = data.draw(st.integers(0, 255))
    return bytes(content)


def truncation(data: st.DataObject, document: dict[str, Any], section: bytes) -> bytes:
    content = safetensors_bytes(encode(document), section)
    return content[: data.draw(st.integers(0, len(content)))]


MUTATIONS: dict[str, Mutation] = {
    "length-prefix": length_prefix,
    "dtype": field("dtype", BAD_DTYPES),
    "shape": field("shape", BAD_SHAPES),
    "data-offsets": offsets,
    "layout": layout,
    "metadata": metadata,
    "entry": whole_entry,
    "duplicate-name": duplicate_name,
    "deep-nesting": deep_nesting,
    "huge-number": huge_number,
    "non-utf8": foreign_bytes,
    "lone-surrogate": lone_surrogate,
    "flipped-bytes": flipped_bytes,
    "truncation": truncation,
}


@st.composite
def mutated_files(draw: st.DrawFn, names: tuple[str, ...] = tuple(sorted(MUTATIONS))) -> bytes:
    """A valid file (see :func:`specs`) with one of the mutations ``names`` applied."""
    spec = draw(specs())
    mutation = MUTATIONS[draw(st.sampled_from(names))]
    return mutation(draw(st.data()), spec.header(), spec.data())


RANDOM_FILES = st.binary(max_size=300) | st.builds(
    lambda length, rest: struct.pack("<Q", length) + rest,
    st.integers(0, 2**64 - 1) | st.integers(0, 64),
    st.binary(max_size=100),
)


# ---- what every file must do -------------------------------------------------------------------


@contextlib.contextmanager
def refused_cleanly() -> Iterator[None]:
    """Let a :class:`CheckpointError` through silently: it is the only acceptable failure."""
    with contextlib.suppress(CheckpointError):
        yield


def read_everything(path: Path) -> None:
    """Read the header, then every tensor through both readers; an accepted header's tensors
    must be exactly the bytes its offsets point at."""
    header: SafetensorsHeader | None = None
    with refused_cleanly():
        header = read_safetensors_header(path)
    if header is not None:
        content = path.read_bytes()
        with SafetensorsReader(path) as reader:
            for key, info in header.tensors.items():
                tensor = reader.get(key)
                assert tuple(tensor.shape) == info.shape
                begin = header.data_offset + info.start
                assert raw_bytes(tensor) == content[begin : header.data_offset + info.end]
    with refused_cleanly(), open_checkpoint(path) as reader:
        for key in reader.keys():  # noqa: SIM118
            reader.get(key)


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_a_mutated_header_is_read_or_refused(folder: Path, mutation: str) -> None:
    @fuzz_settings(25)
    @given(content=mutated_files((mutation,)))
    def check(content: bytes) -> None:
        read_everything(write(folder, content))

    check()


@fuzz_settings(150)
@given(content=RANDOM_FILES)
def test_random_bytes_are_read_or_refused(folder: Path, content: bytes) -> None:
    read_everything(write(folder, content))


def torch_saved(legacy: bool) -> bytes:
    buffer = io.BytesIO()
    tensors = {"w": torch.arange(6.0).reshape(2, 3), "i": torch.tensor([1, 2])}
    torch.save({"state_dict": tensors}, buffer, _use_new_zipfile_serialization=not legacy)
    return buffer.getvalue()


@st.composite
def damaged_pickles(draw: st.DrawFn) -> bytes:
    content = bytearray(torch_saved(legacy=draw(st.booleans())))
    if draw(st.booleans()):
        return bytes(content[: draw(st.integers(0, len(content)))])
    for _ in range(draw(st.integers(1, 6))):
        content[draw(st.integers(0, len(content) - 1))] = draw(st.integers(0, 255))
    return bytes(content)


@fuzz_settings(80)
@given(content=damaged_pickles())
def test_a_damaged_torch_file_is_read_or_refused(folder: Path, content: bytes) -> None:
    path = folder / "fuzzed.ckpt"
    path.write_bytes(content)
    with refused_cleanly(), open_checkpoint(path) as reader:
        for key in reader.keys():  # noqa: SIM118
            reader.get(key).sum()


PRINTED = ("entry", "lone-surrogate", "metadata", "non-utf8")
"""Mutations of what ``show`` prints: names, metadata, text."""


@fuzz_settings(80)
@given(content=mutated_files(PRINTED) | mutated_files() | RANDOM_FILES, as_json=st.booleans())
def test_show_answers_0_or_1(folder: Path, content: bytes, as_json: bool) -> None:
    path = write(folder, content)
    argv = ["show", *(["--json"] if as_json else []), str(path)]
    # Strict UTF-8 streams, like a terminal or a pipe: text that cannot be printed fails here.
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(argv)
        out.flush()
        err.flush()
    assert status in (0, 1)
