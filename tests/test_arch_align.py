from __future__ import annotations

import pytest

from mergelang.arch import SD1, SDXL, align
from mergelang.arch.layout import checkpoint_layout
from mergelang.errors import CheckpointError

UNET = "model.diffusion_model."
CONV_IN = UNET + "input_blocks.0.0.weight"
POSITION_IDS = "cond_stage_model.transformer.text_model.embeddings.position_ids"


def sd1(**options: object) -> dict[str, tuple[int, ...]]:
    return checkpoint_layout("sd1", scale=1 / 40, **options)  # type: ignore[arg-type]


def test_identical_inputs_merge_everything_but_never_merged_keys() -> None:
    result = align([("a.safetensors", sd1()), ("b.safetensors", sd1())])
    assert result.arch is SD1
    assert result.paths == ("a.safetensors", "b.safetensors")
    assert len(result) == 1131
    assert result.counts() == {"merge": 1130, "copy": 0, "merge_channels": 0, "skip_merge": 1}
    assert result.keys == tuple(sd1())
    plan = result.plan(POSITION_IDS)
    assert (plan.action, plan.present_in, plan.source, plan.block) == (
        "skip_merge",
        (0, 1),
        0,
        None,
    )
    conv = result.plan(CONV_IN)
    assert (conv.action, conv.shape, conv.block) == ("merge", (8, 4, 3, 3), "IN00")
    assert result.plan(UNET + "input_blocks.10.0.in_layers.0.weight").block == "IN10"
    assert result.plan("first_stage_model.quant_conv.bias").block == "BASE"


def test_keys_present_in_only_some_inputs_are_copied_from_the_first_that_has_them() -> None:
    lean = checkpoint_layout("sdxl", scale=1 / 40, omit_optional=True)
    full = checkpoint_layout("sdxl", scale=1 / 40)
    result = align([("lean.safetensors", lean), ("full.safetensors", full), ("x", lean)])
    counts = result.counts()
    assert counts["copy"] == 34  # the 35 optional keys less position_ids, never merged
    assert counts["skip_merge"] == 1
    assert counts["merge"] == 2515 - 35
    # the union keeps the first input's order, then appends keys new in later inputs
    assert result.keys[: len(lean)] == tuple(lean)
    assert set(result.keys[len(lean) :]) == set(full) - set(lean)
    ln_final = result.plan("conditioner.embedders.1.model.ln_final.weight")
    assert (ln_final.action, ln_final.present_in, ln_final.source) == ("copy", (1,), 1)
    assert ln_final.block == "BASE"
    ids = result.plan("conditioner.embedders.0.transformer.text_model.embeddings.position_ids")
    assert (ids.action, ids.present_in, ids.source) == ("skip_merge", (1,), 1)


def test_a_key_only_the_first_input_has_is_copied_from_it() -> None:
    a = sd1()
    b = {k: v for k, v in a.items() if not k.startswith("first_stage_model.")}
    result = align([("a", a), ("b", b)])
    plan = result.plan("first_stage_model.decoder.conv_out.weight")
    assert (plan.action, plan.present_in, plan.source) == ("copy", (0,), 0)
    assert result.counts()["copy"] == 248


@pytest.mark.parametrize("order", ["normal-first", "inpainting-first"])
def test_inpainting_with_normal_merges_the_first_four_channels(order: str) -> None:
    inputs = [("normal.safetensors", sd1()), ("inpaint.safetensors", sd1(variant="inpainting"))]
    if order == "inpainting-first":
        inputs.reverse()
    result = align(inputs)
    plan = result.plan(CONV_IN)
    source = [p for p, _ in inputs].index("inpaint.safetensors")
    assert plan.action == "merge_channels"
    assert plan.shape == (8, 9, 3, 3)
    assert plan.source == source
    assert plan.merged_channels == 4
    assert plan.present_in == (0, 1)
    assert plan.block == "IN00"
    assert result.counts()["merge_channels"] == 1
    assert result.output_shapes()[CONV_IN] == (8, 9, 3, 3)


def test_three_inputs_with_two_inpainting_take_extra_channels_from_the_first_of_them() -> None:
    result = align(
        [("n", sd1()), ("i1", sd1(variant="inpainting")), ("i2", sd1(variant="inpainting"))]
    )
    plan = result.plan(CONV_IN)
    assert (plan.action, plan.source, plan.shape) == ("merge_channels", 1, (8, 9, 3, 3))


def test_pix2pix_with_normal_merges_channels_too() -> None:
    result = align([("n", sd1()), ("p", sd1(variant="pix2pix"))])
    plan = result.plan(CONV_IN)
    assert (plan.action, plan.source, plan.shape) == ("merge_channels", 1, (8, 8, 3, 3))


def test_inpainting_with_pix2pix_is_refused() -> None:
    inputs = [
        ("n.safetensors", sd1()),
        ("inpaint.safetensors", sd1(variant="inpainting")),
        ("p2p.safetensors", sd1(variant="pix2pix")),
    ]
    with pytest.raises(CheckpointError) as info:
        align(inputs)
    diag = info.value.diagnostics[0]
    assert diag.code == "shape-mismatch"
    assert diag.key == CONV_IN
    assert diag.path == "p2p.safetensors"
    assert diag.message == (
        "cannot merge an inpainting U-Net (inpaint.safetensors, 9 input channels) with an "
        "instruct-pix2pix one (p2p.safetensors, 8 input channels)"
    )


def test_other_shape_mismatches_name_the_key_both_files_and_both_shapes() -> None:
    a = sd1()
    b = dict(a)
    key = UNET + "middle_block.1.proj_in.weight"
    b[key] = (32, 32, 3, 3)
    b[UNET + "out.0.weight"] = (16,)
    with pytest.raises(CheckpointError) as info:
        align([("a.safetensors", a), ("b.safetensors", b)])
    diag = info.value.diagnostics[0]
    assert diag.code == "shape-mismatch"
    assert diag.key == key
    assert diag.path == "b.safetensors"
    assert diag.message == (
        "tensor shapes differ: a.safetensors has [32, 32, 1, 1] but b.safetensors has "
        "[32, 32, 3, 3] (1 more key differ in shape)"
    )


def test_different_scales_are_a_shape_mismatch() -> None:
    with pytest.raises(CheckpointError, match=r"tensor shapes differ: small has \[32, 8\]"):
        align([("small", sd1()), ("big", checkpoint_layout("sd1", scale=0.05))])


def test_never_merged_keys_may_differ_in_shape() -> None:
    a = sd1()
    b = dict(a)
    b[POSITION_IDS] = (77,)
    result = align([("a", a), ("b", b)])
    plan = result.plan(POSITION_IDS)
    assert (plan.action, plan.shape, plan.source) == ("skip_merge", (1, 77), 0)


def test_ema_and_schedule_are_skipped() -> None:
    result = align([("a", sd1(ema=True, schedule=True)), ("b", sd1())])
    counts = result.counts()
    assert counts["skip_merge"] == 688 + 12 + 1
    assert counts["copy"] == 0
    assert result.plan("model_ema.decay").present_in == (0,)
    assert result.plan("betas").action == "skip_merge"


@pytest.mark.parametrize(
    ("convention", "time_embed", "vae"),
    [
        ("mbw", "merge", "merge"),
        ("kohya", "merge", "merge"),
        ("supermerger", "merge", "merge"),
        ("supermerger_2023", "skip_merge", "merge"),
        ("sd_mecha", "merge", "skip_merge"),
    ],
)
def test_conventions_decide_what_is_skipped(convention: str, time_embed: str, vae: str) -> None:
    layout = checkpoint_layout("sdxl", scale=1 / 40)
    result = align([("a", layout), ("b", layout)], convention=convention)
    assert result.convention.name == convention
    assert result.plan(UNET + "time_embed.0.weight").action == time_embed
    assert result.plan(UNET + "label_emb.0.0.weight").action == time_embed
    assert result.plan("first_stage_model.encoder.conv_in.weight").action == vae
    assert result.plan(UNET + "out.2.weight").block == "OUT08"


def test_different_architectures_are_refused_naming_each_file() -> None:
    with pytest.raises(CheckpointError) as info:
        align(
            [("a.safetensors", sd1()), ("xl.safetensors", checkpoint_layout("sdxl", scale=1 / 40))]
        )
    diag = info.value.diagnostics[0]
    assert diag.code == "architecture-mismatch"
    assert diag.path == "xl.safetensors"
    assert diag.message == (
        "the inputs are of different architectures: a.safetensors is sd1 (Stable Diffusion 1.x), "
        "xl.safetensors is sdxl (Stable Diffusion XL)"
    )


def test_an_explicit_architecture_must_match_every_input() -> None:
    with pytest.raises(CheckpointError) as info:
        align([("a", sd1()), ("b", sd1())], SDXL)
    diag = info.value.diagnostics[0]
    assert diag.code == "architecture-mismatch"
    assert diag.message == (
        "every input must be sdxl (Stable Diffusion XL): a is sd1 (Stable Diffusion 1.x), "
        "b is sd1 (Stable Diffusion 1.x)"
    )
    assert align([("a", sd1())], "sd1").arch is SD1


def test_an_unknown_input_reports_its_detection_error() -> None:
    with pytest.raises(CheckpointError) as info:
        align([("a", sd1()), ("junk.bin", {"foo.weight": (3, 3)})])
    assert info.value.diagnostics[0].code == "unknown-architecture"
    assert info.value.diagnostics[0].path == "junk.bin"


def test_detected_variants_are_kept_per_input() -> None:
    result = align([("a", sd1()), ("b", sd1(variant="inpainting"))])
    assert [d.variant for d in result.detected] == ["normal", "inpainting"]
    assert CONV_IN in result and "nope" not in result
    with pytest.raises(KeyError):
        result.plan("nope")


def test_no_inputs() -> None:
    with pytest.raises(ValueError, match="at least one input"):
        align([])
