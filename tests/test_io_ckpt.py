"""Weights-only pickle loading (malicious files refused) and the legacy .ckpt writer."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from mergelang.errors import CheckpointError, OutputError
from mergelang.io.ckpt import UNSAFE_HINT, CkptReader, save_ckpt
from mergelang.io.readers import SafetensorsReader, open_checkpoint
from mergelang.io.writer import OutputEntry, SafetensorsWriter


class CreatesMarker:
    """Unpickling this object opens (creates) the marker file: code run by the pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def refusal(path: Path) -> CheckpointError:
    with pytest.raises(CheckpointError) as caught:
        CkptReader(path)
    return caught.value


def test_the_payload_really_runs_code_when_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "control-marker"
    pickle.loads(pickle.dumps(CreatesMarker(marker))).close()
    assert marker.exists()


@pytest.mark.parametrize("layout", ["zip", "legacy", "plain-pickle"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path: Path, layout: str) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "evil.ckpt"
    payload = {"state_dict": {"w": torch.ones(2), "evil": CreatesMarker(marker)}}
    if layout == "zip":
        torch.save(payload, path)
    elif layout == "legacy":
        torch.save(payload, path, _use_new_zipfile_serialization=False)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    error = refusal(path)
    diag = error.diagnostics[0]
    assert diag.code == "unsafe-pickle"
    assert "refuses to run code from a pickle" in diag.message
    assert diag.hint == UNSAFE_HINT
    assert diag.path == str(path)
    assert not marker.exists()

    with pytest.raises(CheckpointError):
        open_checkpoint(path)
    assert not marker.exists()


def test_refusal_names_what_the_pickle_asks_for(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"x": CreatesMarker(tmp_path / "m")}, path)
    message = refusal(path).diagnostics[0].message
    assert "(it asks for" in message and "open" in message


def sample() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(5)
    return {
        "model.diffusion_model.out.2.weight": torch.randn(4, 3, generator=generator).half(),
        "cond_stage_model.transformer.text_model.embeddings.position_ids": torch.arange(77).reshape(
            1, 77
        ),
        "bf": torch.randn(5, generator=generator).to(torch.bfloat16),
        "scalar": torch.tensor(0.5, dtype=torch.float64),
    }


def test_save_ckpt_round_trip(tmp_path: Path) -> None:
    tensors = sample()
    path = save_ckpt(tmp_path / "out" / "model.ckpt", tensors)
    assert path == tmp_path / "out" / "model.ckpt"
    assert [p.name for p in path.parent.iterdir()] == ["model.ckpt"]
    raw = torch.load(path, weights_only=True)
    assert list(raw) == ["state_dict"]
    with CkptReader(path) as reader:
        assert reader.keys() == list(tensors)
        assert reader.dropped == ()
        assert dict(reader.metadata) == {}
        assert reader.info("bf").dtype == "BF16"
        assert reader.info("scalar").shape == ()
        for key, tensor in tensors.items():
            got = reader.get(key)
            assert got.dtype == tensor.dtype
            assert torch.equal(got, tensor)


def test_non_tensor_entries_are_dropped_and_listed(tmp_path: Path) -> None:
    path = tmp_path / "trained.ckpt"
    torch.save(
        {"state_dict": {"w": torch.ones(2), "note": "x"}, "global_step": 1200, "epoch": 3}, path
    )
    with CkptReader(path) as reader:
        assert reader.keys() == ["w"]
        assert set(reader.dropped) == {"global_step", "epoch", "note"}

    bare = tmp_path / "bare.pt"
    torch.save({"w": torch.ones(2), "global_step": 5}, bare)
    with CkptReader(bare) as reader:
        assert reader.keys() == ["w"]
        assert reader.dropped == ("global_step",)


@pytest.mark.parametrize(
    "payload",
    [
        {"model": {"w": torch.ones(3)}},
        {"module": {"w": torch.ones(3)}},
        {"model": {"state_dict": {"w": torch.ones(3)}}},
        {"state_dict": {"module": {"w": torch.ones(3)}}},
    ],
)
def test_nested_state_dicts_are_unwrapped(tmp_path: Path, payload: dict[str, object]) -> None:
    path = tmp_path / "nested.pth"
    torch.save(payload, path)
    with CkptReader(path) as reader:
        assert reader.keys() == ["w"]
        assert reader.get("w").tolist() == [1.0, 1.0, 1.0]


def test_a_list_is_not_a_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "list.pt"
    torch.save([torch.ones(2)], path)
    assert refusal(path).diagnostics[0].code == "not-a-state-dict"


def test_corrupt_and_truncated_and_empty_files(tmp_path: Path) -> None:
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"PK\x03\x04" + bytes(200))
    assert refusal(junk).diagnostics[0].code == "corrupt-ckpt"

    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": sample()}, good)
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert refusal(cut).diagnostics[0].code == "corrupt-ckpt"

    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    assert refusal(empty).diagnostics[0].code == "empty-file"


def test_save_ckpt_stores_views_without_their_whole_storage(tmp_path: Path) -> None:
    big = torch.zeros(1_000_000)
    path = save_ckpt(tmp_path / "small.ckpt", {"v": big[10:20], "t": big[:6].reshape(2, 3).t()})
    assert path.stat().st_size < 20_000
    with CkptReader(path) as reader:
        assert reader.shapes() == {"v": (10,), "t": (3, 2)}


def test_save_ckpt_from_a_memory_mapped_input(tmp_path: Path) -> None:
    source = tmp_path / "in.safetensors"
    entries = [OutputEntry("a", "F32", (1000,)), OutputEntry("b", "F16", (3,))]
    with SafetensorsWriter(source, entries) as writer:
        writer.write("a", torch.arange(1000, dtype=torch.float32))
        writer.write("b", torch.ones(3, dtype=torch.float16))
    with SafetensorsReader(source) as reader:
        tensors = {key: reader.get(key) for key in reader}
        out = save_ckpt(tmp_path / "out.ckpt", {"b": tensors["b"]}, protected=[source])
    assert out.stat().st_size < 4_000
    with CkptReader(out) as reader:
        assert reader.get("b").tolist() == [1.0, 1.0, 1.0]


def test_save_ckpt_follows_the_output_policy(tmp_path: Path) -> None:
    source = save_ckpt(tmp_path / "in.ckpt", {"w": torch.ones(2)})
    before = source.read_bytes()
    with pytest.raises(OutputError) as caught:
        save_ckpt(source, {"w": torch.zeros(2)})
    assert caught.value.diagnostics[0].code == "exists"
    with pytest.raises(OutputError) as caught:
        save_ckpt(source, {"w": torch.zeros(2)}, overwrite=True, protected=[source])
    assert caught.value.diagnostics[0].code == "overwrite-input"
    assert source.read_bytes() == before
    save_ckpt(source, {"w": torch.zeros(2)}, overwrite=True)
    with CkptReader(source) as reader:
        assert reader.get("w").tolist() == [0.0, 0.0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.ckpt"]


class InterruptsWhenSaved(torch.Tensor):
    """A tensor whose serialisation is interrupted, as by Ctrl-C in the middle of a save."""

    def __reduce_ex__(self, protocol: object) -> object:  # type: ignore[override]
        raise KeyboardInterrupt


def test_interrupted_save_ckpt_leaves_nothing(tmp_path: Path) -> None:
    tensors = {"a": torch.ones(1000), "b": torch.ones(2).as_subclass(InterruptsWhenSaved)}
    with pytest.raises(KeyboardInterrupt):
        save_ckpt(tmp_path / "x.ckpt", tensors)
    assert list(tmp_path.iterdir()) == []
