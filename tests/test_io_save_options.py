"""Save options: the output layout rules, and streaming a model through them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mergelang.arch import get_architecture
from mergelang.errors import CheckpointError, OutputError, UsageError
from mergelang.io.ckpt import CkptReader
from mergelang.io.dtypes import torch_dtype
from mergelang.io.readers import SafetensorsReader
from mergelang.io.safetensors_header import TensorInfo
from mergelang.io.save_options import (
    OutputKey,
    SaveOptions,
    output_layout,
    reset_position_ids,
    save_checkpoint,
)
from mergelang.io.writer import OutputEntry, SafetensorsWriter
from mergelang.testing import make_checkpoint

SD1 = get_architecture("sd1")
UNET = "model.diffusion_model.input_blocks.0.0.weight"
EMA = "model_ema.diffusion_modelinput_blocks00weight"
DECAY = "model_ema.decay"
UPDATES = "model_ema.num_updates"
VAE = "first_stage_model.decoder.conv_in.weight"
VAE_BIAS = "first_stage_model.decoder.conv_in.bias"
POS = "cond_stage_model.transformer.text_model.embeddings.position_ids"
TEXT = "cond_stage_model.transformer.text_model.final_layer_norm.weight"


def info(dtype: str, *shape: int) -> TensorInfo:
    return TensorInfo(dtype, tuple(shape), 0, 0)


def header(pos_dtype: str = "I64") -> dict[str, TensorInfo]:
    return {
        "betas": info("F32", 1000),
        UNET: info("F32", 8, 4, 3, 3),
        EMA: info("F32", 8, 4, 3, 3),
        DECAY: info("F32"),
        UPDATES: info("I32"),
        VAE: info("F32", 16, 4, 3, 3),
        VAE_BIAS: info("F32", 16),
        POS: info(pos_dtype, 1, 77),
        TEXT: info("BF16", 12),
    }


def summary(layout: list[OutputKey]) -> dict[str, tuple[str, str]]:
    return {item.key: (item.dtype, item.source) for item in layout}


def test_defaults_drop_ema_and_keep_everything_else() -> None:
    layout = output_layout(header(), SD1, SaveOptions(), None)
    assert summary(layout) == {
        "betas": ("F32", "model"),
        UNET: ("F32", "model"),
        VAE: ("F32", "model"),
        VAE_BIAS: ("F32", "model"),
        POS: ("I64", "model"),
        TEXT: ("BF16", "model"),
    }
    assert [item.shape for item in layout][:2] == [(1000,), (8, 4, 3, 3)]


def test_save_dtype_applies_to_floats_only() -> None:
    options = SaveOptions(dtype="fp16", ema="keep", schedule="drop")
    assert summary(output_layout(header(), SD1, options, None)) == {
        UNET: ("F16", "model"),
        EMA: ("F16", "model"),
        DECAY: ("F16", "model"),
        UPDATES: ("I32", "model"),
        VAE: ("F16", "model"),
        VAE_BIAS: ("F16", "model"),
        POS: ("I64", "model"),
        TEXT: ("F16", "model"),
    }


def test_position_ids_reset_fixes_a_float_key() -> None:
    layout = output_layout(header("F16"), SD1, SaveOptions(position_ids="reset"), None)
    (item,) = [i for i in layout if i.key == POS]
    assert (item.dtype, item.shape, item.source) == ("I64", (1, 77), "position_ids")
    kept = output_layout(header("F16"), SD1, SaveOptions(dtype="bf16"), None)
    assert summary(kept)[POS] == ("BF16", "model")


def test_reset_position_ids_values() -> None:
    values = reset_position_ids((1, 77))
    assert values.dtype == torch.int64
    assert torch.equal(values, torch.arange(77)[None])
    assert reset_position_ids((2, 3)).tolist() == [[0, 1, 2], [0, 1, 2]]


@pytest.mark.parametrize("prefixed", [False, True])
def test_vae_keys_come_from_the_vae_file(prefixed: bool) -> None:
    prefix = "first_stage_model." if prefixed else ""
    vae_header = {
        f"{prefix}decoder.conv_in.weight": info("F32", 16, 4, 3, 3),
        f"{prefix}decoder.conv_in.bias": info("F32", 16),
        "loss.logvar": info("F32"),
    }
    options = SaveOptions(dtype="fp16", vae=Path("vae.safetensors"))
    layout = output_layout(header(), SD1, options, vae_header)
    items = {item.key: item for item in layout}
    assert items[VAE].source == "vae"
    assert items[VAE].read_key == f"{prefix}decoder.conv_in.weight"
    assert items[VAE].dtype == "F16"
    assert items[VAE_BIAS].read_key == f"{prefix}decoder.conv_in.bias"
    assert "loss.logvar" not in items and "first_stage_model.loss.logvar" not in items
    assert items[UNET].source == "model"


def test_missing_vae_key_names_file_and_key() -> None:
    vae_header = {"decoder.conv_in.weight": info("F32", 16, 4, 3, 3)}
    options = SaveOptions(vae=Path("/models/vae.pt"))
    with pytest.raises(CheckpointError) as caught:
        output_layout(header(), SD1, options, vae_header)
    diag = caught.value.diagnostics[0]
    assert diag.code == "vae-missing-key"
    assert diag.path == "/models/vae.pt"
    assert diag.key == "decoder.conv_in.bias"
    assert VAE_BIAS in diag.message


def test_vae_shape_mismatch_names_file_and_key() -> None:
    vae_header = {
        "decoder.conv_in.weight": info("F32", 32, 4, 3, 3),
        "decoder.conv_in.bias": info("F32", 16),
    }
    options = SaveOptions(vae=Path("vae.safetensors"))
    with pytest.raises(CheckpointError) as caught:
        output_layout(header(), SD1, options, vae_header)
    diag = caught.value.diagnostics[0]
    assert diag.code == "vae-shape-mismatch"
    assert diag.key == "decoder.conv_in.weight"
    assert "[32, 4, 3, 3]" in diag.message and "[16, 4, 3, 3]" in diag.message


def test_a_model_without_vae_gets_the_vae_added() -> None:
    bare = {UNET: info("F16", 8, 4, 3, 3)}
    vae_header = {
        "encoder.conv_in.weight": info("F32", 8, 3, 3, 3),
        "first_stage_model.quant_conv.bias": info("F32", 8),
        "loss.logvar": info("F32"),
    }
    layout = output_layout(bare, SD1, SaveOptions(vae=Path("v.pt")), vae_header)
    assert summary(layout) == {
        UNET: ("F16", "model"),
        "first_stage_model.quant_conv.bias": ("F32", "vae"),
        "first_stage_model.encoder.conv_in.weight": ("F32", "vae"),
    }


def test_options_are_validated() -> None:
    with pytest.raises(UsageError, match="unknown save dtype 'int8'"):
        SaveOptions(dtype="int8")
    with pytest.raises(UsageError, match="unknown ema option 'prune'"):
        SaveOptions(ema="prune")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="unknown format option 'pt'"):
        SaveOptions(format="pt")  # type: ignore[arg-type]
    assert SaveOptions(vae="v.pt").vae == Path("v.pt")  # type: ignore[arg-type]
    assert SaveOptions(dtype="bf16").dtype_code == "BF16"


@pytest.fixture(scope="module")
def sd1_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("sd1")
    return make_checkpoint(
        folder / "sd1.safetensors",
        "sd1",
        seed=1,
        dtype="F32",
        ema=True,
        schedule=True,
        metadata={"origin": "fixture"},
    )


@pytest.fixture(scope="module")
def vae_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The VAE of another synthetic model, saved on its own without the prefix."""
    folder = tmp_path_factory.mktemp("vae")
    donor = make_checkpoint(folder / "donor.safetensors", "sd1", seed=2, dtype="F32")
    with SafetensorsReader(donor) as reader:
        keys = [k for k in reader if k.startswith("first_stage_model.")]
        entries = [
            OutputEntry(k.removeprefix("first_stage_model."), "F32", reader.info(k).shape)
            for k in keys
        ]
        path = folder / "vae.safetensors"
        with SafetensorsWriter(path, entries) as writer:
            for key in keys:
                writer.write(key.removeprefix("first_stage_model."), reader.get(key))
    return path


def test_save_checkpoint_streams_through_the_options(
    tmp_path: Path, sd1_file: Path, vae_file: Path
) -> None:
    options = SaveOptions(dtype="fp16", position_ids="reset", vae=vae_file)
    out = save_checkpoint(SafetensorsReader(sd1_file), tmp_path / "out.safetensors", options)
    assert out == tmp_path / "out.safetensors"
    with (
        SafetensorsReader(sd1_file) as source,
        SafetensorsReader(vae_file) as vae,
        SafetensorsReader(out) as result,
    ):
        assert dict(result.metadata) == {"origin": "fixture"}
        expected_keys = [k for k in source if not k.startswith("model_ema.")]
        assert result.keys() == expected_keys
        assert "betas" in result
        for key in expected_keys:
            got = result.get(key)
            if key.endswith("position_ids"):
                assert got.dtype == torch.int64
                assert torch.equal(got, torch.arange(77)[None])
            elif key.startswith("first_stage_model."):
                local = key.removeprefix("first_stage_model.")
                assert torch.equal(got, vae.get(local).to(torch.float16)), key
            else:
                assert got.dtype == torch.float16
                assert torch.equal(got, source.get(key).to(torch.float16)), key


def test_save_checkpoint_keeps_dtypes_without_a_save_dtype(tmp_path: Path, sd1_file: Path) -> None:
    options = SaveOptions(ema="keep", schedule="drop")
    out = save_checkpoint(
        SafetensorsReader(sd1_file), tmp_path / "o.safetensors", options, metadata={"k": "v"}
    )
    with SafetensorsReader(sd1_file) as source, SafetensorsReader(out) as result:
        assert dict(result.metadata) == {"k": "v"}
        assert "betas" not in result
        assert "model_ema.num_updates" in result
        for key in result:
            assert result.info(key).dtype == source.info(key).dtype
            assert torch.equal(result.get(key), source.get(key))


def test_save_checkpoint_as_ckpt(tmp_path: Path, sd1_file: Path) -> None:
    options = SaveOptions(dtype="bf16", format="ckpt", schedule="drop")
    out = save_checkpoint(SafetensorsReader(sd1_file), tmp_path / "o.ckpt", options)
    with SafetensorsReader(sd1_file) as source, CkptReader(out) as result:
        dropped = {k for k in source if SD1.role(k) in ("ema", "schedule")}
        assert "betas" in dropped and "model_ema.decay" in dropped
        assert result.keys() == [k for k in source if k not in dropped]
        for key in result:
            want = source.get(key)
            if want.is_floating_point():
                want = want.to(torch.bfloat16)
            assert torch.equal(result.get(key), want), key


def test_save_checkpoint_fixes_float_position_ids_in_a_hand_built_file(tmp_path: Path) -> None:
    source = tmp_path / "float-pos.safetensors"
    entries = [OutputEntry(POS, "F32", (1, 77)), OutputEntry(UNET, "F32", (2, 4, 1, 1))]
    with SafetensorsWriter(source, entries) as writer:
        writer.write(POS, torch.arange(77, dtype=torch.float32)[None] + 0.4)
        writer.write(UNET, torch.ones(2, 4, 1, 1))
    out = save_checkpoint(
        SafetensorsReader(source),
        tmp_path / "fixed.safetensors",
        SaveOptions(position_ids="reset"),
        arch=SD1,
    )
    with SafetensorsReader(out) as result:
        assert result.info(POS).dtype == "I64"
        assert torch.equal(result.get(POS), torch.arange(77)[None])
        assert result.info(UNET).dtype == "F32"


def test_save_checkpoint_never_replaces_its_inputs(
    tmp_path: Path, sd1_file: Path, vae_file: Path
) -> None:
    before = sd1_file.stat().st_mtime_ns
    reader = SafetensorsReader(sd1_file)
    with pytest.raises(OutputError) as caught:
        save_checkpoint(reader, sd1_file, SaveOptions(), overwrite=True)
    assert caught.value.diagnostics[0].code == "overwrite-input"
    with pytest.raises(OutputError) as caught:
        save_checkpoint(reader, vae_file, SaveOptions(vae=vae_file), overwrite=True)
    assert caught.value.diagnostics[0].code == "overwrite-input"
    assert sd1_file.stat().st_mtime_ns == before
    assert list(tmp_path.iterdir()) == []


def test_output_dtype_helper_matches_layout(sd1_file: Path) -> None:
    with SafetensorsReader(sd1_file) as reader:
        layout = output_layout(
            {k: reader.info(k) for k in reader}, SD1, SaveOptions(dtype="fp16"), None
        )
    for item in layout:
        assert torch_dtype(item.dtype) in (torch.float16, torch.int64, torch.int32)
