from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mergelang.arch import SD1, SDXL
from mergelang.block_weights import BlockWeights, WeightsError
from mergelang.methods import (
    REGISTRY,
    REQUIRED,
    MethodRegistry,
    MethodSpec,
    Param,
    PluginError,
    Range,
    RegistrationError,
    Weights,
    get_method,
    linear,
    load_entry_point_methods,
    method,
    method_names,
    suggest_method,
)
from mergelang.presets import BUILTIN_PRESETS


def registered(name: str) -> MethodSpec:
    """The method ``name``: called like its kernel, it allocates ``out`` when none is given."""
    spec = get_method(name)
    assert spec is not None, name
    return spec


weighted_sum = registered("weighted_sum")
add_difference = registered("add_difference")


def tensors(seed: int, *shape: int, count: int = 3) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=gen, dtype=torch.float32) for _ in range(count)]


# --- the registered linear methods -------------------------------------------------------


def test_builtin_methods_are_registered() -> None:
    names = method_names()
    assert "weighted_sum" in names
    assert "add_difference" in names
    assert names == sorted(names)


def test_signatures() -> None:
    ws = get_method("weighted_sum")
    ad = get_method("add_difference")
    assert ws is not None
    assert ad is not None
    assert ws.signature() == "weighted_sum(a, b, alpha=0.5, base=None)"
    assert ad.signature() == "add_difference(a, b, c, alpha=1.0, base=None)"


def test_formulas_come_from_the_docstrings() -> None:
    ws = get_method("weighted_sum")
    ad = get_method("add_difference")
    assert ws is not None
    assert ad is not None
    assert ws.formula == "(1 - alpha) * A + alpha * B"
    assert ad.formula == "A + alpha * (B - C)"
    assert "float32" in ws.doc
    assert ws.kernel is linear.weighted_sum
    assert ws.elementwise is True
    assert ws.needs_stats is False


def test_weighted_sum_params() -> None:
    spec = get_method("weighted_sum")
    assert spec is not None
    a, b, alpha, base = spec.params
    assert (a.kind, a.required, b.kind, b.required) == ("model", True, "model", True)
    assert a.default is REQUIRED
    assert (alpha.kind, alpha.default, alpha.required) == ("weights", 0.5, False)
    assert alpha.minimum is None
    assert alpha.maximum is None
    assert alpha.base_default == 0.0
    assert (base.kind, base.default, base.base_of) == ("number", None, "alpha")
    assert base.base_default is None
    assert spec.base_param_for("alpha") is base
    assert [p.name for p in spec.kernel_params] == ["alpha"]
    assert [p.name for p in spec.model_params] == ["a", "b"]
    assert all(p.doc for p in spec.params)


def test_add_difference_params() -> None:
    spec = get_method("add_difference")
    assert spec is not None
    assert [p.name for p in spec.model_params] == ["a", "b", "c"]
    alpha = spec.param("alpha")
    assert alpha is not None
    assert alpha.base_default is None
    assert (alpha.minimum, alpha.maximum) == (None, None)
    assert spec.param("nope") is None


def test_unknown_method_and_suggestions() -> None:
    assert get_method("weighted_summ") is None
    assert suggest_method("weighted_summ") == "weighted_sum"
    assert suggest_method("wieghted_sum") == "weighted_sum"
    assert suggest_method("Weighted_Sum") == "weighted_sum"
    assert suggest_method("add_diff") == "add_difference"
    assert suggest_method("xyz") is None


# --- the BASE rule -----------------------------------------------------------------------


def test_weighted_sum_base_defaults_to_zero() -> None:
    spec = get_method("weighted_sum")
    assert spec is not None
    r = spec.resolve_weights("alpha", BUILTIN_PRESETS["GRAD_V"], SD1.scheme)
    assert r.base == 0.0
    assert r["IN00"] == 1.0
    assert r["M00"] == 0.0


def test_base_param_overrides_even_a_given_base() -> None:
    spec = get_method("weighted_sum")
    assert spec is not None
    w26 = BlockWeights.from_vector([0.9, *[1.0] * 25])
    assert spec.resolve_weights("alpha", w26, SD1.scheme).base == 0.9
    assert spec.resolve_weights("alpha", w26, SD1.scheme, base=0.3).base == 0.3
    assert spec.resolve_weights("alpha", w26, SD1.scheme, base=0.0).base == 0.0


def test_scalar_alpha_sets_its_own_base() -> None:
    spec = get_method("add_difference")
    assert spec is not None
    assert spec.resolve_weights("alpha", BlockWeights.scalar(0.4), SDXL.scheme).base == 0.4


def test_add_difference_without_base_is_an_error() -> None:
    spec = get_method("add_difference")
    assert spec is not None
    with pytest.raises(WeightsError) as info:
        spec.resolve_weights("alpha", BUILTIN_PRESETS["GRAD_V"], SD1.scheme)
    assert info.value.message == (
        "alpha of add_difference: GRAD_V sets no BASE weight (text encoders and other keys "
        "outside the U-Net blocks)"
    )
    assert info.value.hint == "give 26 values, a BASE: entry, a default:, or base="
    r = spec.resolve_weights("alpha", BUILTIN_PRESETS["GRAD_V"], SD1.scheme, base=0.5)
    assert r.base == 0.5


def test_resolve_weights_of_a_non_weights_param() -> None:
    spec = get_method("weighted_sum")
    assert spec is not None
    with pytest.raises(KeyError):
        spec.resolve_weights("a", BlockWeights.scalar(1), SD1.scheme)


# --- kernels -----------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.5, 1 / 3, 1.0, -0.5, 1.75])
def test_weighted_sum_exact(alpha: float) -> None:
    a, b, _ = tensors(1, 8, 16)
    expected = (1 - alpha) * a + alpha * b
    got = weighted_sum(a, b, alpha=alpha)
    assert got.dtype == torch.float32
    assert torch.equal(got, expected)
    reference = (1 - alpha) * a.double() + alpha * b.double()
    assert torch.allclose(got.double(), reference, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0, 2.5])
def test_add_difference_exact(alpha: float) -> None:
    a, b, c = tensors(2, 4, 4, 3)
    expected = a + alpha * (b - c)
    got = add_difference(a, b, c, alpha=alpha)
    assert got.dtype == torch.float32
    assert torch.equal(got, expected)
    reference = a.double() + alpha * (b.double() - c.double())
    assert torch.allclose(got.double(), reference, rtol=1e-6, atol=1e-6)


def test_weighted_sum_endpoints_are_the_inputs() -> None:
    a, b, _ = tensors(3, 100)
    assert torch.equal(weighted_sum(a, b, alpha=0.0), a)
    assert torch.equal(weighted_sum(a, b, alpha=1.0), b)


def test_add_difference_of_equal_models_is_a() -> None:
    a, b, _ = tensors(4, 100)
    assert torch.equal(add_difference(a, b, b.clone(), alpha=0.7), a)


def test_kernels_write_into_out() -> None:
    a, b, c = tensors(5, 6, 7)
    out = torch.empty(6, 7)
    result = weighted_sum(a, b, alpha=0.3, out=out)
    assert result.data_ptr() == out.data_ptr()
    assert torch.equal(out, (1 - 0.3) * a + 0.3 * b)
    out2 = torch.empty(6, 7)
    result2 = add_difference(a, b, c, alpha=0.6, out=out2)
    assert result2.data_ptr() == out2.data_ptr()
    assert torch.equal(out2, a + 0.6 * (b - c))


def test_kernels_compute_in_float32_from_half_inputs() -> None:
    a, b, c = (t.to(torch.float16) for t in tensors(6, 32))
    got = weighted_sum(a, b, alpha=0.25)
    assert got.dtype == torch.float32
    assert torch.equal(got, (1 - 0.25) * a.float() + 0.25 * b.float())
    got2 = add_difference(a, b, c, alpha=0.5)
    assert got2.dtype == torch.float32
    assert torch.equal(got2, a.float() + 0.5 * (b.float() - c.float()))


def test_inputs_are_not_modified() -> None:
    a, b, c = tensors(7, 10)
    copies = [t.clone() for t in (a, b, c)]
    weighted_sum(a, b, alpha=0.5)
    add_difference(a, b, c, alpha=0.5, out=torch.empty(10))
    for t, copy in zip((a, b, c), copies, strict=True):
        assert torch.equal(t, copy)


def test_call_kernel_leaves_base_out() -> None:
    spec = get_method("weighted_sum")
    assert spec is not None
    a, b, _ = tensors(8, 5)
    got = spec.call_kernel([a, b], {"alpha": 0.25, "base": 0.9})
    assert torch.equal(got, (1 - 0.25) * a + 0.25 * b)
    out = torch.empty(5)
    spec.call_kernel([a, b], {"alpha": 0.25}, out=out)
    assert torch.equal(out, got)


@settings(max_examples=60, deadline=None)
@given(
    alpha=st.floats(min_value=-2, max_value=3, allow_nan=False),
    seed=st.integers(min_value=0, max_value=2**31 - 1),
)
def test_property_kernels_match_formulas_chunked(alpha: float, seed: int) -> None:
    a, b, c = tensors(seed, 64)
    ws = weighted_sum(a, b, alpha=alpha)
    ad = add_difference(a, b, c, alpha=alpha)
    assert torch.equal(ws, (1 - alpha) * a + alpha * b)
    assert torch.equal(ad, a + alpha * (b - c))
    # elementwise: computing chunk by chunk gives the same bits
    pieces = zip(torch.split(a, 10), torch.split(b, 10), strict=True)
    chunks = [weighted_sum(x, y, alpha=alpha) for x, y in pieces]
    assert torch.equal(torch.cat(chunks), ws)


# --- registering -------------------------------------------------------------------------


def kernel_with_doc(
    a: torch.Tensor, *, k: Annotated[float, Range(0, 4)] = 1.0, out: torch.Tensor
) -> torch.Tensor:
    """k * A"""
    return torch.mul(a, k, out=out)


def legacy_kernel(a: Any, *, k: float) -> Any:
    """k * A"""
    return k * a


def test_register_in_a_private_registry() -> None:
    registry = MethodRegistry()
    decorated = method("scale", registry=registry)(kernel_with_doc)
    assert decorated is kernel_with_doc
    spec = registry.get("scale")
    assert spec is not None
    assert spec.signature() == "scale(a, k=1.0)"
    assert spec.formula == "k * A"
    assert registry.names() == ["scale"]
    assert "scale" in registry
    assert len(registry) == 1
    assert REGISTRY.get("scale") is None
    k = spec.param("k")
    assert k is not None
    assert k.range_error(5) == "k is at most 4, not 5"
    assert k.range_error(-0.5) == "k is at least 0, not -0.5"
    assert k.range_error(0) is None
    assert torch.equal(spec(torch.tensor([1.0, -2.0]), k=3.0), torch.tensor([3.0, -6.0]))


def test_registering_a_name_twice_raises() -> None:
    registry = MethodRegistry()
    method("twice", registry=registry)(kernel_with_doc)
    with pytest.raises(RegistrationError, match="'twice' is already registered"):
        method("twice", registry=registry)(kernel_with_doc)
    with pytest.raises(RegistrationError, match="'weighted_sum' is already registered"):
        method("weighted_sum")(kernel_with_doc)
    spec = get_method("weighted_sum")
    assert spec is not None
    assert spec.kernel is linear.weighted_sum


def test_variadic_signature_and_string_default() -> None:
    registry = MethodRegistry()

    def ties(
        base: torch.Tensor,
        *models: torch.Tensor,
        alpha: Weights = 1.0,
        k: Annotated[float, Range(0.0, 1.0)] = 0.2,
        mode: str = 'sum"s',
        seed: int = 0,
    ) -> torch.Tensor:
        """C + alpha * elect(top_k(X - C))"""
        return models[0]

    method("ties", needs_stats=False, elementwise=False, registry=registry)(ties)
    spec = registry.get("ties")
    assert spec is not None
    assert spec.signature() == 'ties(base, *models, alpha=1.0, k=0.2, mode="sum\\"s", seed=0)'
    assert spec.elementwise is False
    assert spec.params == (
        Param("base", "model"),
        Param("models", "model", variadic=True),
        Param("alpha", "weights", default=1.0),
        Param("k", "number", default=0.2, minimum=0.0, maximum=1.0),
        Param("mode", "string", default='sum"s'),
        Param("seed", "int", default=0),
    )


def test_a_params_list_still_registers_with_a_deprecation_warning() -> None:
    registry = MethodRegistry()
    with pytest.warns(DeprecationWarning, match=r"method scale: params=\[Param\(\.\.\.\)\] is"):
        decorate = method(
            "scale",
            params=[Param("a", "model"), Param("k", "number", default=1.0, minimum=0)],
            elementwise=False,
            registry=registry,
        )
    assert decorate(legacy_kernel) is legacy_kernel
    spec = registry.get("scale")
    assert spec is not None
    assert spec.signature() == "scale(a, k=1.0)"
    assert spec.writes_out is False
    assert torch.equal(spec.call_kernel([torch.ones(2)], {"k": 2.0}), torch.full((2,), 2.0))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ([Param("a", "model"), Param("a", "number", default=1.0)], "'a' appears twice"),
        (
            [Param("x", "number", default=1.0), Param("a", "model")],
            "required parameter 'a' follows an optional one",
        ),
        (
            [Param("m", "model", variadic=True), Param("n", "model", variadic=True)],
            "only one parameter may be variadic",
        ),
        (
            [Param("a", "model"), Param("base", "number", default=None, base_of="alpha")],
            "base is base_of 'alpha', which is not a weights parameter",
        ),
    ],
)
def test_bad_method_definitions(params: list[Param], message: str) -> None:
    with (
        pytest.warns(DeprecationWarning),
        pytest.raises(RegistrationError, match=message),
    ):
        method("bad", params=params, registry=MethodRegistry())(legacy_kernel)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Param("n", "number", variadic=True), "only model parameters are variadic"),
        (lambda: Param("n", "weights", base_of="x"), "base_of is for number parameters"),
        (lambda: Param("n", "number", base_default=0.0), "base_default is for weights"),
        (lambda: Param("m", "model", default=None), "model parameters have no default"),
        (lambda: Param("n", "float"), "kind 'float' is not one of"),  # type: ignore[arg-type]
        (lambda: Param("n m", "number"), "is not an identifier"),
        (lambda: Param("n", "number", minimum=2, maximum=1), "minimum is above maximum"),
    ],
)
def test_bad_params(build: Any, message: str) -> None:
    with pytest.raises(RegistrationError, match=message):
        build()


def test_kernel_without_docstring_is_refused() -> None:
    def bare(a: torch.Tensor) -> torch.Tensor:
        return a

    with pytest.raises(RegistrationError, match="needs a docstring stating its formula"):
        method("bare", elementwise=False, registry=MethodRegistry())(bare)


def test_bad_method_name() -> None:
    with pytest.raises(RegistrationError, match="not an identifier"):
        method("weighted-sum")


def test_required_sentinel() -> None:
    assert repr(REQUIRED) == "REQUIRED"
    assert Param("a", "model").required
    assert not Param("x", "number", default=None).required


# --- entry points ------------------------------------------------------------------------


def make_plugin(root: Path, dist: str, module: str, source: str, *, value: str = "") -> None:
    """A real installed distribution on sys.path: a dist-info with an entry point."""
    (root / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    info = root / f"{dist}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n", encoding="utf-8"
    )
    (info / "entry_points.txt").write_text(
        f"[mergelang.methods]\n{dist} = {value or module}\n", encoding="utf-8"
    )


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    method_names()  # the lazy first load happens before the plugin appears
    before = set(REGISTRY.names())
    modules = set(sys.modules)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in set(REGISTRY.names()) - before:
        REGISTRY.unregister(name)
    for name in set(sys.modules) - modules:
        if name.startswith("mlplugin_"):
            del sys.modules[name]


GOOD_PLUGIN = """
from __future__ import annotations

from typing import TYPE_CHECKING

from mergelang.methods import Weights, method

if TYPE_CHECKING:
    from torch import Tensor


@method("plugin_scaled_sum", elementwise=False)
def plugin_scaled_sum(a: Tensor, b: Tensor, *, wa: Weights = 1.0, wb: Weights = 1.0) -> Tensor:
    '''wA * A + wB * B'''
    return wa * a + wb * b
"""

RUNTIME_ANNOTATIONS_PLUGIN = """
from typing import Annotated

from mergelang.methods import Doc, Range, Weights, method


def register():
    @method("plugin_callable_sum")
    def plugin_callable_sum(
        a: Annotated["Tensor", Doc("model A")],
        b: "Tensor",
        *,
        wa: Annotated[Weights, Range(0, 2)] = 1.0,
        label: "str | None" = None,
        out: "Tensor",
    ) -> "Tensor":
        '''wA * A + B'''
        import torch

        torch.mul(a, wa, out=out)
        return out.add_(b)
"""


def test_entry_point_plugin_registers_methods(plugin_dir: Path) -> None:
    make_plugin(plugin_dir, "mlplugin-good", "mlplugin_good", GOOD_PLUGIN)
    assert load_entry_point_methods() == ["plugin_scaled_sum"]
    spec = get_method("plugin_scaled_sum")
    assert spec is not None
    assert spec.signature() == "plugin_scaled_sum(a, b, wa=1.0, wb=1.0)"
    assert spec.formula == "wA * A + wB * B"
    assert "plugin_scaled_sum" in method_names()
    assert load_entry_point_methods() == []  # loaded once


def test_entry_point_callable_registers(plugin_dir: Path) -> None:
    make_plugin(
        plugin_dir,
        "mlplugin-callable",
        "mlplugin_callable",
        RUNTIME_ANNOTATIONS_PLUGIN,
        value="mlplugin_callable:register",
    )
    assert load_entry_point_methods() == ["plugin_callable_sum"]
    spec = registered("plugin_callable_sum")
    assert spec.params == (
        Param("a", "model", doc="model A"),
        Param("b", "model"),
        Param("wa", "weights", default=1.0, minimum=0, maximum=2),
        Param("label", "string", default=None),
    )
    a, b = torch.tensor([1.0, 2.0]), torch.tensor([0.5, 0.25])
    assert torch.equal(spec(a, b, wa=2.0), torch.tensor([2.5, 4.25]))


def test_broken_plugin_is_named(plugin_dir: Path) -> None:
    make_plugin(plugin_dir, "mlplugin-broken", "mlplugin_broken", "import no_such_module_xyz\n")
    with pytest.raises(PluginError) as info:
        load_entry_point_methods()
    message = info.value.diagnostics[0].message
    assert message.startswith(
        "cannot load merge methods from entry point mlplugin-broken = mlplugin_broken: "
        "ModuleNotFoundError"
    )
    assert "no_such_module_xyz" in message
    assert info.value.entry_point == "mlplugin-broken = mlplugin_broken"
    assert info.value.exit_code == 1


def test_failing_plugin_registrations_are_rolled_back(plugin_dir: Path) -> None:
    source = GOOD_PLUGIN.replace("plugin_scaled_sum", "plugin_half_done") + (
        "\nraise RuntimeError('plugin exploded')\n"
    )
    make_plugin(plugin_dir, "mlplugin-half", "mlplugin_half", source)
    with pytest.raises(PluginError, match="RuntimeError: plugin exploded"):
        load_entry_point_methods()
    assert REGISTRY.get("plugin_half_done") is None


def test_plugin_taking_a_builtin_name(plugin_dir: Path) -> None:
    source = GOOD_PLUGIN.replace('"plugin_scaled_sum"', '"weighted_sum"')
    make_plugin(plugin_dir, "mlplugin-clash", "mlplugin_clash", source)
    with pytest.raises(PluginError, match="'weighted_sum' is already registered"):
        load_entry_point_methods()
    spec = get_method("weighted_sum")
    assert spec is not None
    assert spec.kernel is linear.weighted_sum


def test_a_plugin_registers_without_importing_torch(tmp_path: Path) -> None:
    make_plugin(tmp_path, "mlplugin-lazy", "mlplugin_lazy", GOOD_PLUGIN)
    code = (
        "import sys\n"
        "from mergelang.methods import get_method\n"
        "spec = get_method('plugin_scaled_sum')\n"
        "print(spec.signature(), 'torch' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])},
    )
    assert result.stdout.strip() == "plugin_scaled_sum(a, b, wa=1.0, wb=1.0) False"


# --- no torch at import ------------------------------------------------------------------


def test_lookups_do_not_import_torch() -> None:
    code = (
        "import sys\n"
        "from mergelang.methods import get_method, method_names\n"
        "from mergelang.presets import PresetTable\n"
        "from mergelang.block_weights import BlockWeights\n"
        "assert get_method('weighted_sum') is not None\n"
        "assert 'add_difference' in method_names()\n"
        "from mergelang.arch import SD1\n"
        "PresetTable().get('GRAD_V').resolve(SD1.scheme, base=0.0)\n"
        "print('torch' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "False"
