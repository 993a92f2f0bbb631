"""GGUF checkpoints: read dequantised per key, written with a GGML type per tensor class;
compared with the ``gguf`` package's own quantisers, dequantisers and reader."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from run_helpers import (
    declare,
    load,
    merged_float32,
    shared_models,
    uniform,
    weighted_sum,
    write_recipe,
)

import mergelang.api as api
from mergelang.errors import CheckpointError, MergelangError, UsageError
from mergelang.io.gguf_format import GGUFCheckpoint, require_gguf
from mergelang.io.readers import open_checkpoint
from mergelang.io.save_choices import SaveOptions

gguf = pytest.importorskip("gguf")
np = pytest.importorskip("numpy")
from gguf import GGMLQuantizationType as GT  # noqa: E402
from gguf.quants import dequantize, quantize  # noqa: E402

QUANTISED = ["Q8_0", "Q5_1", "Q5_0", "Q4_1", "Q4_0"]
K_QUANTS = ["Q6_K", "Q5_K", "Q4_K", "Q3_K", "Q2_K"]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MERGELANG_CACHE", str(tmp_path / "env-cache"))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_models(tmp_path_factory, ("a", "b"))


def quantisable(tensor: torch.Tensor, block: int = 32) -> bool:
    return (
        tensor.is_floating_point()
        and tensor.dim() >= 2
        and tensor.numel() > 1024
        and tensor.shape[-1] % block == 0
    )


def write_gguf(
    path: Path, tensors: dict[str, torch.Tensor], kind: str = "Q8_0", arch: str = "sd1"
) -> dict[str, torch.Tensor]:
    """A GGUF written with the gguf package; returns what each key should read as."""
    writer = gguf.GGUFWriter(str(path), arch=arch)
    expected: dict[str, torch.Tensor] = {}
    for key, tensor in tensors.items():
        if quantisable(tensor):
            values = tensor.float().numpy()
            data = quantize(values, GT[kind])
            writer.add_tensor(key, data, raw_dtype=GT[kind])
            expected[key] = torch.from_numpy(dequantize(data, GT[kind])).reshape(tensor.shape)
        elif tensor.dtype == torch.bfloat16:
            data = tensor.view(torch.int16).numpy().view(np.uint16)
            writer.add_tensor(key, data, raw_dtype=GT.BF16)
            expected[key] = tensor
        else:
            writer.add_tensor(key, tensor.numpy())
            expected[key] = tensor
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return expected


@pytest.mark.parametrize("kind", QUANTISED)
def test_every_written_type_reads_as_the_reference_dequantiser_gives(
    tmp_path: Path, kind: str
) -> None:
    gen = torch.Generator().manual_seed(3)
    tensors = {
        "w.weight": torch.randn(64, 256, generator=gen),
        "c.weight": torch.randn(32, 8, 3, 64, generator=gen),
        "b.bias": torch.randn(64, generator=gen),
        "h.weight": torch.randn(16, 48, generator=gen).half(),
        "bf.weight": torch.randn(8, 16, generator=gen).bfloat16(),
    }
    expected = write_gguf(tmp_path / "t.gguf", tensors, kind, arch="other")

    with open_checkpoint(tmp_path / "t.gguf") as reader:
        assert isinstance(reader, GGUFCheckpoint)
        assert reader.keys() == list(tensors)
        assert reader.quant_type("w.weight") == kind
        assert reader.info("w.weight").dtype == "F32"
        assert reader.info("h.weight").dtype == "F16"
        for key, tensor in expected.items():
            found = reader.get(key)
            assert found.shape == tensors[key].shape, key
            assert found.dtype == tensor.dtype, key
            assert torch.equal(found, tensor), key


@pytest.mark.parametrize("kind", K_QUANTS)
def test_k_quants_read_as_the_reference_dequantiser_gives(tmp_path: Path, kind: str) -> None:
    block, size = gguf.GGML_QUANT_SIZES[GT[kind]]
    rows, cols = 4, 2 * block
    rng = np.random.default_rng(5)
    raw = rng.integers(0, 256, size=(rows, cols // block * size), dtype=np.uint8)
    writer = gguf.GGUFWriter(str(tmp_path / "k.gguf"), arch="sd1")
    writer.add_tensor("k.weight", raw, raw_dtype=GT[kind])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    with open_checkpoint(tmp_path / "k.gguf") as reader:
        found = reader.get("model.diffusion_model.k.weight")

    expected = torch.from_numpy(dequantize(raw, GT[kind]))
    assert found.shape == (rows, cols)
    torch.testing.assert_close(found, expected, rtol=0, atol=0, equal_nan=True)


def test_a_u_net_only_sd_file_gets_the_checkpoint_prefix(tmp_path: Path) -> None:
    write_gguf(tmp_path / "u.gguf", {"input_blocks.0.0.bias": torch.zeros(4)})
    with open_checkpoint(tmp_path / "u.gguf") as reader:
        assert reader.keys() == ["model.diffusion_model.input_blocks.0.0.bias"]
    write_gguf(tmp_path / "f.gguf", {"img_in.bias": torch.zeros(4)}, arch="flux")
    with open_checkpoint(tmp_path / "f.gguf") as reader:
        assert reader.keys() == ["img_in.bias"]


def test_a_gguf_input_merges_dequantised(tmp_path: Path, models: Path) -> None:
    a, b = load(models / "a.safetensors"), load(models / "b.safetensors")
    (tmp_path / "in").mkdir()
    wide = write_gguf(tmp_path / "in" / "a.gguf", a)
    assert any(quantisable(t) for t in a.values())
    recipe = write_recipe(
        tmp_path,
        f'model a = "{tmp_path / "in" / "a.gguf"}"\n'
        + declare(models, "b")
        + 'save weighted_sum(a, b, alpha=0.4) to "mix.safetensors" as fp32\n',
    )

    api.run(recipe, cache_dir=tmp_path / "cache")

    expected = merged_float32("sd1", [wide, b], weighted_sum(uniform("sd1", 0.4)))
    written = load(tmp_path / "mix.safetensors")
    for key, tensor in expected.items():
        if tensor.is_floating_point():
            assert torch.equal(written[key], tensor.float()), key


def test_a_gguf_written_by_mergelang_reads_back_through_the_package(
    tmp_path: Path, models: Path
) -> None:
    a, b = load(models / "a.safetensors"), load(models / "b.safetensors")
    recipe = write_recipe(
        tmp_path,
        declare(models, "a", "b") + 'save weighted_sum(a, b, alpha=0.7) to "mix.gguf" as q8_0\n',
    )

    api.run(recipe, cache_dir=tmp_path / "cache")

    merged = merged_float32("sd1", [a, b], weighted_sum(uniform("sd1", 0.7)))
    reader = gguf.GGUFReader(str(tmp_path / "mix.gguf"))
    assert bytes(reader.fields["general.architecture"].parts[-1]).decode() == "sd1"
    found = {t.name: t for t in reader.tensors}
    assert set(found) == set(merged)
    kinds = set()
    for key, tensor in merged.items():
        stored = found[key]
        shape = tuple(reversed([int(d) for d in stored.shape]))
        assert shape == tuple(tensor.shape), key
        if not tensor.is_floating_point():
            assert torch.equal(torch.from_numpy(np.array(stored.data)).reshape(shape), tensor)
            continue
        values = tensor.float()
        if quantisable(values):
            assert stored.tensor_type == GT.Q8_0, key
            reference = dequantize(quantize(values.numpy(), GT.Q8_0), GT.Q8_0)
        elif values.dim() >= 2 and values.numel() > 1024:
            assert stored.tensor_type == GT.F16, key
            reference = values.half().float().numpy()
        else:
            assert stored.tensor_type == GT.F32, key
            reference = values.numpy()
        kinds.add(stored.tensor_type.name)
        decoded = dequantize(np.array(stored.data), stored.tensor_type)
        assert np.array_equal(decoded.reshape(shape), reference.reshape(shape)), key
    assert {"Q8_0", "F32"} <= kinds
    with open_checkpoint(tmp_path / "mix.gguf") as mine:
        for key in list(merged)[:20]:
            assert mine.get(key).shape == merged[key].shape


def _damaged(tmp_path: Path, models: Path) -> tuple[Path, bytes]:
    a = load(models / "a.safetensors")
    path = tmp_path / "in" / "a.gguf"
    path.parent.mkdir(exist_ok=True)
    write_gguf(path, {k: a[k] for k in list(a)[:3]})
    return path, path.read_bytes()


def test_an_unknown_quant_type_is_a_clear_error(tmp_path: Path, models: Path) -> None:
    path, data = _damaged(tmp_path, models)
    reader = gguf.GGUFReader(str(path))
    field = reader.tensors[0].field
    offset = int(field.offset) + sum(p.nbytes for p in field.parts[:4])
    path.write_bytes(data[:offset] + (200).to_bytes(4, "little") + data[offset + 4 :])

    with pytest.raises(CheckpointError) as caught:
        GGUFCheckpoint(path)

    assert caught.value.diagnostics[0].code == "unknown-quant-type"
    assert "200" in caught.value.diagnostics[0].message


def test_truncated_data_is_a_clear_error_and_nothing_is_written(
    tmp_path: Path, models: Path
) -> None:
    path, data = _damaged(tmp_path, models)
    path.write_bytes(data[:-64])
    recipe = write_recipe(tmp_path, f'model a = "{path}"\nsave a to "out/a.safetensors"\n')

    with pytest.raises(MergelangError) as caught:
        api.run(recipe, cache_dir=tmp_path / "cache")

    codes = {d.code for d in caught.value.diagnostics}
    assert codes & {"truncated", "corrupt-gguf"}, codes
    assert not (tmp_path / "out").exists()


def test_a_header_lying_about_sizes_is_a_clear_error(tmp_path: Path, models: Path) -> None:
    path, data = _damaged(tmp_path, models)
    reader = gguf.GGUFReader(str(path))
    field = reader.tensors[1].field
    offset = int(field.offset) + sum(p.nbytes for p in field.parts[:5])
    path.write_bytes(data[:offset] + (0).to_bytes(8, "little") + data[offset + 8 :])

    with pytest.raises(CheckpointError) as caught:
        GGUFCheckpoint(path)

    assert caught.value.diagnostics[0].code == "corrupt-gguf"
    assert "overlaps" in caught.value.diagnostics[0].message


def test_gguf_quantisations_need_a_gguf_output() -> None:
    with pytest.raises(UsageError) as caught:
        SaveOptions(dtype="q8_0")
    assert caught.value.diagnostics[0].message == (
        "q8_0 is a GGUF quantisation, but the output is safetensors"
    )
    with pytest.raises(UsageError):
        SaveOptions(dtype="fp8", format="gguf")
    assert SaveOptions(dtype="q4_0", format="gguf").file_format.quant == "Q4_0"


def test_without_the_gguf_package_the_error_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "gguf", None)
    with pytest.raises(UsageError) as caught:
        require_gguf()
    assert caught.value.diagnostics[0].hint == "pip install 'mergelang[gguf]'"


def test_a_gguf_with_names_longer_than_ggml_reads_is_a_warning_at_its_save(
    tmp_path: Path, models: Path
) -> None:
    saves = (
        'save weighted_sum(a, b, alpha=0.7) to "full.gguf" as q8_0\n'
        'save weighted_sum(a, b, alpha=0.7) to "unet.gguf" as q8_0 with layout=bare\n'
    )
    recipe = write_recipe(tmp_path, declare(models, "a", "b") + saves)

    found = [w for w in api.plan(recipe, cache_dir=tmp_path / "cache").warnings]

    long = [w for w in found if w.code == "gguf-long-names"]
    assert len(long) == 1  # the bare U-Net's names, without their prefix, all fit
    warning = long[0]
    assert warning.severity == "warning"
    assert warning.span.line == 3 and warning.span.column == 1
    longest = max((k for k in load(models / "a.safetensors") if len(k) > 63), key=len)
    assert f"{longest!r}, is {len(longest)})" in warning.message
    assert "full.gguf" in warning.message and "layout=bare" in (warning.hint or "")
