"""Malformed and unusual checkpoint files: every one gets a CheckpointError or OutputError
naming the file, never a traceback; and `show --json` stays valid JSON."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch

from mergelang.arch import checkpoint_layout, detect
from mergelang.cli import main
from mergelang.cli.show import describe_checkpoint
from mergelang.errors import CheckpointError, OutputError
from mergelang.io.readers import open_checkpoint
from mergelang.io.safetensors_header import read_safetensors_header
from mergelang.io.writer import OutputEntry, SafetensorsWriter


def write_raw(path: Path, header: str, data: bytes = b"") -> Path:
    raw = header.encode("utf-8")
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def header_error(path: Path) -> CheckpointError:
    with pytest.raises(CheckpointError) as info:
        read_safetensors_header(path)
    assert info.value.path == str(path)
    with pytest.raises(CheckpointError):
        open_checkpoint(path)
    with pytest.raises(CheckpointError):
        describe_checkpoint(path, hashes=False)
    return info.value


def test_header_nested_too_deeply_is_not_json(tmp_path: Path) -> None:
    path = write_raw(tmp_path / "deep.safetensors", '{"a":' + "[" * 50000 + "]" * 50000 + "}")
    diag = header_error(path).diagnostics[0]
    assert diag.code == "header-not-json"
    assert diag.message == "the header is not valid JSON: it is nested too deeply"


def test_header_integer_of_thousands_of_digits_is_not_json(tmp_path: Path) -> None:
    entry = '{"a":{"dtype":"F32","shape":[' + "9" * 5000 + '],"data_offsets":[0,4]}}'
    path = write_raw(tmp_path / "big.safetensors", entry, b"\0" * 4)
    diag = header_error(path).diagnostics[0]
    assert diag.code == "header-not-json"
    assert diag.message.startswith("the header is not valid JSON: Exceeds the limit (4300 digits)")


def test_zero_element_shape_with_a_dimension_over_int64_is_refused(tmp_path: Path) -> None:
    entry = {"a": {"dtype": "F32", "shape": [2**70, 0], "data_offsets": [0, 0]}}
    path = write_raw(tmp_path / "huge.safetensors", json.dumps(entry))
    diag = header_error(path).diagnostics[0]
    assert diag.code == "bad-shape"
    assert diag.key == "a"
    assert diag.message == f"shape [{2**70}, 0] has a dimension over 2**63 - 1"


def test_largest_int64_dimension_with_zero_elements_is_read(tmp_path: Path) -> None:
    entry = {"a": {"dtype": "F32", "shape": [2**63 - 1, 0], "data_offsets": [0, 0]}}
    path = write_raw(tmp_path / "edge.safetensors", json.dumps(entry))
    with open_checkpoint(path) as reader:
        assert tuple(reader.get("a").shape) == (2**63 - 1, 0)


def test_lone_surrogate_tensor_name_is_refused(tmp_path: Path) -> None:
    entry = '{"\\ud800":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
    path = write_raw(tmp_path / "sur.safetensors", entry, b"\0" * 4)
    diag = header_error(path).diagnostics[0]
    assert diag.code == "header-not-utf8"
    assert diag.message == (
        "the header has the name '\\ud800', which is not valid Unicode (a lone surrogate escape)"
    )


def test_lone_surrogate_metadata_value_is_refused(tmp_path: Path) -> None:
    path = write_raw(tmp_path / "surm.safetensors", '{"__metadata__":{"k":"x\\udc80"}}')
    diag = header_error(path).diagnostics[0]
    assert diag.code == "header-not-utf8"
    assert diag.message == "__metadata__ value 'k' is not valid Unicode (a lone surrogate escape)"


def test_show_cli_on_surrogate_name_is_an_error_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    entry = '{"\\ud800":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
    path = write_raw(tmp_path / "sur.safetensors", entry, b"\0" * 4)
    assert main(["show", "--json", "--no-hashes", str(path)]) == 1
    err = capsys.readouterr().err
    assert str(path) in err
    assert "lone surrogate" in err


@pytest.mark.parametrize(
    "recipe",
    [
        '{"type": "webui", "multiplier": NaN}',
        '{"a": Infinity}',
        "[" * 50000,
        '{"a":' + "[" * 50000 + "]" * 50000 + "}",
    ],
)
def test_show_json_is_valid_json_for_odd_sd_merge_recipe(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], recipe: str
) -> None:
    document = {"__metadata__": {"sd_merge_recipe": recipe}}
    path = write_raw(tmp_path / "meta.safetensors", json.dumps(document))
    assert main(["show", "--json", "--no-hashes", str(path)]) == 0
    shown = json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(c))
    assert shown["recipe"]["sd_merge_recipe"] is None
    assert shown["recipe"]["problems"] == ["sd_merge_recipe is not a JSON object"]


def test_ckpt_with_meta_device_tensor_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "meta.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2, device="meta")}}, path)
    with pytest.raises(CheckpointError) as info:
        open_checkpoint(path)
    diag = info.value.diagnostics[0]
    assert info.value.path == str(path)
    assert diag.code == "unsupported-dtype"
    assert diag.key == "w"
    assert diag.message == "the tensor is on the meta device: the file holds its shape but no data"


def test_writer_refuses_lone_surrogate_key_and_metadata(tmp_path: Path) -> None:
    target = tmp_path / "out.safetensors"
    with pytest.raises(OutputError) as info:
        SafetensorsWriter(target, [OutputEntry("\ud800", "F16", (1,))])
    assert info.value.diagnostics[0].code == "bad-entry"
    with pytest.raises(OutputError) as info:
        SafetensorsWriter(target, [], metadata={"k": "\udc80"})
    assert info.value.diagnostics[0].code == "bad-metadata"
    assert list(tmp_path.iterdir()) == []


def test_writer_refuses_a_dimension_over_int64(tmp_path: Path) -> None:
    with pytest.raises(OutputError) as info:
        SafetensorsWriter(tmp_path / "out.safetensors", [OutputEntry("a", "F32", (2**63, 0))])
    assert info.value.diagnostics[0].code == "bad-entry"
    assert list(tmp_path.iterdir()) == []


def test_writer_round_trips_unicode_scalars_empty_and_strided(tmp_path: Path) -> None:
    target = tmp_path / "out.safetensors"
    strided = torch.arange(6.0).reshape(2, 3).t()
    entries = [
        OutputEntry("ключ→😀", "F32", (3, 2)),
        OutputEntry("scalar", "F64", ()),
        OutputEntry("empty", "F16", (0, 4)),
    ]
    with SafetensorsWriter(target, entries, metadata={"título": "ñ😀"}) as writer:
        writer.write("ключ→😀", strided)
        writer.write("scalar", torch.tensor(2.5, dtype=torch.float64))
    with open_checkpoint(target) as reader:
        assert reader.get("ключ→😀").tolist() == [[0.0, 3.0], [1.0, 4.0], [2.0, 5.0]]
        assert reader.get("scalar").item() == 2.5
        assert tuple(reader.get("empty").shape) == (0, 4)
        assert dict(reader.metadata) == {"título": "ñ😀"}


UNET = "model.diffusion_model."


def part(arch: str, prefix: str) -> dict[str, tuple[int, ...]]:
    return {k: v for k, v in checkpoint_layout(arch, scale=1 / 40).items() if k.startswith(prefix)}


def detect_error(shapes: dict[str, tuple[int, ...]]) -> tuple[str, str | None]:
    with pytest.raises(CheckpointError) as info:
        detect(shapes, path="x.safetensors")
    diag = info.value.diagnostics[0]
    assert diag.code == "unknown-architecture"
    return diag.message, diag.hint


def test_vae_only_file_is_named_as_such() -> None:
    message, hint = detect_error(part("sd1", "first_stage_model."))
    assert message == (
        "not a whole checkpoint: the file has no U-Net keys; it holds only the VAE (248 keys)"
    )
    assert hint == "a VAE file is baked into an output with the save's vae= option"


def test_standalone_vae_without_prefix_is_named_as_such() -> None:
    shapes = {
        k.removeprefix("first_stage_model."): v
        for k, v in part("sd1", "first_stage_model.").items()
    }
    message, _ = detect_error(shapes)
    assert message == (
        "not a whole checkpoint: the file has no U-Net keys; it holds a VAE on its own "
        "(without the first_stage_model. prefix) (248 keys)"
    )


def test_text_encoder_only_file_is_named_as_such() -> None:
    message, hint = detect_error(part("sdxl", "conditioner."))
    assert message == (
        "not a whole checkpoint: the file has no U-Net keys; it holds only the text encoder "
        "CLIP ViT-L/14 and the text encoder OpenCLIP ViT-bigG/14 (587 keys)"
    )
    assert hint == "mergelang merges whole checkpoints (at least a U-Net)"


def test_lora_file_is_named_as_such() -> None:
    shapes = {
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": (4, 320, 1, 1),
        "lora_unet_down_blocks_0_attentions_0_proj_in.alpha": (),
        "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": (3072, 4),
    }
    message, hint = detect_error(shapes)
    assert message.startswith(
        "not a checkpoint: 3 of the file's 3 keys are LoRA-style network weights, e.g. "
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight, "
    )
    assert hint == "mergelang merges whole checkpoints; apply the LoRA to a checkpoint first"


def test_refiner_like_file_without_clip_l_is_still_sdxl() -> None:
    shapes = {
        k: v
        for k, v in checkpoint_layout("sdxl", scale=1 / 40).items()
        if not k.startswith("conditioner.embedders.0.")
    }
    found = detect(shapes)
    assert found.arch.name == "sdxl"
    assert "no text encoder CLIP ViT-L/14 in this file" in found.notes
