"""A kernel's typed signature is its method's parameter list.

Kernels here are compiled from source in a namespace without torch, as a kernel module that
imports ``Tensor`` only under ``TYPE_CHECKING`` sees it: their annotations are strings that
name a ``Tensor`` which does not exist at run time. Each reads as exact :class:`Param`
objects, or is refused with a message naming the method and the parameter.
"""

from __future__ import annotations

import textwrap
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch

from mergelang.methods import (
    BaseDefault,
    BaseNumber,
    Doc,
    MethodRegistry,
    MethodSpec,
    Param,
    Range,
    RegistrationError,
    Weights,
    get_method,
    method,
    method_names,
)


def kernel(source: str) -> Callable[..., Any]:
    """The function ``source`` defines, compiled with the names a kernel module imports."""
    namespace: dict[str, Any] = {
        "Annotated": __import__("typing").Annotated,
        "BaseDefault": BaseDefault,
        "BaseNumber": BaseNumber,
        "Doc": Doc,
        "Range": Range,
        "Weights": Weights,
    }
    code = "from __future__ import annotations\n" + textwrap.dedent(source)
    exec(compile(code, "<kernel>", "exec"), namespace)
    (function,) = [v for k, v in namespace.items() if k.startswith("k_") and callable(v)]
    return function  # type: ignore[no-any-return]


def register(source: str, **options: Any) -> MethodSpec:
    registry = MethodRegistry()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the typed form never warns
        method("probe", registry=registry, **options)(kernel(source))
    spec = registry.get("probe")
    assert spec is not None
    return spec


def test_every_kind_and_every_piece_of_metadata() -> None:
    spec = register(
        '''
        def k_probe(
            a: Annotated[Tensor, Doc("model A")],
            b: Tensor,
            *,
            alpha: Annotated[
                Weights,
                Doc("B's share"),
                Range(0.0, 1.0),
                BaseDefault(0.25),
                BaseNumber("BASE's share", minimum=0.0, maximum=1.0),
            ] = 0.5,
            beta: Annotated[Weights, Range(0.0, 1.0, open_maximum=True)] = 0.0,
            gamma: Annotated[float, Doc("sharpness"), Range(minimum=0.0)] = 1.0,
            steps: Annotated[int, Range(1, 8)] = 2,
            mode: str = "sum",
            limit: float | None = None,
            out: Tensor,
        ) -> Tensor:
            """A + alpha * B"""
            return out
        '''
    )
    assert spec.signature() == (
        'probe(a, b, alpha=0.5, beta=0.0, gamma=1.0, steps=2, mode="sum", limit=None, base=None)'
    )
    assert spec.params == (
        Param("a", "model", doc="model A"),
        Param("b", "model"),
        Param(
            "alpha",
            "weights",
            default=0.5,
            minimum=0.0,
            maximum=1.0,
            base_default=0.25,
            doc="B's share",
        ),
        Param("beta", "weights", default=0.0, minimum=0.0, maximum=1.0, open_maximum=True),
        Param("gamma", "number", default=1.0, minimum=0.0, doc="sharpness"),
        Param("steps", "int", default=2, minimum=1, maximum=8),
        Param("mode", "string", default="sum"),
        Param("limit", "number", default=None),
        Param(
            "base",
            "number",
            default=None,
            minimum=0.0,
            maximum=1.0,
            base_of="alpha",
            doc="BASE's share",
        ),
    )
    assert [p.name for p in spec.kernel_params] == [
        "alpha",
        "beta",
        "gamma",
        "steps",
        "mode",
        "limit",
    ]
    assert spec.base_param_for("alpha") is spec.params[-1]
    assert spec.writes_out is True
    beta = spec.param("beta")
    assert beta is not None
    assert beta.range_error(1.0) == "beta is less than 1.0, not 1.0"
    assert beta.range_error(-0.5) == "beta is at least 0.0, not -0.5"


def test_variadic_models_stats_and_key() -> None:
    spec = register(
        '''
        def k_probe(base: Tensor, *models: Tensor, seed: int, stats: object, key: str) -> Tensor:
            """base + sum(models)"""
            return base
        ''',
        elementwise=False,
        stats=object,
        wants_key=True,
    )
    assert spec.params == (
        Param("base", "model"),
        Param("models", "model", variadic=True),
        Param("seed", "int"),
    )
    assert spec.signature() == "probe(base, *models, seed)"
    assert (spec.needs_stats, spec.wants_key, spec.writes_out) == (True, True, False)


def test_metadata_of_an_alias_is_overridden_by_the_parameter_s_own() -> None:
    spec = register(
        '''
        ModelA = Annotated["Tensor", Doc("the alias says")]  # a string: no Tensor at run time

        def k_probe(a: Annotated[ModelA, Doc("the parameter says")], b: ModelA) -> Tensor:
            """A"""
            return a
        ''',
        elementwise=False,
    )
    assert [p.doc for p in spec.params] == ["the parameter says", "the alias says"]


def test_torch_tensor_itself_reads_as_a_model() -> None:
    def k_real(a: torch.Tensor, *, out: torch.Tensor) -> torch.Tensor:
        """A"""
        return out.copy_(a)

    registry = MethodRegistry()
    method("real", registry=registry)(k_real)
    spec = registry.get("real")
    assert spec is not None
    assert spec.params == (Param("a", "model"),)


UNREADABLE = [
    ("def k_(a, *, out: Tensor): ...", "parameter a has no annotation: annotate it Tensor"),
    ("def k_(a: Tensor = None, *, out: Tensor): ...", "parameter a: model parameters have no"),
    (
        "def k_(a: Tensor, x: float = 1.0, b: Tensor = ..., *, out: Tensor): ...",
        "parameter b: a model follows x; the models come first",
    ),
    ("def k_(*, a: Tensor, out: Tensor): ...", "parameter a: a model is passed positionally"),
    ("def k_(a: Tensor, x: float, /, *, out: Tensor): ...", "only models are passed positionally"),
    ("def k_(a: Tensor, *x: float, out: Tensor): ...", "parameter x: *x takes models: Tensor"),
    ("def k_(a: Tensor, *, out: Tensor, **rest: float): ...", "not taken as **kwargs"),
    (
        "def k_(a: Tensor, *, flag: bool, out: Tensor): ...",
        "parameter flag: cannot read the annotation 'bool' as a method parameter (Tensor for a "
        "model, Weights for block weights, float, int or str)",
    ),
    (
        "def k_(a: Tensor, *, alpha: Weigths, out: Tensor): ...",
        "parameter alpha: cannot read the annotation 'Weigths' as",
    ),
    ("def k_(a: Tensor | None, *, out: Tensor): ...", "cannot read the annotation 'Tensor | None'"),
    ("def k_(a: Tensor, *, w: Weights | None, out: Tensor): ...", "never None"),
    ("def k_(a: Tensor, *, x: float = None, out: Tensor): ...", "needs the annotation '| None'"),
    ("def k_(a: Tensor, *, n: int = 0.5, out: Tensor): ...", "the default 0.5 is not an int"),
    ("def k_(a: Tensor, *, s: str = 1, out: Tensor): ...", "the default 1 is not a string"),
    (
        "def k_(a: Tensor, *, s: Annotated[str, Range(0, 1)], out: Tensor): ...",
        "parameter s: a Range is for float, int and Weights parameters",
    ),
    (
        "def k_(a: Tensor, *, x: Annotated[float, BaseDefault(0.0)], out: Tensor): ...",
        "parameter x: a BaseDefault is for Weights parameters",
    ),
    (
        "def k_(a: Tensor, *, x: Annotated[int, BaseNumber()], out: Tensor): ...",
        "parameter x: a BaseNumber is for Weights parameters",
    ),
    (
        "def k_(a: Tensor, *, x: Annotated[float, Range(2, 1)], out: Tensor): ...",
        "parameter x: minimum is above maximum",
    ),
    (
        "def k_(base: Tensor, *, w: Annotated[Weights, BaseNumber()], out: Tensor): ...",
        "parameter 'base' appears twice",
    ),
    (
        "def k_(a: Tensor, *, x: float = 1.0, y: float, out: Tensor): ...",
        "required parameter 'y' follows an optional one",
    ),
    ("def k_(a: Tensor): ...", "the kernel must take out= (an elementwise kernel writes"),
    ("def k_(a: Tensor, *, stats: object, out: Tensor): ...", "stats= is for methods registered"),
    ("def k_(a: Tensor, *, key: str, out: Tensor): ...", "key is the checkpoint key, passed"),
    ("def k_(a: Tensor, out: Tensor, /): ...", "parameter out is passed by keyword"),
    ("def k_(a: Tensor, *, alpha: Weights[0], out: Tensor): ...", "cannot evaluate the annot"),
]


@pytest.mark.parametrize(("source", "message"), UNREADABLE)
def test_a_signature_that_is_not_a_method_is_refused(source: str, message: str) -> None:
    function = kernel(source.replace("): ...", '):\n    """A"""\n'))
    with pytest.raises(RegistrationError) as caught:
        method("probe", registry=MethodRegistry())(function)
    assert str(caught.value).startswith("method probe: ")
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"elementwise": False}, "parameter out: out= is for elementwise kernels"),
        ({"stats": object}, "the kernel must take stats="),
        ({"wants_key": True}, "the kernel must take key="),
    ],
)
def test_the_executor_s_keywords_match_the_options(options: dict[str, Any], message: str) -> None:
    function = kernel('def k_(a: Tensor, *, out: Tensor):\n    """A"""\n')
    with pytest.raises(RegistrationError, match=message):
        method("probe", registry=MethodRegistry(), **options)(function)


# ---- calling: one code path for whole keys and chunks -----------------------------------------


def test_call_kernel_allocates_out_when_none_is_given() -> None:
    spec = get_method("add_difference")
    assert spec is not None
    a, b, c = (torch.arange(6, dtype=torch.float16).reshape(2, 3) + i for i in range(3))
    whole = spec.call_kernel([a, b, c], {"alpha": 0.5})
    assert (whole.dtype, whole.shape) == (torch.float32, (2, 3))
    assert torch.equal(whole, a.float() + 0.5 * (b.float() - c.float()))
    buffer = torch.empty(2, 3)
    given = spec.call_kernel([a, b, c], {"alpha": 0.5}, out=buffer)
    assert given.data_ptr() == buffer.data_ptr()
    assert torch.equal(given, whole)


def test_every_elementwise_builtin_writes_into_out() -> None:
    specs = [spec for name in method_names() if (spec := get_method(name)) is not None]
    elementwise = {spec.name for spec in specs if spec.elementwise}
    assert elementwise == {spec.name for spec in specs if spec.writes_out}
    assert len(elementwise) == 9


def test_calling_a_spec_takes_the_kernel_s_arguments_by_name() -> None:
    spec = get_method("weighted_sum")
    assert spec is not None
    a, b = torch.tensor([0.0, 4.0]), torch.tensor([2.0, 8.0])
    assert torch.equal(spec(a, b), torch.tensor([1.0, 6.0]))  # alpha's default, 0.5
    assert torch.equal(spec(a, b, alpha=0.25), torch.tensor([0.5, 5.0]))
    with pytest.raises(TypeError, match="base sets the BASE of alpha"):
        spec(a, b, alpha=0.25, base=0.5)
    with pytest.raises(TypeError, match="unexpected keyword argument 'beta'"):
        spec(a, b, beta=0.25)
    with pytest.raises(TypeError, match="missing 1 required keyword-only argument: 'out'"):
        spec.kernel(a, b, alpha=0.25)
