"""TIES-merging and DARE: kernels against plain-torch formulas, properties, recipes end to end.

The reference implementations below follow the documented definitions with whole tensors and
nothing from mergelang: TIES keeps every entry whose magnitude reaches the k-th largest
(k = int(density * numel), mergekit's count, at least 1), elects the sign of the sum of the
trimmed deltas (or, sd-meh's rule, the sign most of them have) and averages the deltas of
that sign; DARE draws its mask from torch.rand on a
CPU generator seeded by SHA-256 of "seed NUL key NUL index".
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import mergelang
from mergelang.arch import get_architecture
from mergelang.check import InputRef, MethodCall, check
from mergelang.errors import RecipeError
from mergelang.io.readers import SafetensorsReader
from mergelang.lang.parser import parse
from mergelang.methods import get_method
from mergelang.methods.sparse import dare, dare_mask_seed, kept_count, ties
from mergelang.testing import checkpoint_tensors, make_checkpoint

SHAPES = [(), (1,), (7,), (64, 33), (4, 3, 3, 3)]
ORIGINS = [torch.float32, torch.float16, torch.bfloat16]
ADD_DIFFERENCE = get_method("add_difference")
"""add_difference, called as the executor calls it (``out`` allocated)."""

# ---- references ------------------------------------------------------------------------------


def ref_trim(delta: torch.Tensor, density: float) -> torch.Tensor:
    numel = delta.numel()
    k = min(numel, max(1, int(density * numel)))
    threshold = delta.abs().flatten().sort(descending=True).values[k - 1]
    return torch.where(delta.abs() >= threshold, delta, torch.zeros_like(delta))


def ref_ties(
    base: torch.Tensor,
    models: Sequence[torch.Tensor],
    density: float,
    alpha: float,
    sign: str = "sum",
) -> torch.Tensor:
    trimmed = [ref_trim(x - base, density) for x in models]
    if sign == "count":
        # sd-meh / sd-mecha (vote_sgn): the sign the majority of the trimmed deltas have
        elected = torch.stack([torch.sign(t) for t in trimmed]).sum(0).sign()
    else:
        total = trimmed[0]
        for t in trimmed[1:]:
            total = total + t
        elected = torch.sign(total)
    agreeing = torch.zeros_like(base)
    count = torch.zeros_like(base)
    for t in trimmed:
        same = (torch.sign(t) == elected) & (t != 0)
        agreeing = agreeing + torch.where(same, t, torch.zeros_like(t))
        count = count + same.float()
    merged = torch.where(count > 0, agreeing / count, torch.zeros_like(base))
    return base + alpha * merged


def ref_mask(seed: int, key: str, index: int, shape: torch.Size, keep: float) -> torch.Tensor:
    digest = hashlib.sha256(f"{seed}\0{key}\0{index}".encode()).digest()
    generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") % 2**63)
    numel = math.prod(shape)
    return (torch.rand(numel, generator=generator) < keep).reshape(shape)


def ref_dare(
    base: torch.Tensor,
    models: Sequence[torch.Tensor],
    drop: float,
    alpha: float,
    seed: int,
    key: str,
) -> torch.Tensor:
    masked = []
    for index, x in enumerate(models):
        delta = x - base
        if drop != 0:
            mask = ref_mask(seed, key, index, delta.shape, 1 - drop)
            delta = torch.where(mask, delta, torch.zeros_like(delta)) * (1 / (1 - drop))
        masked.append(delta)
    total = masked[0]
    for m in masked[1:]:
        total = total + m
    return base + alpha * (total * (1 / len(models)))


def tensors(
    count: int, shape: tuple[int, ...], origin: torch.dtype, seed: int
) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [
        torch.randn(shape, generator=generator).to(origin).to(torch.float32) for _ in range(count)
    ]


# ---- TIES kernel -----------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("origin", ORIGINS)
@pytest.mark.parametrize("count", [1, 3])
def test_ties_matches_the_formula(shape: tuple[int, ...], origin: torch.dtype, count: int) -> None:
    base, *models = tensors(count + 1, shape, origin, seed=len(shape) * 10 + count)
    for density, alpha in [(0.2, 1.0), (0.5, 0.7), (1.0, -0.5), (0.35, 0.0)]:
        result = ties(base, *models, density=density, alpha=alpha)
        assert result.dtype == torch.float32 and result.shape == base.shape
        assert torch.equal(result, ref_ties(base, models, density, alpha)), (density, alpha)
    assert torch.equal(ties(base, *models, density=0.3, alpha=0.0), base)


def test_ties_keeps_every_entry_tied_at_the_threshold() -> None:
    base = torch.zeros(5)
    delta = torch.tensor([3.0, -3.0, 1.0, 1.0, 2.0])
    assert torch.equal(ties(base, delta, density=0.2, alpha=1.0), torch.tensor([3, -3, 0, 0, 0.0]))
    assert torch.equal(ties(base, delta, density=0.6, alpha=1.0), torch.tensor([3, -3, 0, 0, 2.0]))
    assert torch.equal(ties(base, delta, density=0.8, alpha=1.0), delta)
    flat = torch.full((4,), -0.5)
    assert torch.equal(ties(torch.zeros(4), flat, density=0.25, alpha=1.0), flat)


@pytest.mark.parametrize("shape", [(7,), (64, 33)])
def test_ties_elects_by_count_when_asked(shape: tuple[int, ...]) -> None:
    base, *models = tensors(4, shape, torch.float32, seed=3)
    for density in (0.2, 0.5, 1.0):
        by_count = ties(base, *models, density=density, alpha=1.0, sign="count")
        assert torch.equal(by_count, ref_ties(base, models, density, 1.0, sign="count"))
    by_sum = ties(base, *models, density=1.0, alpha=1.0)
    if by_sum.numel() > 1000:  # the rules differ where one big delta outweighs the others
        assert not torch.equal(by_count, by_sum)


def test_ties_sign_rules_differ_as_documented() -> None:
    base = torch.zeros(1)
    models = [torch.tensor([-3.0]), torch.tensor([1.0]), torch.tensor([1.0])]
    assert torch.equal(ties(base, *models, density=1.0, alpha=1.0), torch.tensor([-3.0]))
    assert torch.equal(
        ties(base, *models, density=1.0, alpha=1.0, sign="count"), torch.tensor([1.0])
    )
    with pytest.raises(ValueError, match='sign is "sum" or "count"'):
        ties(base, *models, density=1.0, alpha=1.0, sign="majority")


def test_ties_keeps_mergekits_count() -> None:
    # mergekit's sparsify: k = int(density * tensor.numel())
    assert kept_count(0.3, 10) == 3  # 0.3 * 10 is 3.0000000000000004
    assert kept_count(0.25, 10) == 2  # rounded down
    assert kept_count(0.29, 100) == 28  # 0.29 * 100 is 28.999999999999996
    assert kept_count(0.24, 10) == 2
    for numel in (7, 33, 2112):
        for density in (0.1, 0.2, 0.35, 0.5, 0.9):
            assert kept_count(density, numel) == max(1, int(density * numel))
    assert kept_count(0.01, 10) == 1  # never nothing
    assert kept_count(1.0, 1) == 1
    assert kept_count(0.5, 0) == 0
    with pytest.raises(ValueError, match=r"density is in \(0, 1\], not 0"):
        kept_count(0, 10)
    base = torch.zeros(10)
    delta = torch.arange(1.0, 11.0)
    expected = torch.where(delta >= 9, delta, 0.0)  # int(0.25 * 10) = 2 entries, as mergekit
    assert torch.equal(ties(base, delta, density=0.25, alpha=1.0), expected)


def test_ties_elects_the_sign_of_the_sum_and_averages_the_agreeing() -> None:
    base = torch.full((5,), 10.0)
    first = base + torch.tensor([2.0, -1.0, 1.0, 0.0, 4.0])
    second = base + torch.tensor([-1.0, -3.0, -1.0, 0.0, 2.0])
    # sums 1, -4, 0, 0, 6: elected +, -, none, none, +
    result = ties(base, first, second, density=1.0, alpha=1.0)
    assert torch.equal(result, base + torch.tensor([2.0, -2.0, 0.0, 0.0, 3.0]))
    halved = ties(base, first, second, density=1.0, alpha=0.5)
    assert torch.equal(halved, base + torch.tensor([1.0, -1.0, 0.0, 0.0, 1.5]))


def test_ties_trims_each_model_before_the_election() -> None:
    base = torch.zeros(4)
    first = torch.tensor([5.0, 0.1, 0.1, 0.1])
    second = torch.tensor([-1.0, -4.0, 0.2, 0.3])
    # density 0.5 keeps 2 of 4: first -> [5, .1, .1, .1] (ties at 0.1 kept); second -> [-1, -4]
    result = ties(base, first, second, density=0.5, alpha=1.0)
    assert torch.equal(result, torch.tensor([5.0, -4.0, 0.1, 0.1]))


@settings(deadline=None, max_examples=25)
@given(
    numel=st.integers(1, 40),
    alpha=st.floats(-2, 2, allow_nan=False),
    seed=st.integers(0, 2**16),
)
def test_ties_with_one_model_and_density_1_is_add_difference(
    numel: int, alpha: float, seed: int
) -> None:
    base, model = tensors(2, (numel,), torch.float16, seed)
    expected = ADD_DIFFERENCE(base, model, base, alpha=alpha)
    assert torch.equal(ties(base, model, density=1.0, alpha=alpha), expected)


@settings(deadline=None, max_examples=25)
@given(
    numel=st.integers(1, 60),
    count=st.integers(1, 4),
    density=st.floats(0.01, 1.0),
    seed=st.integers(0, 2**16),
)
def test_ties_properties(numel: int, count: int, density: float, seed: int) -> None:
    base, *models = tensors(count + 1, (numel,), torch.float32, seed)
    merged = ties(base, *models, density=density, alpha=1.0) - base
    assert torch.equal(
        ties(base, *models, density=density, alpha=1.0),
        ref_ties(base, models, density, 1.0),
    )
    # the model order does not matter for the election, and the merged delta never leaves the
    # range of the (trimmed) deltas it averages
    reordered = ties(base, *reversed(models), density=density, alpha=1.0) - base
    torch.testing.assert_close(reordered, merged, rtol=1e-6, atol=1e-6)
    deltas = torch.stack([torch.zeros_like(base)] + [x - base for x in models])
    assert bool((merged <= deltas.max(0).values + 1e-6).all())
    assert bool((merged >= deltas.min(0).values - 1e-6).all())


# ---- DARE kernel -----------------------------------------------------------------------------


def test_dare_mask_seed_is_the_documented_hash() -> None:
    digest = hashlib.sha256(b"42\0model.diffusion_model.out.2.bias\x003").digest()
    expected = int.from_bytes(digest[:8], "little") & (2**63 - 1)
    assert dare_mask_seed(42, "model.diffusion_model.out.2.bias", 3) == expected
    assert 0 <= expected < 2**63


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("origin", ORIGINS)
@pytest.mark.parametrize("count", [1, 3])
def test_dare_matches_the_formula(shape: tuple[int, ...], origin: torch.dtype, count: int) -> None:
    base, *models = tensors(count + 1, shape, origin, seed=len(shape) * 10 + count + 100)
    for drop, alpha, seed in [(0.5, 1.0, 0), (0.9, 0.7, 12345), (0.0, -0.5, 3), (0.3, 0.0, 1)]:
        result = dare(base, *models, drop=drop, alpha=alpha, seed=seed, key="k.weight")
        assert result.dtype == torch.float32 and result.shape == base.shape
        expected = ref_dare(base, models, drop, alpha, seed, "k.weight")
        assert torch.equal(result, expected), (drop, alpha, seed)
    assert torch.equal(dare(base, *models, drop=0.4, alpha=0.0, seed=1, key="k"), base)


def test_dare_drops_about_the_given_share_and_rescales_the_rest() -> None:
    base = torch.zeros(20_000)
    model = torch.full((20_000,), 0.75)
    result = dare(base, model, drop=0.8, alpha=1.0, seed=9, key="k")
    kept = result != 0
    assert abs(float(kept.float().mean()) - 0.2) < 0.02
    assert torch.equal(result[kept], torch.full((int(kept.sum()),), 0.75 * (1 / (1 - 0.8))))


def test_dare_masks_depend_on_seed_key_and_model_index() -> None:
    base = torch.zeros(1000)
    model = torch.ones(1000)

    def kept(seed: int, key: str) -> torch.Tensor:
        return dare(base, model, drop=0.5, alpha=1.0, seed=seed, key=key) != 0

    first = kept(1, "a")
    assert torch.equal(first, kept(1, "a"))
    assert not torch.equal(first, kept(2, "a"))
    assert not torch.equal(first, kept(1, "b"))
    # the same model twice gets two different masks: some elements are kept once only
    twice = dare(base, model, model, drop=0.5, alpha=1.0, seed=1, key="a")
    assert bool(((twice - 1.0).abs() < 1e-6).any())
    assert torch.equal(twice != 0, first | ref_mask(1, "a", 1, base.shape, 0.5))


def test_kernels_refuse_what_the_checker_refuses() -> None:
    x = torch.zeros(3)
    with pytest.raises(TypeError, match="at least one model"):
        ties(x, density=0.5, alpha=1.0)
    with pytest.raises(TypeError, match="at least one model"):
        dare(x, drop=0.5, alpha=1.0, seed=0, key="k")
    with pytest.raises(ValueError, match=r"drop is in \[0, 1\), not 1"):
        dare(x, x, drop=1.0, alpha=1.0, seed=0, key="k")
    with pytest.raises(ValueError, match=r"density is in \(0, 1\]"):
        ties(x, x, density=1.5, alpha=1.0)


@settings(deadline=None, max_examples=25)
@given(
    numel=st.integers(1, 40),
    alpha=st.floats(-2, 2, allow_nan=False),
    seed=st.integers(0, 2**16),
)
def test_dare_with_drop_0_and_one_model_is_add_difference(
    numel: int, alpha: float, seed: int
) -> None:
    base, model = tensors(2, (numel,), torch.bfloat16, seed)
    expected = ADD_DIFFERENCE(base, model, base, alpha=alpha)
    assert torch.equal(dare(base, model, drop=0.0, alpha=alpha, seed=seed, key="k"), expected)


@settings(deadline=None, max_examples=20)
@given(
    numel=st.integers(1, 50),
    count=st.integers(1, 3),
    drop=st.floats(0.0, 0.95),
    seed=st.integers(-(2**40), 2**40),
)
def test_dare_is_deterministic(numel: int, count: int, drop: float, seed: int) -> None:
    base, *models = tensors(count + 1, (numel,), torch.float32, abs(seed) % 2**31)
    first = dare(base, *models, drop=drop, alpha=1.0, seed=seed, key="x.weight")
    again = dare(base.clone(), *models, drop=drop, alpha=1.0, seed=seed, key="x.weight")
    assert torch.equal(first, again)
    assert torch.equal(first, ref_dare(base, models, drop, 1.0, seed, "x.weight"))


# ---- registration and checking ---------------------------------------------------------------


def test_registered_signatures() -> None:
    ties_spec, dare_spec = get_method("ties"), get_method("dare")
    assert ties_spec is not None and dare_spec is not None
    assert ties_spec.signature() == 'ties(base, *models, density, alpha, sign="sum")'
    assert dare_spec.signature() == 'dare(base, *models, drop, alpha, seed, rescale="inverse")'
    assert not ties_spec.elementwise and not dare_spec.elementwise
    assert dare_spec.wants_key and not ties_spec.wants_key
    assert ties_spec.formula == "B + alpha * disjoint_mean_i(top_density(X_i - B))"
    assert dare_spec.formula == "B + alpha * mean_i(M_i * (X_i - B) / (1 - drop))"


MODELS = 'model a = "a.safetensors"\nmodel b = "b.safetensors"\nmodel c = "c.safetensors"\n'


def errors(text: str) -> list[tuple[str, int, int, str]]:
    with pytest.raises(RecipeError) as info:
        check(parse(MODELS + text, path="r.merge"), base_dir=Path(__file__).parent)
    return [
        (d.code, d.line or 0, d.column or 0, d.message)
        for d in info.value.diagnostics
        if d.severity == "error"
    ]


def test_the_checker_refuses_values_outside_the_open_ranges() -> None:
    found = errors(
        "x = ties(a, b, c, density=0, alpha=1)\n"
        "y = ties(a, b, density={IN00: 1.5, default: 0.2}, alpha=1)\n"
        "z = dare(a, b, drop={OUT11: 1, default: 0.5}, alpha=1, seed=2)\n"
        "w = dare(a, b, drop=-0.1, alpha=1, seed=0.5)\n"
    )
    assert found == [
        ("out-of-range", 4, 27, "out of range: density is more than 0.0, not 0.0"),
        ("out-of-range", 5, 24, "out of range: density is at most 1.0, not 1.5 (at IN00)"),
        ("out-of-range", 6, 21, "out of range: drop is less than 1.0, not 1.0 (at OUT11)"),
        ("out-of-range", 7, 21, "out of range: drop is at least 0.0, not -0.1"),
        ("type", 7, 41, "argument 'seed' of dare must be a whole number"),
    ]


def test_the_checker_wants_models_and_every_parameter() -> None:
    found = errors("x = ties(a, density=0.5, alpha=1)\ny = dare(a, b, c, drop=0.5, alpha=1)\n")
    assert [(code, line, column) for code, line, column, _ in found] == [
        ("missing-argument", 4, 5),
        ("missing-argument", 5, 5),
    ]
    assert "'models'" in found[0][3] and "'seed'" in found[1][3]
    checked = check(
        parse(
            MODELS + 'save ties(a, b, c, density=1, alpha=1) to "x.safetensors"\n',
            path="r.merge",
        ),
        base_dir=Path(__file__).parent,
    )
    call = checked.saves[0].model
    assert isinstance(call, MethodCall)
    bound = {arg.param: arg.value for arg in call.args}
    assert bound["base"] == InputRef("a")
    assert bound["models"] == (InputRef("b"), InputRef("c"))


def test_a_vector_without_base_is_refused_for_alpha() -> None:
    vector = ", ".join(["1"] * 25)
    with pytest.raises(RecipeError, match="BASE"):
        mergelang.evaluate(
            MODELS + f"x = ties(a, b, density=0.5, alpha=[{vector}])\n",
            target="x",
            inputs={name: _unet_only(1) for name in "abc"},
        )


# ---- end to end ------------------------------------------------------------------------------

SCALE = 1 / 16


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sparse")
    for name, seed in (("a", 11), ("b", 12), ("c", 13)):
        make_checkpoint(root / f"{name}.safetensors", "sd1", scale=SCALE, seed=seed)
    return root


TIES = "ties(a, b, c, density=0.3, alpha={IN04: 0.5, default: 1})"
DARE = "dare(a, b, c, drop=0.7, alpha=0.8, seed=7)"


def test_recipes_run_end_to_end(folder: Path) -> None:
    recipe = folder / "r.merge"
    recipe.write_text(
        MODELS
        + f'save {TIES} to "ties.safetensors" as fp32\n'
        + f'save {DARE} to "dare.safetensors" as fp32\n',
        encoding="utf-8",
    )
    mergelang.run(recipe, out_dir=folder / "one", cache_dir=folder / "cache1", workers=1)
    again = folder / "again.merge"
    again.write_text(MODELS + f'save {DARE} to "dare.safetensors" as fp32\n', encoding="utf-8")
    mergelang.run(again, out_dir=folder / "three", cache_dir=folder / "cache3", workers=3)
    with (
        SafetensorsReader(folder / "one" / "dare.safetensors") as one,
        SafetensorsReader(folder / "three" / "dare.safetensors") as three,
    ):
        assert list(one.keys()) == list(three.keys())
        for key in one.keys():  # noqa: SIM118
            assert torch.equal(one.get(key), three.get(key)), key
    arch = get_architecture("sd1")
    in04 = 0
    with (
        SafetensorsReader(folder / "a.safetensors") as a,
        SafetensorsReader(folder / "b.safetensors") as b,
        SafetensorsReader(folder / "c.safetensors") as c,
        SafetensorsReader(folder / "one" / "ties.safetensors") as merged_ties,
        SafetensorsReader(folder / "one" / "dare.safetensors") as merged_dare,
    ):
        assert set(merged_ties.keys()) == set(a.keys()) == set(merged_dare.keys())
        for key in a.keys():  # noqa: SIM118
            x = a.get(key)
            block = arch.block_of(key)
            if block is None or not x.is_floating_point():
                assert torch.equal(merged_ties.get(key), x.float() if x.is_floating_point() else x)
                assert torch.equal(merged_dare.get(key), merged_ties.get(key))
                continue
            base, models = x.float(), [b.get(key).float(), c.get(key).float()]
            alpha = 0.5 if block == "IN04" else 1.0
            expected = ref_ties(base, models, 0.3, alpha)
            assert torch.equal(merged_ties.get(key), expected), key
            if block == "IN04":
                in04 += 1
                assert not torch.equal(expected, ref_ties(base, models, 0.3, 1.0)), key
            expected = ref_dare(base, models, 0.7, 0.8, 7, key)
            assert torch.equal(merged_dare.get(key), expected), key
    assert in04 > 0


def _unet_only(seed: int) -> dict[str, torch.Tensor]:
    return {
        k: v
        for k, v in checkpoint_tensors("sd1", seed=seed)
        if k.startswith("model.diffusion_model.")
    }


def test_dare_does_not_depend_on_the_other_keys() -> None:
    full = {name: dict(checkpoint_tensors("sd1", seed=seed)) for name, seed in (("a", 1), ("b", 2))}
    recipe = MODELS.replace('model c = "c.safetensors"\n', "") + (
        'save dare(a, b, b, drop=0.6, alpha=1, seed=5) to "x.safetensors" as fp32\n'
    )
    whole = mergelang.evaluate(recipe, inputs=full)
    unet = mergelang.evaluate(recipe, inputs={"a": _unet_only(1), "b": _unet_only(2)})
    backwards = mergelang.evaluate(
        recipe, inputs={n: dict(reversed(list(t.items()))) for n, t in full.items()}
    )
    assert len(unet) < len(whole)
    for key, value in unet.items():
        assert torch.equal(value, whole[key]), key
    for key, value in whole.items():
        assert torch.equal(value, backwards[key]), key


# ---- CUDA ------------------------------------------------------------------------------------


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@CUDA
@pytest.mark.parametrize("shape", [(7,), (320, 320, 3, 3)])
def test_cuda_kernels_give_the_cpu_results(shape: tuple[int, ...]) -> None:
    base, *models = tensors(4, shape, torch.float16, seed=5)
    on_gpu = [t.cuda() for t in (base, *models)]
    cpu = ties(base, *models, density=0.3, alpha=0.9)
    gpu = ties(on_gpu[0], *on_gpu[1:], density=0.3, alpha=0.9)
    assert gpu.device.type == "cuda"
    assert torch.equal(gpu.cpu(), cpu)
    cpu = dare(base, *models, drop=0.7, alpha=0.9, seed=4, key="k")
    gpu = dare(on_gpu[0], *on_gpu[1:], drop=0.7, alpha=0.9, seed=4, key="k")
    assert gpu.device.type == "cuda"
    assert torch.equal(gpu.cpu(), cpu)


@CUDA
def test_cuda_runs_write_the_cpu_results(folder: Path) -> None:
    recipe = folder / "cuda.merge"
    recipe.write_text(
        MODELS
        + f'save {TIES} to "ties.safetensors" as fp32\n'
        + f'save {DARE} to "dare.safetensors" as fp32\n',
        encoding="utf-8",
    )
    mergelang.run(recipe, out_dir=folder / "cpu", cache_dir=folder / "cache-cpu")
    mergelang.run(recipe, out_dir=folder / "gpu", cache_dir=folder / "cache-gpu", device="cuda")
    for name in ("ties", "dare"):
        with (
            SafetensorsReader(folder / "cpu" / f"{name}.safetensors") as cpu,
            SafetensorsReader(folder / "gpu" / f"{name}.safetensors") as gpu,
        ):
            assert list(cpu.keys()) == list(gpu.keys())
            for key in cpu.keys():  # noqa: SIM118
                assert torch.equal(cpu.get(key), gpu.get(key)), (name, key)


def test_dare_rescales_by_the_l1_ratio_as_mergekit() -> None:
    # mergekit's bernoulli(..., rescale_norm=l1): res * (|t|_1 / |res|_1) after the mask
    base, x, y = tensors(3, (64, 33), torch.float32, seed=11)
    key = "model.diffusion_model.out.2.weight"
    result = dare(base, x, y, drop=0.7, alpha=2.0, seed=4, key=key, rescale="l1")
    expected = []
    for index, model in enumerate((x, y)):
        delta = model - base
        masked = torch.where(ref_mask(4, key, index, delta.shape, 1 - 0.7), delta, 0.0)
        ratio = float(delta.abs().sum()) / float(masked.abs().sum())
        expected.append(masked * ratio)
    reference = base + 2.0 * ((expected[0] + expected[1]) * 0.5)
    assert torch.allclose(result, reference, rtol=1e-6, atol=1e-6)
    # the kept part carries the task vector's whole L1 norm
    thinned = dare(base, x, drop=0.7, alpha=1.0, seed=4, key=key, rescale="l1") - base
    assert float(thinned.abs().sum()) == pytest.approx(float((x - base).abs().sum()), rel=1e-5)
    with pytest.raises(ValueError, match='rescale is "inverse" or "l1"'):
        dare(base, x, drop=0.7, alpha=1.0, seed=4, key=key, rescale="l2")
