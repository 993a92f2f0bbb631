"""The interpolation methods: triple_sum, sum_twice, sigmoid_sum, geometric, tensor_sum.

Each kernel is compared with the formula written here on whole float32 tensors (random,
from float32, float16 and bfloat16 originals; zero weights; one-element, 0-D and 4-D
tensors), elementwise kernels also chunk by chunk into ``out=``; then one recipe per method
runs end to end through ``mergelang.run`` and every output key is checked.
"""

from __future__ import annotations

import cmath
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from run_helpers import assert_same_tensors, expected_output, load

import mergelang
from mergelang.arch import SD_BLOCKS, get_architecture
from mergelang.errors import RecipeError
from mergelang.methods import MethodSpec, get_method
from mergelang.methods.blend import sigmoid_weight, tensor_sum
from mergelang.presets import BUILTIN_PRESETS
from mergelang.testing import make_checkpoint


def registered(name: str) -> MethodSpec:
    """The method ``name``: called like its kernel, it allocates ``out`` when none is given
    (whole tensors and chunks go through the kernel's one code path)."""
    spec = get_method(name)
    assert spec is not None, name
    return spec


geometric = registered("geometric")
sigmoid_sum = registered("sigmoid_sum")
sum_twice = registered("sum_twice")
triple_sum = registered("triple_sum")
weighted_sum = registered("weighted_sum")


SCALE = 1 / 80
"""Width scale of the end-to-end fixtures (SD1 files of about 2 MB: the runs stay fast)."""

SHAPES = [(), (1,), (7,), (6, 5), (4, 3, 3, 3)]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def operands(seed: int, shape: Sequence[int], dtype: torch.dtype, count: int = 3) -> list:
    """``count`` random tensors drawn in ``dtype`` (N(0, 0.02), like checkpoint weights),
    then cast to float32 as the executor does."""
    gen = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(tuple(shape), generator=gen) * 0.02).to(dtype).to(torch.float32)
        for _ in range(count)
    ]


def in_chunks(
    kernel: Callable[..., torch.Tensor], xs: Sequence[torch.Tensor], size: int, **weights: float
) -> torch.Tensor:
    """The kernel run over the flattened operands ``size`` elements at a time into ``out``."""
    flat = [x.reshape(-1) for x in xs]
    out = torch.full_like(flat[0], float("nan"))
    for lo in range(0, flat[0].numel(), size):
        returned = kernel(*(x[lo : lo + size] for x in flat), **weights, out=out[lo : lo + size])
        assert returned.data_ptr() == out[lo : lo + size].data_ptr()
    return out.reshape(xs[0].shape)


# ---- registration ----------------------------------------------------------------------------


def test_signatures_formulas_and_kinds() -> None:
    expected = {
        "triple_sum": "triple_sum(a, b, c, alpha, beta, base=None)",
        "sum_twice": "sum_twice(a, b, c, alpha, beta, base=None)",
        "sigmoid_sum": "sigmoid_sum(a, b, alpha=0.5, base=None)",
        "geometric": "geometric(a, b, alpha=0.5, base=None)",
        "tensor_sum": 'tensor_sum(a, b, alpha=0.5, beta=0.0, boundary="floor", base=None)',
    }
    for name, signature in expected.items():
        spec = get_method(name)
        assert spec is not None, name
        assert spec.signature() == signature
        assert spec.elementwise is (name != "tensor_sum")
        assert not spec.needs_stats
        weights = [p for p in spec.params if p.kind == "weights"]
        assert all(p.base_default == 0.0 for p in weights), name
        assert all(p.doc for p in spec.params), name
        assert spec.base_param_for("alpha") is spec.param("base")
    assert get_method("triple_sum").formula == "(1 - alpha - beta) * A + alpha * B + beta * C"
    for name in ("sigmoid_sum", "geometric", "tensor_sum"):
        alpha = get_method(name).param("alpha")
        assert (alpha.minimum, alpha.maximum) == (0.0, 1.0), name


def test_out_of_range_weights_are_refused_at_their_place() -> None:
    line = 'save geometric(a, b, alpha={IN00: 1.5, default: 0}) to "x.safetensors"'
    with pytest.raises(RecipeError) as caught:
        mergelang.check(
            mergelang.parse(f'model a = "a.safetensors"\nmodel b = "b.safetensors"\n{line}\n')
        )
    (diag,) = caught.value.diagnostics
    assert diag.code == "out-of-range"
    assert "alpha is at most 1.0, not 1.5 (at IN00)" in diag.message
    assert (diag.span.line, diag.span.column) == (3, line.index("{") + 1)


# ---- triple_sum and sum_twice --------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("alpha", "beta"), [(0.3, 0.25), (0.0, 0.0), (1.2, -0.4), (0.0, 1.0)])
def test_triple_sum_and_sum_twice(shape, dtype, alpha: float, beta: float) -> None:
    a, b, c = operands(1, shape, dtype)
    want_triple = (1 - alpha - beta) * a + alpha * b + beta * c
    want_twice = (1 - beta) * ((1 - alpha) * a + alpha * b) + beta * c
    assert torch.equal(triple_sum(a, b, c, alpha=alpha, beta=beta), want_triple)
    assert torch.equal(sum_twice(a, b, c, alpha=alpha, beta=beta), want_twice)
    if alpha == 0 and beta == 0:
        assert torch.equal(triple_sum(a, b, c, alpha=0.0, beta=0.0), a)
        assert torch.equal(sum_twice(a, b, c, alpha=0.0, beta=0.0), a)


def test_elementwise_kernels_give_the_same_bits_in_any_chunks() -> None:
    short = operands(2, (600,), torch.float32)
    long = operands(6, (20_011,), torch.float32)
    for a, b, _ in (short, long):
        a[:50] = 0.0
        b[25:75] = -a[25:75]
    cases = [
        (triple_sum, 3, {"alpha": 0.3, "beta": 0.6}),
        (sum_twice, 3, {"alpha": 0.7, "beta": 0.2}),
        (sigmoid_sum, 2, {"alpha": 0.35}),
        (geometric, 2, {"alpha": 0.3}),
        (geometric, 2, {"alpha": 0.5}),
    ]
    for kernel, count, weights in cases:
        for xs, sizes in ((short[:count], (1, 7)), (long[:count], (4099, 8192))):
            whole = kernel(*xs, **weights)
            for size in sizes:
                assert torch.equal(in_chunks(kernel, xs, size, **weights), whole), kernel


floats = st.floats(-1.0, 1.0, allow_nan=False, width=32)


@settings(max_examples=25, deadline=None)
@given(
    values=st.lists(st.tuples(floats, floats, floats), min_size=1, max_size=40),
    alpha=st.floats(-1.0, 2.0, allow_nan=False),
)
def test_with_beta_zero_both_three_model_sums_are_weighted_sum(values, alpha: float) -> None:
    a, b, c = (torch.tensor(column, dtype=torch.float32) for column in zip(*values, strict=True))
    reference = weighted_sum(a, b, alpha=alpha)
    assert torch.equal(triple_sum(a, b, c, alpha=alpha, beta=0.0), reference)
    assert torch.equal(sum_twice(a, b, c, alpha=alpha, beta=0.0), reference)


# ---- sigmoid_sum -----------------------------------------------------------------------------


def test_sigmoid_weight_is_the_inverse_smoothstep() -> None:
    assert (sigmoid_weight(0.0), sigmoid_weight(0.5), sigmoid_weight(1.0)) == (0.0, 0.5, 1.0)
    for alpha in (0.05, 0.2, 0.35, 0.7, 0.9):
        s = sigmoid_weight(alpha)
        assert s == 0.5 - math.sin(math.asin(1 - 2 * alpha) / 3)
        assert 3 * s**2 - 2 * s**3 == pytest.approx(alpha, abs=1e-12)
        assert sigmoid_weight(1 - alpha) == pytest.approx(1 - s, abs=1e-15)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("alpha", [0.1, 0.25, 0.8])
def test_sigmoid_sum(shape, dtype, alpha: float) -> None:
    a, b, _ = operands(3, shape, dtype)
    s = 0.5 - math.sin(math.asin(1 - 2 * alpha) / 3)
    assert torch.equal(sigmoid_sum(a, b, alpha=alpha), (1 - s) * a + s * b)


@settings(max_examples=25, deadline=None)
@given(values=st.lists(st.tuples(floats, floats), min_size=1, max_size=40))
def test_sigmoid_sum_ends_and_middle(values) -> None:
    a, b = (torch.tensor(column, dtype=torch.float32) for column in zip(*values, strict=True))
    assert torch.equal(sigmoid_sum(a, b, alpha=0.0), a)
    assert torch.equal(sigmoid_sum(a, b, alpha=1.0), b)
    assert torch.equal(sigmoid_sum(a, b, alpha=0.5), weighted_sum(a, b, alpha=0.5))


# ---- geometric -------------------------------------------------------------------------------


def principal_geometric(a: torch.Tensor, b: torch.Tensor, alpha: float) -> torch.Tensor:
    """Re(A^(1 - alpha) * B^alpha) with principal complex powers, element by element in
    double precision (0^0 = 1)."""

    def power(x: float, exponent: float) -> complex:
        if exponent == 0:
            return 1.0
        if x == 0:
            return 0.0
        return cmath.exp(exponent * cmath.log(complex(x, 0.0)))

    values = [
        (power(x, 1 - alpha) * power(y, alpha)).real
        for x, y in zip(a.reshape(-1).tolist(), b.reshape(-1).tolist(), strict=True)
    ]
    return torch.tensor(values, dtype=torch.float64).reshape(a.shape)


def assert_geometric_close(got: torch.Tensor, a: torch.Tensor, b: torch.Tensor, alpha: float):
    """Within a few float32 roundings of the magnitude |A|^(1 - alpha) * |B|^alpha."""
    want = principal_geometric(a, b, alpha)
    magnitude = a.double().abs() ** (1 - alpha) * b.double().abs() ** alpha
    assert got.dtype == torch.float32 and got.shape == a.shape
    assert bool(((got.double() - want).abs() <= 3e-7 * magnitude + 3e-45).all())


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("alpha", [0.2, 0.5, 0.75])
def test_geometric_is_the_real_part_of_the_principal_powers(shape, dtype, alpha) -> None:
    a, b, _ = operands(4, shape, dtype)
    assert_geometric_close(geometric(a, b, alpha=alpha), a, b, alpha)


def test_geometric_signs_and_zeros() -> None:
    a = torch.tensor([0.04, -0.04, 0.04, -0.04, 0.0, 0.0, 0.09, -0.09, 0.0])
    b = torch.tensor([0.01, -0.01, -0.01, 0.01, 0.05, -0.05, 0.0, 0.0, 0.0])
    half = geometric(a, b, alpha=0.5)
    # same signs: +-sqrt(|A| |B|); opposite signs: cos(pi / 2) = 0; a zero: 0
    assert half.tolist() == pytest.approx([0.02, -0.02, 0, 0, 0, 0, 0, 0, 0], abs=1e-9)
    assert torch.equal(geometric(a, b, alpha=0.0), a)  # 0^0 = 1: A exactly, zeros included
    assert torch.equal(geometric(a, b, alpha=1.0), b)
    third = geometric(a, b, alpha=1 / 3)
    scale = math.cos(math.pi / 3)
    magnitude = 0.04 ** (2 / 3) * 0.01 ** (1 / 3)
    assert third[:4].tolist() == pytest.approx(
        [magnitude, -magnitude, scale * magnitude, -scale * magnitude], rel=1e-6
    )
    assert not bool(geometric(a, b, alpha=0.37).isnan().any())


@settings(max_examples=20, deadline=None)
@given(
    values=st.lists(st.tuples(floats, floats), min_size=1, max_size=30), alpha=st.floats(0.0, 1.0)
)
def test_geometric_property(values, alpha: float) -> None:
    a, b = (torch.tensor(column, dtype=torch.float32) for column in zip(*values, strict=True))
    got = geometric(a, b, alpha=alpha)
    assert_geometric_close(got, a, b, alpha)
    same_sign = (a >= 0) == (b >= 0)
    assert bool((got.abs() <= torch.maximum(a.abs(), b.abs()) * (1 + 1e-6))[same_sign].all())


# ---- tensor_sum ------------------------------------------------------------------------------


def rows_from_b(n: int, alpha: float, beta: float) -> list[bool]:
    """Which of ``n`` rows tensor_sum takes from B: a window of width alpha * n starting at
    beta * n (floored), continuing at row 0 past the last row."""
    start, stop = math.floor(n * beta), math.floor(n * (alpha + beta))
    if alpha + beta <= 1:
        return [start <= i < stop for i in range(n)]
    return [i >= start or i < math.floor(n * (alpha + beta - 1)) for i in range(n)]


@pytest.mark.parametrize("shape", [(10,), (7, 3), (4, 3, 3, 3), (1,), (1, 4)])
@pytest.mark.parametrize(
    ("alpha", "beta"),
    [(0.5, 0.0), (0.3, 0.2), (0.0, 0.4), (1.0, 0.0), (0.6, 0.7), (0.5, 1.0), (0.25, 0.75)],
)
def test_tensor_sum_copies_a_window_of_rows(shape, alpha: float, beta: float) -> None:
    a, b, _ = operands(5, shape, torch.bfloat16)
    want = a.clone()
    for i, from_b in enumerate(rows_from_b(shape[0], alpha, beta)):
        if from_b:
            want[i] = b[i]
    got = tensor_sum(a, b, alpha=alpha, beta=beta)
    assert torch.equal(got, want)
    assert got.data_ptr() not in (a.data_ptr(), b.data_ptr())


def test_tensor_sum_window_positions() -> None:
    a, b = torch.zeros(10), torch.ones(10)
    assert tensor_sum(a, b, alpha=0.3, beta=0.2).tolist() == [0, 0, 1, 1, 1, 0, 0, 0, 0, 0]
    assert tensor_sum(a, b, alpha=0.5, beta=0.75).tolist() == [1, 1, 0, 0, 0, 0, 0, 1, 1, 1]
    assert torch.equal(tensor_sum(a, b, alpha=0.0, beta=0.5), a)
    assert torch.equal(tensor_sum(a, b, alpha=1.0, beta=0.0), b)


def test_tensor_sum_on_a_scalar_counts_it_as_one_row() -> None:
    a, b = torch.tensor(2.0), torch.tensor(5.0)
    assert tensor_sum(a, b, alpha=0.5, beta=0.2).item() == 2.0
    assert tensor_sum(a, b, alpha=0.8, beta=0.2).item() == 5.0
    assert tensor_sum(a, b, alpha=0.9, beta=0.6).item() == 5.0
    assert tensor_sum(a, b, alpha=0.5, beta=0.2).shape == ()


# ---- end to end ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("blend-models")
    for seed, name in enumerate("abc", start=1):
        make_checkpoint(folder / f"{name}.safetensors", "sd1", scale=SCALE, seed=seed)
    return folder


def run_recipe(models: Path, tmp_path: Path, call: str, out: str = "m") -> dict:
    recipe = tmp_path / "recipe.merge"
    declarations = "".join(f'model {n} = "{models / f"{n}.safetensors"}"\n' for n in "abc")
    recipe.write_text(f'{declarations}save {call} to "{out}.safetensors" as fp32\n')
    mergelang.run(recipe, cache_dir=tmp_path / "cache", workers=2)
    return load(tmp_path / f"{out}.safetensors")


def inputs(models: Path, names: str = "abc") -> list[dict]:
    return [load(models / f"{n}.safetensors") for n in names]


def test_triple_sum_per_block_weights_end_to_end(models: Path, tmp_path: Path) -> None:
    alpha = {"BASE": 0.3, **dict.fromkeys(SD_BLOCKS, 0.0)}
    alpha.update({"IN00": 0.2, "IN01": 0.2, "M00": 0.5, "OUT11": 0.1})
    beta = dict.fromkeys(["BASE", *SD_BLOCKS], 0.0)
    beta.update({"IN01": 0.4, "OUT03": 0.25})
    beta_list = ", ".join(repr(beta[block]) for block in SD_BLOCKS)  # 25 values: BASE 0
    call = (
        "triple_sum(a, b, c, alpha={IN00..IN01: 0.2, M00: 0.5, OUT11: 0.1, default: 0}, "
        f"beta=[{beta_list}], base=0.3)"
    )
    got = run_recipe(models, tmp_path, call)

    def formula(xs: Sequence[torch.Tensor], block: str) -> torch.Tensor:
        w, v = alpha[block], beta[block]
        return (1 - w - v) * xs[0] + w * xs[1] + v * xs[2]

    abc = inputs(models)
    assert_same_tensors(got, expected_output("sd1", abc, formula, "fp32"))
    # keys of blocks whose weights are both 0 are A's, bit for bit
    arch = get_architecture("sd1")
    untouched = [k for k in got if arch.block_of(k) in ("IN05", "OUT00")]
    assert untouched
    assert all(torch.equal(got[k], abc[0][k].float()) for k in untouched)


def test_sum_twice_end_to_end(models: Path, tmp_path: Path) -> None:
    got = run_recipe(models, tmp_path, "sum_twice(a, b, c, alpha=0.4, beta=0.3)")

    def formula(xs: Sequence[torch.Tensor], block: str) -> torch.Tensor:
        return (1 - 0.3) * ((1 - 0.4) * xs[0] + 0.4 * xs[1]) + 0.3 * xs[2]

    assert_same_tensors(got, expected_output("sd1", inputs(models), formula, "fp32"))


def test_sigmoid_sum_end_to_end(models: Path, tmp_path: Path) -> None:
    got = run_recipe(models, tmp_path, "sigmoid_sum(a, b, alpha={IN: 0.2, default: 0.7})")

    def formula(xs: Sequence[torch.Tensor], block: str) -> torch.Tensor:
        alpha = 0.2 if block.startswith("IN") else 0.7
        s = 0.5 - math.sin(math.asin(1 - 2 * alpha) / 3)
        return (1 - s) * xs[0] + s * xs[1]

    assert_same_tensors(got, expected_output("sd1", inputs(models, "ab"), formula, "fp32"))


def test_geometric_end_to_end(models: Path, tmp_path: Path) -> None:
    got = run_recipe(models, tmp_path, "geometric(a, b, alpha=GRAD_V, base=0.4)")
    grad_v = BUILTIN_PRESETS["GRAD_V"].resolve(get_architecture("sd1").scheme, base=0.4)
    ab = inputs(models, "ab")

    def formula(xs: Sequence[torch.Tensor], block: str) -> torch.Tensor:
        """The real part of the principal powers, in double precision."""
        alpha = grad_v[block]
        a, b = (x.double() for x in xs)
        sign = torch.where(a < 0, -1.0, 1.0).double()
        factor = torch.where((a < 0) != (b < 0), math.cos(math.pi * alpha), 1.0).double()
        return sign * factor * a.abs() ** (1 - alpha) * b.abs() ** alpha

    want = expected_output("sd1", ab, formula, "fp32")
    assert sorted(got) == sorted(want)
    arch = get_architecture("sd1")
    merged = 0
    for key, value in got.items():
        if arch.block_of(key) is None or not value.is_floating_point():
            assert torch.equal(value, want[key]), key
            continue
        merged += 1
        bound = 3e-7 * (ab[0][key].double().abs() + ab[1][key].double().abs()) + 1e-45
        assert bool(((value.double() - want[key].double()).abs() <= bound).all()), key
    assert merged > 100


def test_tensor_sum_end_to_end(models: Path, tmp_path: Path) -> None:
    got = run_recipe(models, tmp_path, "tensor_sum(a, b, alpha={OUT: 0.5, default: 0.3}, beta=0.6)")

    def formula(xs: Sequence[torch.Tensor], block: str) -> torch.Tensor:
        alpha = 0.5 if block.startswith("OUT") else 0.3
        a, b = xs
        rows_a, rows_b = (a.reshape(1), b.reshape(1)) if a.dim() == 0 else (a, b)
        picked = rows_a.clone()
        for i, from_b in enumerate(rows_from_b(rows_a.shape[0], alpha, 0.6)):
            if from_b:
                picked[i] = rows_b[i]
        return picked.reshape(a.shape)

    assert_same_tensors(got, expected_output("sd1", inputs(models, "ab"), formula, "fp32"))


# ---- CUDA ------------------------------------------------------------------------------------

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@CUDA
@pytest.mark.parametrize("shape", [(), (7,), (64, 48, 3, 3)])
def test_cuda_kernels_give_the_cpu_results(shape) -> None:
    a, b, c = operands(7, shape, torch.float16)
    a.view(-1)[:1] = 0.0
    cases = [
        (triple_sum, (a, b, c), {"alpha": 0.3, "beta": 0.45}, True),
        (sum_twice, (a, b, c), {"alpha": 0.3, "beta": 0.45}, True),
        (sigmoid_sum, (a, b), {"alpha": 0.2}, True),
        (tensor_sum, (a, b), {"alpha": 0.5, "beta": 0.25}, True),
        (geometric, (a, b), {"alpha": 0.3}, False),
    ]
    for kernel, xs, weights, exact in cases:
        on_gpu = kernel(*(x.cuda() for x in xs), **weights)
        assert on_gpu.device.type == "cuda"
        on_cpu = kernel(*xs, **weights)
        if exact:  # float32 products and sums round the same on both
            assert torch.equal(on_gpu.cpu(), on_cpu), kernel
        else:
            torch.testing.assert_close(on_gpu.cpu(), on_cpu, rtol=2.4e-7, atol=1e-8)


@CUDA
def test_cuda_runs_write_the_cpu_results(models: Path, tmp_path: Path) -> None:
    calls = {
        "triple": "triple_sum(a, b, c, alpha=0.3, beta=0.2)",
        "sigmoid": "sigmoid_sum(a, b, alpha=0.3)",
        "geometric": "geometric(a, b, alpha=0.6)",
        "tensor": "tensor_sum(a, b, alpha=0.4, beta=0.5)",
    }
    recipe = tmp_path / "recipe.merge"
    declarations = "".join(f'model {n} = "{models / f"{n}.safetensors"}"\n' for n in "abc")
    saves = "".join(
        f'save {call} to "{name}.safetensors" as fp32\n' for name, call in calls.items()
    )
    recipe.write_text(declarations + saves)
    mergelang.run(recipe, out_dir=tmp_path / "cpu", cache_dir=tmp_path / "cache-cpu")
    mergelang.run(recipe, out_dir=tmp_path / "gpu", cache_dir=tmp_path / "cache-gpu", device="cuda")
    for name in calls:
        cpu = load(tmp_path / "cpu" / f"{name}.safetensors")
        gpu = load(tmp_path / "gpu" / f"{name}.safetensors")
        assert set(cpu) == set(gpu)
        for key, value in cpu.items():
            torch.testing.assert_close(gpu[key], value, rtol=2.4e-7, atol=1e-8, msg=key)
