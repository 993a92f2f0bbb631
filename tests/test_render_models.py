"""``mergelang render`` for SD2 and SDXL: the OpenCLIP conversion checked tensor by tensor,
the configs of full-size models, and real diffusers renders of synthetic SD2 and SDXL models
at a tiny width (the images are noise; the pipeline is the real one)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from mergelang.arch.layout import checkpoint_layout
from mergelang.errors import UsageError
from mergelang.render.configs import unet_config
from mergelang.render.open_clip import open_clip_layers, open_clip_to_hf
from mergelang.render.pipeline import prediction_for
from mergelang.report.pnginfo import parse_a1111, read_png_text
from mergelang.testing import checkpoint_tensors

HAS_DIFFUSERS = all(
    importlib.util.find_spec(name) is not None
    for name in ("diffusers", "transformers", "PIL", "open_clip")
)
needs_render = pytest.mark.skipif(not HAS_DIFFUSERS, reason="the render extra is not installed")

G = "conditioner.embedders.1.model."
H = "cond_stage_model.model."
XL_SCALE = 1 / 32
"""A width scale at which SDXL's label_emb input is the pooled width plus six equal parts."""


def _open_clip(arch: str, prefix: str, scale: float, gain: float = 1.0) -> dict[str, torch.Tensor]:
    """The text encoder's tensors in float32, ``gain`` times the synthetic N(0, 0.02)."""
    return {
        k: v.float()
        for k, v in checkpoint_tensors(arch, scale=scale, seed=3)
        if k.startswith(prefix)
    }


def test_in_proj_is_split_into_equal_q_k_v_slices() -> None:
    tensors = _open_clip("sdxl", G, XL_SCALE)
    layers = open_clip_layers(tensors, G)
    assert layers == 32
    state = open_clip_to_hf(tensors, G, layers=layers, projection=True)
    width = tensors[G + "token_embedding.weight"].shape[1]
    for n in (0, 31):
        fused = tensors[f"{G}transformer.resblocks.{n}.attn.in_proj_weight"]
        bias = tensors[f"{G}transformer.resblocks.{n}.attn.in_proj_bias"]
        assert fused.shape == (3 * width, width)
        for index, part in enumerate(("q_proj", "k_proj", "v_proj")):
            rows = slice(index * width, (index + 1) * width)
            weight = state[f"encoder.layers.{n}.self_attn.{part}.weight"]
            assert weight.shape == (width, width)
            assert torch.equal(weight, fused[rows])
            assert torch.equal(state[f"encoder.layers.{n}.self_attn.{part}.bias"], bias[rows])
        # q, k and v stacked again give the fused matrix back
        again = torch.cat(
            [
                state[f"encoder.layers.{n}.self_attn.{p}.weight"]
                for p in ("q_proj", "k_proj", "v_proj")
            ]
        )
        assert torch.equal(again, fused)


def test_the_rest_is_renamed_and_the_projection_transposed() -> None:
    tensors = _open_clip("sdxl", G, XL_SCALE)
    state = open_clip_to_hf(tensors, G, layers=32, projection=True)
    renamed = {
        "embeddings.token_embedding.weight": "token_embedding.weight",
        "embeddings.position_embedding.weight": "positional_embedding",
        "final_layer_norm.weight": "ln_final.weight",
        "final_layer_norm.bias": "ln_final.bias",
        "encoder.layers.5.layer_norm1.weight": "transformer.resblocks.5.ln_1.weight",
        "encoder.layers.5.layer_norm2.bias": "transformer.resblocks.5.ln_2.bias",
        "encoder.layers.5.self_attn.out_proj.bias": "transformer.resblocks.5.attn.out_proj.bias",
        "encoder.layers.5.mlp.fc1.weight": "transformer.resblocks.5.mlp.c_fc.weight",
        "encoder.layers.5.mlp.fc2.bias": "transformer.resblocks.5.mlp.c_proj.bias",
    }
    for new, old in renamed.items():
        assert state[new] is tensors[G + old]
    projection = tensors[G + "text_projection"]
    assert torch.equal(state["text_projection.weight"], projection.T)
    x = torch.randn(2, projection.shape[0])
    # x @ text_projection (OpenCLIP) is the linear layer with the transposed weight
    assert torch.allclose(
        torch.nn.functional.linear(x, state["text_projection.weight"]), x @ projection, atol=1e-6
    )
    # every key of the file but logit_scale has a place: 4 top-level, 16 per block, projection
    assert len(state) == 4 + 32 * 16 + 1
    assert not any("logit_scale" in k for k in state)


def test_sd2_keeps_the_blocks_below_the_last_and_no_projection() -> None:
    tensors = _open_clip("sd2", H, 1 / 40)
    state = open_clip_to_hf(tensors, H, layers=23, projection=False)
    assert not any(k.startswith("encoder.layers.23.") for k in state)
    assert "encoder.layers.22.mlp.fc2.weight" in state
    assert "text_projection.weight" not in state
    assert len(state) == 4 + 23 * 16


def _full_shapes(arch: str) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v) for k, v in checkpoint_layout(arch).items()}


def test_full_size_configs_are_the_published_ones() -> None:
    xl = unet_config(_full_shapes("sdxl"), "sdxl")
    assert xl["block_out_channels"] == [320, 640, 1280]
    assert xl["attention_head_dim"] == [5, 10, 20]
    assert xl["transformer_layers_per_block"] == [1, 2, 10]
    assert xl["cross_attention_dim"] == 2048
    assert (xl["addition_embed_type"], xl["addition_time_embed_dim"]) == ("text_time", 256)
    assert xl["projection_class_embeddings_input_dim"] == 2816
    assert xl["down_block_types"] == ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"]
    sd2 = unet_config(_full_shapes("sd2"), "sd2")
    assert sd2["attention_head_dim"] == [5, 10, 20, 20]
    assert (sd2["cross_attention_dim"], sd2["use_linear_projection"]) == (1024, True)
    assert sd2["upcast_attention"] is True
    sd1 = unet_config(_full_shapes("sd1"), "sd1")
    assert (sd1["attention_head_dim"], sd1["cross_attention_dim"]) == (8, 768)
    assert "upcast_attention" not in sd1 and "addition_embed_type" not in sd1


def test_the_prediction_comes_from_the_file_then_the_architecture() -> None:
    assert prediction_for("sdxl", {"a"}, {}) == "eps"
    assert prediction_for("sdxl", {"v_pred"}, {}) == "v"
    assert prediction_for("sdxl", {"v_pred", "ztsnr"}, {}) == "v_ztsnr"
    assert prediction_for("sd2", {"a"}, {}) == "v"
    assert prediction_for("sd2", {"a"}, {"modelspec.predict_key": "epsilon"}) == "eps"
    assert prediction_for("sd1", {"a"}, {"modelspec.predict_key": "v"}) == "v"
    assert prediction_for("sd2", {"a"}, {}, "eps") == "eps"
    with pytest.raises(UsageError, match="--prediction x"):
        prediction_for("sd2", {"a"}, {}, "x")


def test_sdxl_size_embeddings_must_divide_evenly() -> None:
    from mergelang.errors import CheckpointError

    shapes = {k: tuple(v) for k, v in checkpoint_layout("sdxl", scale=1 / 40).items()}
    with pytest.raises(CheckpointError, match=r"label_emb takes 72 values.*pooled text \(32\)"):
        unet_config(shapes, "sdxl", where="xl.safetensors")


def _render(tmp_path: Path, arch: str, scale: float, blocks: str) -> tuple[list[Path], str]:
    import mergelang
    from mergelang.cli import main
    from mergelang.testing import make_checkpoint

    base = make_checkpoint(tmp_path / "base.safetensors", arch, seed=1, scale=scale)
    recipe = tmp_path / "study.merge"
    recipe.write_text(
        'model base = "base.safetensors"\n'
        f"for blk in [{blocks}]:\n"
        '    save base * {blk: 0.5, default: 1} to "out/base-{blk}.safetensors"\n',
        encoding="utf-8",
    )
    mergelang.run(recipe, cache_dir=tmp_path / "cache")
    (tmp_path / "params.txt").write_text(
        "a lighthouse\nNegative prompt: fog\nSteps: 2, Sampler: Euler, CFG scale: 5, "
        "Seed: 1-2, Size: 64x64\n",
        "utf-8",
    )
    argv = ["render", "study.merge", "--params", "params.txt", "--reference", "base.safetensors"]
    assert main([*argv, "--images", "renders", "-o", "study.html"]) == 0
    outputs = [tmp_path / f"out/base-{b.strip()}.safetensors" for b in blocks.split(",")]
    return [base, *outputs], (tmp_path / "study.html").read_text(encoding="utf-8")


def _check_images(tmp_path: Path, models: list[Path]) -> None:
    from PIL import Image

    from mergelang.io.hashing import file_hashes

    for model in models:
        autov2 = file_hashes(model).autov2
        for seed in (1, 2):
            image = tmp_path / "renders" / f"{model.stem}-{seed}.png"
            with Image.open(image) as opened:
                assert opened.size == (64, 64)
            info = parse_a1111(read_png_text(image)["parameters"])
            assert (info.model_hash, info.model_name, info.seed) == (autov2, model.stem, seed)
    first = (tmp_path / "renders" / "base-1.png").read_bytes()
    assert first != (tmp_path / "renders" / "base-2.png").read_bytes()


@needs_render
def test_sdxl_renders_end_to_end_and_the_page_matches(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MERGELANG_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    models, page = _render(tmp_path, "sdxl", XL_SCALE, "IN04")
    _check_images(tmp_path, models)
    out = capsys.readouterr().out
    assert "wrote study.html: 1 outputs in the U, 4 images, seeds 1, 2" in out
    assert "reference base (2 images)" in out
    assert 'src="renders/base-IN04-1.png"' in page


@needs_render
def test_sd2_renders_end_to_end_and_the_page_matches(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MERGELANG_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    models, page = _render(tmp_path, "sd2", 1 / 40, "IN04, OUT11")
    _check_images(tmp_path, models)
    out = capsys.readouterr().out
    assert "wrote study.html: 2 outputs in the U, 6 images, seeds 1, 2" in out
    assert 'src="renders/base-OUT11-2.png"' in page


@needs_render
def test_sdxl_without_the_pooled_head_is_refused_by_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mergelang.cli import main
    from mergelang.testing import make_checkpoint

    monkeypatch.setenv("MERGELANG_CACHE", str(tmp_path / "cache"))
    model = make_checkpoint(
        tmp_path / "xl.safetensors", "sdxl", seed=1, scale=XL_SCALE, omit_optional=True
    )
    argv = ["render", str(model), "--prompt", "a cat", "--images", str(tmp_path / "r")]
    assert main([*argv, "--size", "64x64", "--steps", "1", "--no-page"]) == 1
    err = capsys.readouterr().err
    assert "xl.safetensors" in err and "OpenCLIP ViT-bigG/14 text encoder lacks" in err
    assert not any((tmp_path / "r").glob("*.png"))


def _open_clip_forward(
    tensors: dict[str, torch.Tensor], prefix: str, ids: torch.Tensor, layers: int, heads: int
) -> list[torch.Tensor]:
    """OpenCLIP's text transformer written out with torch's own modules (its attention is
    ``nn.MultiheadAttention`` holding the fused ``in_proj_weight``): the hidden state after
    the embeddings and after each block."""
    functional = torch.nn.functional
    x = tensors[prefix + "token_embedding.weight"][ids] + tensors[prefix + "positional_embedding"]
    width = x.shape[-1]
    mask = torch.full((ids.shape[1], ids.shape[1]), float("-inf")).triu(1)
    states = [x]
    for n in range(layers):
        block = f"{prefix}transformer.resblocks.{n}."
        attention = torch.nn.MultiheadAttention(width, heads, batch_first=True)
        attention.load_state_dict(
            {
                "in_proj_weight": tensors[block + "attn.in_proj_weight"],
                "in_proj_bias": tensors[block + "attn.in_proj_bias"],
                "out_proj.weight": tensors[block + "attn.out_proj.weight"],
                "out_proj.bias": tensors[block + "attn.out_proj.bias"],
            }
        )

        def norm(name: str, value: torch.Tensor, block: str = block) -> torch.Tensor:
            weight, bias = tensors[f"{block}{name}.weight"], tensors[f"{block}{name}.bias"]
            return functional.layer_norm(value, (width,), weight, bias)

        h = norm("ln_1", x)
        x = x + attention(h, h, h, attn_mask=mask, need_weights=False)[0]
        h = functional.linear(
            norm("ln_2", x), tensors[block + "mlp.c_fc.weight"], tensors[block + "mlp.c_fc.bias"]
        )
        h = functional.gelu(h)
        x = x + functional.linear(
            h, tensors[block + "mlp.c_proj.weight"], tensors[block + "mlp.c_proj.bias"]
        )
        states.append(x)
    return states


@needs_render
def test_converted_bigg_computes_what_open_clip_computes() -> None:
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    from mergelang.arch.sdxl import OPEN_CLIP_BIGG
    from mergelang.render.configs import open_clip_config

    tensors = _open_clip("sdxl", G, XL_SCALE, gain=15)
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    config = open_clip_config(shapes, G, OPEN_CLIP_BIGG, 32)
    model = CLIPTextModelWithProjection(CLIPTextConfig(**config)).eval()
    state = open_clip_to_hf(tensors, G, layers=32, projection=True)
    missing, unexpected = model.load_state_dict(
        {k if k.startswith("text_") else "text_model." + k: v for k, v in state.items()},
        strict=False,
    )
    assert [k for k in missing if "position_ids" not in k] == [] and unexpected == []
    vocab = shapes[G + "token_embedding.weight"][0]
    ids = torch.tensor([[49406 % vocab, 3, 17, 5, 49407 % vocab] + [0] * 72])
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
        expected = _open_clip_forward(tensors, G, ids, 32, config["num_attention_heads"])
    assert len(out.hidden_states) == 33
    # the penultimate block's output, which SDXL conditions on
    assert torch.allclose(out.hidden_states[-2], expected[-2], rtol=1e-5, atol=1e-7)
    # the pooled output: the final norm at the end-of-text token, times text_projection
    final = torch.nn.functional.layer_norm(
        expected[-1],
        (expected[-1].shape[-1],),
        tensors[G + "ln_final.weight"],
        tensors[G + "ln_final.bias"],
    )
    pooled = final[0, 4] @ tensors[G + "text_projection"]
    assert torch.allclose(out.text_embeds[0], pooled, rtol=1e-5, atol=1e-7)


@needs_render
def test_converted_vit_h_is_sd2s_penultimate_block_then_the_final_norm() -> None:
    from transformers import CLIPTextConfig, CLIPTextModel

    from mergelang.arch.sd2 import OPEN_CLIP_H
    from mergelang.render.configs import open_clip_config

    tensors = _open_clip("sd2", H, 1 / 40, gain=15)
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    config = open_clip_config(shapes, H, OPEN_CLIP_H, 23)
    model = CLIPTextModel(CLIPTextConfig(**config)).eval()
    missing, unexpected = model.load_state_dict(
        open_clip_to_hf(tensors, H, layers=23, projection=False), strict=False
    )
    assert [k for k in missing if "position_ids" not in k] == [] and unexpected == []
    vocab = shapes[H + "token_embedding.weight"][0]
    ids = torch.tensor([[49406 % vocab, 9, 49407 % vocab] + [0] * 74])
    with torch.no_grad():
        got = model(ids)[0]
        states = _open_clip_forward(tensors, H, ids, 24, config["num_attention_heads"])
    width = states[0].shape[-1]
    expected = torch.nn.functional.layer_norm(
        states[-2], (width,), tensors[H + "ln_final.weight"], tensors[H + "ln_final.bias"]
    )
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-7)


@needs_render
def test_openclip_tokenizers_pad_with_token_zero() -> None:
    from mergelang.render.tokenizer import clip_tokenizer

    clip = clip_tokenizer()("a cat", padding="max_length", max_length=77).input_ids
    open_clip = clip_tokenizer(pad_token="!")("a cat", padding="max_length", max_length=77)
    assert clip[:6] == [49406, 320, 2368, 49407, 49407, 49407] and len(clip) == 77
    assert open_clip.input_ids[:6] == [49406, 320, 2368, 49407, 0, 0]
    assert open_clip.input_ids[4:] == [0] * 73
