from __future__ import annotations

import hashlib
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mergelang.arch import detect
from mergelang.arch.layout import checkpoint_layout
from mergelang.io.readers import open_checkpoint
from mergelang.io.safetensors_header import read_safetensors_header
from mergelang.testing import (
    DEFAULT_SCALE,
    demo_models,
    key_seed,
    main,
    make_checkpoint,
    make_ckpt,
    synthetic_tensor,
)

POSITION_IDS = "cond_stage_model.transformer.text_model.embeddings.position_ids"
TOKEN_EMBEDDING = "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"


def test_the_file_has_every_key_of_the_layout(tmp_path: Path) -> None:
    path = make_checkpoint(tmp_path / "sd1.safetensors", "sd1", metadata={"note": "x"})
    header = read_safetensors_header(path)
    layout = checkpoint_layout("sd1", scale=DEFAULT_SCALE)
    assert list(header.tensors) == list(layout)
    assert header.shapes() == layout
    dtypes = {info.dtype for key, info in header.tensors.items() if key != POSITION_IDS}
    assert dtypes == {"F16"}
    assert header.tensors[POSITION_IDS].dtype == "I64"
    assert header.metadata == {"note": "x"}


def test_same_seed_gives_identical_bytes_and_another_seed_does_not(tmp_path: Path) -> None:
    a = make_checkpoint(tmp_path / "a.safetensors", "sd2", seed=7)
    b = make_checkpoint(tmp_path / "b.safetensors", "sd2", seed=7)
    c = make_checkpoint(tmp_path / "c.safetensors", "sd2", seed=8)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    assert a.stat().st_size == c.stat().st_size


def test_values_depend_on_seed_and_key_only_not_on_order(tmp_path: Path) -> None:
    layout = checkpoint_layout("sd1", scale=DEFAULT_SCALE)
    keys = list(layout)
    forward = {k: synthetic_tensor(k, layout[k], seed=3) for k in keys}
    backward = {k: synthetic_tensor(k, layout[k], seed=3) for k in reversed(keys)}
    assert all(torch.equal(forward[k], backward[k]) for k in keys)
    path = make_checkpoint(tmp_path / "x.safetensors", "sd1", seed=3)
    with open_checkpoint(path) as reader:
        for key in (keys[0], keys[500], TOKEN_EMBEDDING, keys[-1]):
            assert torch.equal(reader.get(key), forward[key])
    # the same key keeps its values in a layout with more keys (EMA, schedule)
    bigger = make_checkpoint(tmp_path / "y.safetensors", "sd1", seed=3, ema=True, schedule=True)
    with open_checkpoint(bigger) as reader:
        assert torch.equal(reader.get(TOKEN_EMBEDDING), forward[TOKEN_EMBEDDING])


def test_key_seed_is_sha256_of_seed_and_key() -> None:
    digest = hashlib.sha256(b"5\x00betas").digest()
    assert key_seed(5, "betas") == int.from_bytes(digest[:8], "little") & (2**63 - 1)
    assert key_seed(5, "a") != key_seed(6, "a")


def test_float_values_are_small_gaussians() -> None:
    t = synthetic_tensor(TOKEN_EMBEDDING, (4000, 64), dtype="F32")
    assert t.dtype == torch.float32
    assert abs(t.mean().item()) < 0.001
    assert t.std().item() == pytest.approx(0.02, rel=0.02)


def test_special_keys() -> None:
    ids = synthetic_tensor(POSITION_IDS, (1, 77))
    assert ids.dtype == torch.int64
    assert torch.equal(ids, torch.arange(77).reshape(1, 77))
    assert synthetic_tensor("model_ema.num_updates", ()).dtype == torch.int32
    decay = synthetic_tensor("model_ema.decay", (), dtype="F32")
    assert decay.item() == pytest.approx(0.9999)


def test_schedule_buffers_are_the_sd_linear_schedule() -> None:
    betas = synthetic_tensor("betas", (1000,), dtype="F64")
    cumprod = synthetic_tensor("alphas_cumprod", (1000,), dtype="F64")
    coef1 = synthetic_tensor("posterior_mean_coef1", (1000,), dtype="F64")
    assert betas[0].item() == pytest.approx(0.00085)
    assert betas[-1].item() == pytest.approx(0.012)
    b10 = (math.sqrt(0.00085) + 10 * (math.sqrt(0.012) - math.sqrt(0.00085)) / 999) ** 2
    assert betas[10].item() == pytest.approx(b10)
    product = 1.0
    for i in range(11):
        product *= 1.0 - betas[i].item()
    assert cumprod[10].item() == pytest.approx(product)
    expected = betas[10].item() * math.sqrt(cumprod[9].item()) / (1.0 - cumprod[10].item())
    assert coef1[10].item() == pytest.approx(expected)


@pytest.mark.parametrize(("dtype", "code"), [("BF16", "BF16"), ("fp32", "F32"), ("F16", "F16")])
def test_dtypes(tmp_path: Path, dtype: str, code: str) -> None:
    path = make_checkpoint(tmp_path / "m.safetensors", "sd1", dtype=dtype, ema=True)
    header = read_safetensors_header(path)
    assert header.tensors["model.diffusion_model.out.2.weight"].dtype == code
    assert header.tensors["model_ema.num_updates"].dtype == "I32"


def test_unknown_dtype_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unsupported float dtype 'int8'"):
        make_checkpoint(tmp_path / "m.safetensors", "sd1", dtype="int8")
    assert not (tmp_path / "m.safetensors").exists()


def test_variants_and_options_are_detected(tmp_path: Path) -> None:
    path = make_checkpoint(
        tmp_path / "xl.safetensors", "sdxl", variant="inpainting", omit_optional=True
    )
    found = detect(read_safetensors_header(path).shapes())
    assert (found.arch.name, found.variant) == ("sdxl", "inpainting")
    assert len(read_safetensors_header(path).tensors) == 2515 - 35


def test_overwrite_is_the_default_and_can_be_refused(tmp_path: Path) -> None:
    from mergelang.errors import OutputError

    path = make_checkpoint(tmp_path / "m.safetensors", "sd1", seed=1)
    make_checkpoint(path, "sd1", seed=2)
    with pytest.raises(OutputError):
        make_checkpoint(path, "sd1", seed=3, overwrite=False)
    assert (
        path.read_bytes() == make_checkpoint(tmp_path / "n.safetensors", "sd1", seed=2).read_bytes()
    )


def test_make_ckpt_holds_the_same_tensors(tmp_path: Path) -> None:
    path = make_ckpt(tmp_path / "m.ckpt", "sd2", seed=4, ema=True, extra={"global_step": 470000})
    payload = torch.load(path, map_location="cpu", weights_only=True)
    assert payload["global_step"] == 470000
    state = payload["state_dict"]
    layout = checkpoint_layout("sd2", scale=DEFAULT_SCALE, ema=True)
    assert list(state) == list(layout)
    key = "cond_stage_model.model.transformer.resblocks.3.attn.in_proj_weight"
    assert torch.equal(state[key], synthetic_tensor(key, layout[key], seed=4))
    bare = make_ckpt(tmp_path / "bare.ckpt", "sd1", wrap=False)
    assert "state_dict" not in torch.load(bare, map_location="cpu", weights_only=True)
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []


def test_make_ckpt_refuses_big_scales(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="built in memory"):
        make_ckpt(tmp_path / "m.ckpt", "sdxl", scale=0.5)
    assert not (tmp_path / "m.ckpt").exists()


def test_demo_models(tmp_path: Path) -> None:
    made = demo_models(tmp_path / "demo")
    assert list(made) == [
        "sd15-base",
        "sd15-anime",
        "sd15-photo",
        "sd15-inpainting",
        "sdxl-base",
        "sdxl-art",
        "flux-base",
        "flux-art",
        "sd35-base",
        "sd35-art",
    ]
    expected = {
        "sd15-base": ("sd1", "normal"),
        "sd15-anime": ("sd1", "normal"),
        "sd15-photo": ("sd1", "normal"),
        "sd15-inpainting": ("sd1", "inpainting"),
        "sdxl-base": ("sdxl", "normal"),
        "sdxl-art": ("sdxl", "normal"),
        "flux-base": ("flux-dev", "normal"),
        "flux-art": ("flux-dev", "normal"),
        "sd35-base": ("sd35-medium", "normal"),
        "sd35-art": ("sd35-medium", "normal"),
    }
    for name, path in made.items():
        assert path == tmp_path / "demo" / f"{name}.safetensors"
        header = read_safetensors_header(path)
        found = detect(header.shapes())
        assert (found.arch.name, found.variant) == expected[name]
        assert header.metadata["modelspec.title"] == name
    assert made["sd15-base"].read_bytes() != made["sd15-anime"].read_bytes()


def test_cli_make_and_demo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "cli.safetensors"
    assert main(["make", "sd2", str(target), "--scale", "0.05", "--seed", "9", "--ema"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{target}  sd2  ")
    reference = make_checkpoint(tmp_path / "ref.safetensors", "sd2", scale=0.05, seed=9, ema=True)
    assert target.read_bytes() == reference.read_bytes()
    assert main(["make", "sd1", str(tmp_path / "c.ckpt"), "--ckpt"]) == 0
    assert main(["make", "sd1", str(tmp_path / "bad.safetensors"), "--dtype", "q4"]) == 2
    assert "unsupported float dtype 'q4'" in capsys.readouterr().err
    assert main(["demo", str(tmp_path / "demo")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 10
    assert lines[6].split()[:2] == ["flux-base", "flux-dev"]
    assert lines[0].split()[:2] == ["sd15-base", "sd1"]
    assert lines[0].endswith(str(tmp_path / "demo" / "sd15-base.safetensors"))


def test_cli_make_bare(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "bare.safetensors"
    assert main(["make", "flux-schnell", str(target), "--scale", "0.00625", "--bare"]) == 0
    assert capsys.readouterr().out.startswith(f"{target}  flux-schnell  ")
    header = read_safetensors_header(target)
    assert len(header.shapes()) == 776
    assert all(not key.startswith("model.") for key in header.shapes())
    assert detect(header.shapes()).arch.name == "flux-schnell"
    assert main(["make", "flux-dev", str(tmp_path / "b.ckpt"), "--bare", "--ckpt"]) == 2
    assert "--bare writes .safetensors files only" in capsys.readouterr().err


def test_python_dash_m_entry(tmp_path: Path) -> None:
    target = tmp_path / "m.safetensors"
    done = subprocess.run(
        [sys.executable, "-m", "mergelang.testing", "make", "sd1", str(target), "--seed", "2"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (
        target.read_bytes()
        == make_checkpoint(tmp_path / "r.safetensors", "sd1", seed=2).read_bytes()
    )
