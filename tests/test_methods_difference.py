"""The difference-based methods: train_difference, multiply_difference,
similarity_add_difference and smooth_add (with its scipy-style filters).

Kernels are compared with formulas written here on whole float32 tensors (from float32,
float16 and bfloat16 originals; zero weights; 0-D, one-element and 4-D tensors), elementwise
ones also chunk by chunk into ``out=``; the filters with explicit loops over every element;
then one recipe per method runs end to end through ``mergelang.run``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from run_helpers import assert_same_tensors, expected_output, load

import mergelang
from mergelang.arch import get_architecture
from mergelang.errors import RecipeError
from mergelang.methods import MethodSpec, difference, get_method
from mergelang.methods.difference import (
    gaussian_filter,
    median_filter3,
    reflect_indices,
    smooth_add,
)
from mergelang.testing import make_checkpoint


def registered(name: str) -> MethodSpec:
    """The method ``name``: called like its kernel, it allocates ``out`` when none is given
    (whole tensors and chunks go through the kernel's one code path)."""
    spec = get_method(name)
    assert spec is not None, name
    return spec


multiply_difference = registered("multiply_difference")
similarity_add_difference = registered("similarity_add_difference")
train_difference = registered("train_difference")


SCALE = 1 / 80
"""Width scale of the end-to-end fixtures (SD1 files of about 2 MB: the runs stay fast)."""

SHAPES = [(), (1,), (7,), (6, 5), (4, 3, 3, 3)]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def operands(seed: int, shape: Sequence[int], dtype: torch.dtype) -> list[torch.Tensor]:
    """A, B, C drawn in ``dtype`` (N(0, 0.02), like checkpoint weights), cast to float32 as
    the executor does; a few elements of B equal C's and a few of A equal B's, so the
    zero differences the formulas single out occur."""
    gen = torch.Generator().manual_seed(seed)
    a, b, c = (
        (torch.randn(tuple(shape), generator=gen) * 0.02).to(dtype).to(torch.float32)
        for _ in range(3)
    )
    if a.numel() > 3:
        flat_a, flat_b, flat_c = a.view(-1), b.view(-1), c.view(-1)
        flat_b[0] = flat_c[0]
        flat_a[1] = flat_b[1]
        flat_a[2] = flat_b[2] = flat_c[2]
    return [a, b, c]


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


# ---- reference formulas (plain torch on whole float32 tensors) -------------------------------


def train_difference_reference(a, b, c, alpha: float) -> torch.Tensor:
    total = (b - c).abs() + (b - a).abs()
    share = torch.where(total == 0, torch.zeros_like(total), (b - a).abs() / total)
    return a + ((torch.sign(b - c) * share) * (b - c).abs()) * (alpha * 1.8)


def multiply_difference_reference(a, b, c, alpha: float, beta: float) -> torch.Tensor:
    """In float64 apart from the float32 differences and weighted sum (the formula's
    operands); the caller allows the float32 rounding of the power."""
    magnitude = (a - c).abs().double() ** (1 - alpha) * (b - c).abs().double() ** alpha
    direction = torch.sign((1 - beta) * a + beta * b - c).double()
    return c.double() + direction * magnitude


def similarity_reference(a, b, c, alpha: float, beta: float) -> torch.Tensor:
    t = torch.maximum(a.abs(), b.abs())
    s = torch.where(t == 0, torch.full_like(t, beta), ((a / t) * (b / t) + 1) / 2 * beta)
    return (1 - s) * (a + alpha * (b - c)) + s * ((1 - alpha / 2) * a + (alpha / 2) * b)


# ---- registration ----------------------------------------------------------------------------


def test_signatures_and_base_defaults() -> None:
    expected = {
        "train_difference": ("train_difference(a, b, c, alpha=1.0, base=None)", None),
        "multiply_difference": (
            'multiply_difference(a, b, c, alpha=0.5, beta=0.5, zero_sign="zero", base=None)',
            0.0,
        ),
        "similarity_add_difference": (
            "similarity_add_difference(a, b, c, alpha=1.0, beta=1.0, base=None)",
            None,
        ),
        "smooth_add": ("smooth_add(a, b, c, alpha=1.0, base=None)", None),
    }
    for name, (signature, base_default) in expected.items():
        spec = get_method(name)
        assert spec is not None, name
        assert spec.signature() == signature
        assert spec.elementwise is (name != "smooth_add")
        assert spec.param("alpha").base_default == base_default, name
        assert spec.base_param_for("alpha") is spec.param("base")
        assert all(p.doc for p in spec.params), name
    assert get_method("multiply_difference").param("alpha").maximum == 1.0
    assert get_method("similarity_add_difference").param("beta").base_default == 0.0
    assert get_method("train_difference").formula == (
        "A + 1.8 * alpha * sign(B - C) * |B - C| * |B - A| / (|B - C| + |B - A|)"
    )


# ---- train_difference ------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("alpha", [1.0, 0.35, 0.0, -0.5])
def test_train_difference(shape, dtype, alpha: float) -> None:
    a, b, c = operands(1, shape, dtype)
    got = train_difference(a, b, c, alpha=alpha)
    assert torch.equal(got, train_difference_reference(a, b, c, alpha))
    assert not bool(got.isnan().any())
    if alpha == 0:
        assert torch.equal(got, a)


def test_train_difference_special_elements() -> None:
    a = torch.tensor([0.5, 0.1, 0.2, 0.4, 0.3])
    b = torch.tensor([0.5, 0.4, 0.6, 0.4, 0.9])
    c = torch.tensor([0.5, 0.4, 0.2, 0.1, 0.5])
    got = train_difference(a, b, c, alpha=1.0)
    # A = B = C: 0/0, nothing added; B = C: nothing added; A = B: the difference is scaled
    # by |B - A| = 0; A = C: 1.8 * (B - C) / 2; otherwise the general case
    assert torch.equal(got[:2], a[:2])
    assert got[3].item() == a[3].item()
    assert got[2].item() == pytest.approx(0.2 + 1.8 * 0.4 * 0.4 / 0.8, rel=1e-6)
    assert got[4].item() == pytest.approx(0.3 + 1.8 * 0.4 * 0.6 / 1.0, rel=1e-6)


floats = st.floats(-1.0, 1.0, allow_nan=False, width=32)


@settings(max_examples=25, deadline=None)
@given(
    values=st.lists(st.tuples(floats, floats), min_size=1, max_size=40),
    alpha=st.floats(-2.0, 2.0, allow_nan=False),
)
def test_train_difference_with_b_equal_to_c_returns_a(values, alpha: float) -> None:
    a, b = (torch.tensor(column, dtype=torch.float32) for column in zip(*values, strict=True))
    assert torch.equal(train_difference(a, b, b.clone(), alpha=alpha), a)


# ---- multiply_difference ---------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("alpha", "beta"), [(0.5, 0.5), (0.2, 0.9), (0.85, 0.0)])
def test_multiply_difference(shape, dtype, alpha: float, beta: float) -> None:
    a, b, c = operands(2, shape, dtype)
    got = multiply_difference(a, b, c, alpha=alpha, beta=beta)
    want = multiply_difference_reference(a, b, c, alpha, beta)
    magnitude = (want - c.double()).abs()
    assert got.dtype == torch.float32
    assert bool(((got.double() - want).abs() <= 2.4e-7 * (magnitude + want.abs())).all())


def test_multiply_difference_at_the_ends_uses_the_differences_as_they_are() -> None:
    a, b, c = operands(3, (4, 3, 3, 3), torch.float16)
    lerp = 0.7 * a + 0.3 * b  # (1 - beta) * A + beta * B for beta = 0.3
    assert torch.equal(
        multiply_difference(a, b, c, alpha=0.0, beta=0.3),
        c + torch.sign(lerp - c) * (a - c).abs(),
    )
    assert torch.equal(
        multiply_difference(a, b, c, alpha=1.0, beta=0.3),
        c + torch.sign(lerp - c) * (b - c).abs(),
    )
    # alpha = beta = 0: C + (A - C), A up to the rounding of A - C
    assert torch.equal(multiply_difference(a, b, c, alpha=0.0, beta=0.0), c + (a - c))


def test_multiply_difference_zero_sign_and_zero_difference_give_c() -> None:
    a = torch.tensor([0.3, 0.2, 0.5])
    b = torch.tensor([0.1, 0.6, 0.2])
    c = torch.tensor([0.2, 0.2, 0.1])
    got = multiply_difference(a, b, c, alpha=0.5, beta=0.5)
    # element 0: the midpoint of A and B is C (sign 0); element 1: A = C, so |A - C|^0.5 = 0
    assert torch.equal(got[:2], c[:2])
    assert got[2].item() == pytest.approx(0.1 + math.sqrt(0.4 * 0.1), rel=1e-6)


# ---- similarity_add_difference ---------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("alpha", "beta"), [(1.0, 1.0), (0.6, 0.3), (0.0, 0.5), (1.5, 0.0)])
def test_similarity_add_difference(shape, dtype, alpha: float, beta: float) -> None:
    a, b, c = operands(4, shape, dtype)
    got = similarity_add_difference(a, b, c, alpha=alpha, beta=beta)
    assert torch.equal(got, similarity_reference(a, b, c, alpha, beta))
    if beta == 0:  # plain add difference
        assert torch.equal(got, (1 - 0.0) * (a + alpha * (b - c)) + 0.0 * a)


def test_similarity_handles_zeros_and_tiny_weights_explicitly() -> None:
    tiny = 1e-30  # sd-meh's A * B / max(|A|, |B|)^2 underflows to 0/0 here
    a = torch.tensor([0.0, tiny, tiny, 0.0, 0.02])
    b = torch.tensor([0.0, tiny, -tiny, tiny, 0.02])
    c = torch.tensor([0.01, 0.0, 0.0, 0.0, 0.01])
    beta = 0.8
    got = similarity_add_difference(a, b, c, alpha=1.0, beta=beta)
    # similarity: A = B = 0 -> beta; A = B -> beta; A = -B -> 0; one zero -> beta / 2
    s = torch.tensor([beta, beta, 0.0, beta / 2, beta])
    added = a + 1.0 * (b - c)
    blended = (1 - 0.5) * a + 0.5 * b
    assert torch.equal(got, (1 - s) * added + s * blended)
    assert not bool(got.isnan().any())


# ---- elementwise kernels in chunks -----------------------------------------------------------


def test_elementwise_kernels_give_the_same_bits_in_any_chunks() -> None:
    short = operands(5, (600,), torch.float32)
    long = operands(6, (20_011,), torch.float32)
    cases = [
        (train_difference, {"alpha": 0.8}),
        (multiply_difference, {"alpha": 0.3, "beta": 0.6}),
        (multiply_difference, {"alpha": 0.0, "beta": 0.2}),
        (similarity_add_difference, {"alpha": 0.7, "beta": 0.4}),
    ]
    for kernel, weights in cases:
        for xs, sizes in ((short, (1, 7)), (long, (4099, 8192))):
            whole = kernel(*xs, **weights)
            for size in sizes:
                assert torch.equal(in_chunks(kernel, xs, size, **weights), whole), kernel


# ---- the filters against explicit loops ------------------------------------------------------


def reflect(i: int, n: int) -> int:
    """scipy.ndimage's "reflect" extension: d c b a | a b c d | d c b a, repeated."""
    while i < 0 or i >= n:
        i = -i - 1 if i < 0 else 2 * n - 1 - i
    return i


def median_loops(x: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x)
    values = x.tolist()
    for index in itertools.product(*(range(n) for n in x.shape)):
        box = []
        for offset in itertools.product((-1, 0, 1), repeat=x.dim()):
            source = values
            for i, o, n in zip(index, offset, x.shape, strict=True):
                source = source[reflect(i + o, n)]
            box.append(source)
        box.sort()
        out[index] = box[len(box) // 2]
    return out


def gaussian_loops(x: torch.Tensor) -> torch.Tensor:
    """sigma 1, 9 taps, one axis after another, each in double, stored as float32."""
    taps = [math.exp(-0.5 * t * t) for t in range(-4, 5)]
    taps = [w / sum(taps) for w in taps]
    y = x.clone()
    for dim in range(x.dim()):
        z = torch.empty_like(y)
        for index in itertools.product(*(range(n) for n in y.shape)):
            total = 0.0
            for t in range(-4, 5):
                source = list(index)
                source[dim] = reflect(index[dim] + t, y.shape[dim])
                total += taps[t + 4] * y[tuple(source)].item()
            z[index] = total
        y = z
    return y


FILTER_SHAPES = [
    (5,), (1,), (2,), (3,), (9,), (12,), (5, 3), (2, 1), (1, 5), (2, 2), (10, 3),
    (3, 2, 5, 1), (2, 3, 1, 5), (3, 3, 3), (2, 2, 3, 3), (1, 1, 1), (2, 3, 2, 3, 2),
]  # fmt: skip


def test_reflect_indices_follow_scipy() -> None:
    assert reflect_indices(4, 5).tolist() == [3, 3, 2, 1, 0, 0, 1, 2, 3, 3, 2, 1, 0, 0]
    assert reflect_indices(1, 4).tolist() == [0] * 9
    assert reflect_indices(2, 4).tolist() == [0, 1, 1, 0, 0, 1, 1, 0, 0, 1]
    for n in (1, 2, 3, 5):
        assert reflect_indices(n, 6).tolist() == [reflect(i, n) for i in range(-6, n + 6)]


@pytest.mark.parametrize("shape", FILTER_SHAPES)
def test_median_filter_matches_explicit_loops(shape) -> None:
    gen = torch.Generator().manual_seed(len(shape) * 100 + sum(shape))
    spread = torch.randn(shape, generator=gen)
    ties = torch.randint(-2, 3, shape, generator=gen).float()  # many equal values
    for x in (spread, ties):
        assert torch.equal(median_filter3(x), median_loops(x))


@pytest.mark.parametrize("shape", FILTER_SHAPES)
def test_gaussian_filter_matches_explicit_loops(shape) -> None:
    x = torch.randn(shape, generator=torch.Generator().manual_seed(sum(shape)))
    torch.testing.assert_close(gaussian_filter(x), gaussian_loops(x), rtol=2.4e-7, atol=1e-12)


def test_filters_in_slabs_give_the_same_result(monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.randn(23, 6, 3, 3, generator=torch.Generator().manual_seed(7))
    line = torch.randn(40, 12, generator=torch.Generator().manual_seed(8))
    whole = [median_filter3(x), gaussian_filter(x), gaussian_filter(line)]
    monkeypatch.setattr(difference, "MEDIAN_SLAB", 50)
    monkeypatch.setattr(difference, "WINDOW_ELEMENTS", 30)
    assert torch.equal(median_filter3(x), whole[0])
    assert torch.equal(gaussian_filter(x), whole[1])
    assert torch.equal(gaussian_filter(line), whole[2])


def test_filters_leave_scalars_and_constants_alone() -> None:
    scalar = torch.tensor(0.25)
    assert torch.equal(median_filter3(scalar), scalar)
    assert torch.equal(gaussian_filter(scalar), scalar)
    flat = torch.full((4, 3, 3, 3), 0.5)
    assert torch.equal(median_filter3(flat), flat)
    torch.testing.assert_close(gaussian_filter(flat), flat, rtol=1.2e-7, atol=0)


# ---- smooth_add ------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(), (1,), (7,), (6, 5), (4, 3, 3, 3), (3, 2, 1, 1)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_smooth_add(shape, dtype) -> None:
    a, b, c = operands(9, shape, dtype)
    smoothed = gaussian_loops(median_loops(b - c)) if a.dim() else b - c
    for alpha in (0.75, 0.0):
        got = smooth_add(a, b, c, alpha=alpha)
        assert got.shape == a.shape and got.dtype == torch.float32
        torch.testing.assert_close(got, a + alpha * smoothed, rtol=2.4e-7, atol=1e-12)
    assert torch.equal(smooth_add(a, b, c, alpha=0.0), a)


def test_smooth_add_removes_a_spike() -> None:
    a = torch.zeros(5, 5)
    c = torch.zeros(5, 5)
    b = torch.zeros(5, 5)
    b[2, 2] = 1.0  # an isolated change: the median filter drops it entirely
    assert torch.equal(smooth_add(a, b, c, alpha=1.0), a)


# ---- end to end ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("difference-models")
    for seed, name in enumerate("abc", start=11):
        make_checkpoint(folder / f"{name}.safetensors", "sd1", scale=SCALE, seed=seed)
    return folder


def write_recipe(models: Path, tmp_path: Path, call: str) -> Path:
    recipe = tmp_path / "recipe.merge"
    declarations = "".join(f'model {n} = "{models / f"{n}.safetensors"}"\n' for n in "abc")
    recipe.write_text(f'{declarations}save {call} to "m.safetensors" as fp32\n')
    return recipe


def run_recipe(models: Path, tmp_path: Path, call: str) -> dict[str, torch.Tensor]:
    mergelang.run(write_recipe(models, tmp_path, call), cache_dir=tmp_path / "cache", workers=2)
    return load(tmp_path / "m.safetensors")


def inputs(models: Path) -> list[dict[str, torch.Tensor]]:
    return [load(models / f"{n}.safetensors") for n in "abc"]


def test_train_difference_per_block_weights_end_to_end(models: Path, tmp_path: Path) -> None:
    call = "train_difference(a, b, c, alpha={IN: 1, OUT03..OUT05: 0.5, default: 0}, base=0.2)"
    got = run_recipe(models, tmp_path, call)

    def weight(block: str) -> float:
        if block == "BASE":
            return 0.2
        if block.startswith("IN"):
            return 1.0
        return 0.5 if block in ("OUT03", "OUT04", "OUT05") else 0.0

    def formula(xs: Sequence[torch.Tensor], block: str) -> torch.Tensor:
        return train_difference_reference(*xs, weight(block))

    abc = inputs(models)
    assert_same_tensors(got, expected_output("sd1", abc, formula, "fp32"))
    arch = get_architecture("sd1")
    untouched = [k for k in got if arch.block_of(k) in ("M00", "OUT00", "OUT11")]
    assert untouched
    assert all(torch.equal(got[k], abc[0][k].float()) for k in untouched)


def test_similarity_add_difference_end_to_end(models: Path, tmp_path: Path) -> None:
    call = "similarity_add_difference(a, b, c, alpha=0.8, beta={M00: 1, default: 0.4})"
    got = run_recipe(models, tmp_path, call)

    def formula(xs: Sequence[torch.Tensor], block: str) -> torch.Tensor:
        return similarity_reference(*xs, 0.8, 1.0 if block == "M00" else 0.4)

    assert_same_tensors(got, expected_output("sd1", inputs(models), formula, "fp32"))


def assert_close_where_merged(
    got: dict[str, torch.Tensor],
    want: dict[str, torch.Tensor],
    start: dict[str, torch.Tensor],
) -> None:
    """Keys never merged equal; merged keys within a few float32 roundings of ``want``,
    relative to the sizes of the result and of what was added to ``start`` (so a sum that
    cancels is not held to the size of its result)."""
    assert sorted(got) == sorted(want)
    arch = get_architecture("sd1")
    merged = 0
    for key, value in got.items():
        if arch.block_of(key) is None or not value.is_floating_point():
            assert torch.equal(value, want[key]), key
            continue
        merged += 1
        reference = want[key].double()
        scale = reference.abs() + (reference - start[key].double()).abs()
        assert bool(((value.double() - reference).abs() <= 2.4e-7 * scale + 1e-45).all()), key
    assert merged > 100


def test_multiply_difference_end_to_end(models: Path, tmp_path: Path) -> None:
    got = run_recipe(models, tmp_path, "multiply_difference(a, b, c, alpha=0.3, beta=0.6)")

    def formula(xs: Sequence[torch.Tensor], block: str) -> torch.Tensor:
        return multiply_difference_reference(*xs, 0.3, 0.6)

    abc = inputs(models)
    assert_close_where_merged(got, expected_output("sd1", abc, formula, "fp32"), abc[2])


def median_shifts(x: torch.Tensor) -> torch.Tensor:
    """The 3^rank-box median by stacking every shifted copy of the reflect-padded tensor."""
    padded = x
    for dim, n in enumerate(x.shape):
        index = torch.tensor([reflect(i, n) for i in range(-1, n + 1)])
        padded = padded.index_select(dim, index)
    shifted = []
    for offset in itertools.product(range(3), repeat=x.dim()):
        view = padded
        for dim, (start, n) in enumerate(zip(offset, x.shape, strict=True)):
            view = view.narrow(dim, start, n)
        shifted.append(view)
    return torch.stack(shifted, dim=-1).median(dim=-1).values


def gaussian_shifts(x: torch.Tensor) -> torch.Tensor:
    taps = [math.exp(-0.5 * t * t) for t in range(-4, 5)]
    taps = [w / sum(taps) for w in taps]
    y = x
    for dim, n in enumerate(x.shape):
        total = torch.zeros(y.shape, dtype=torch.float64)
        for t in range(-4, 5):
            index = torch.tensor([reflect(i + t, n) for i in range(n)])
            total += taps[t + 4] * y.index_select(dim, index).double()
        y = total.float()
    return y


def test_smooth_add_end_to_end(models: Path, tmp_path: Path) -> None:
    got = run_recipe(models, tmp_path, "smooth_add(a, b, c, alpha={OUT: 0.5, default: 0})")

    def formula(xs: Sequence[torch.Tensor], block: str) -> torch.Tensor:
        a, b, c = xs
        if not block.startswith("OUT"):
            return a  # alpha 0: A + 0 * (a finite smoothed difference) is A
        smoothed = gaussian_shifts(median_shifts(b - c)) if a.dim() else b - c
        return a + 0.5 * smoothed

    abc = inputs(models)
    assert_close_where_merged(got, expected_output("sd1", abc, formula, "fp32"), abc[0])
    arch = get_architecture("sd1")
    kept = [key for key in got if arch.block_of(key) in ("BASE", "IN04", "M00")]
    assert kept
    assert all(torch.equal(got[key], abc[0][key].float()) for key in kept)


def test_a_vector_without_base_is_refused_where_it_is_written(models: Path, tmp_path: Path) -> None:
    call = "smooth_add(a, b, c, alpha=GRAD_V)"
    recipe = write_recipe(models, tmp_path, call)
    with pytest.raises(RecipeError) as caught:
        mergelang.run(recipe, cache_dir=tmp_path / "cache")
    (diag,) = caught.value.diagnostics
    assert "GRAD_V sets no BASE weight" in diag.message
    assert "smooth_add" in diag.message
    assert (diag.span.line, diag.span.column) == (4, len("save ") + call.index("GRAD_V") + 1)
    assert diag.hint == "give 26 values, a BASE: entry, a default:, or base="
    assert not (tmp_path / "m.safetensors").exists()


# ---- CUDA ------------------------------------------------------------------------------------

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@CUDA
@pytest.mark.parametrize("shape", [(), (7,), (40, 12), (64, 48, 3, 3), (16, 8, 1, 1)])
def test_cuda_kernels_give_the_cpu_results(shape) -> None:
    a, b, c = operands(12, shape, torch.float16)
    cases = [
        (train_difference, {"alpha": 0.7}),
        (multiply_difference, {"alpha": 0.3, "beta": 0.6}),
        (similarity_add_difference, {"alpha": 0.9, "beta": 0.5}),
        (smooth_add, {"alpha": 0.8}),
    ]
    for kernel, weights in cases:
        on_gpu = kernel(a.cuda(), b.cuda(), c.cuda(), **weights)
        assert on_gpu.device.type == "cuda"
        torch.testing.assert_close(on_gpu.cpu(), kernel(a, b, c, **weights), rtol=2.4e-7, atol=1e-8)
    # the median is a selection: the same element on both
    assert torch.equal(median_filter3((b - c).cuda()).cpu(), median_filter3(b - c))


@CUDA
def test_cuda_runs_write_the_cpu_results(models: Path, tmp_path: Path) -> None:
    calls = {
        "train": "train_difference(a, b, c, alpha=0.8)",
        "multiply": "multiply_difference(a, b, c, alpha=0.3, beta=0.6)",
        "similarity": "similarity_add_difference(a, b, c, alpha=0.8, beta=0.4)",
        "smooth": "smooth_add(a, b, c, alpha=0.5)",
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
