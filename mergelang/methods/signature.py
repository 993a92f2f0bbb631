"""Reading a kernel's typed signature as its method's parameters.

The positional parameters annotated ``Tensor`` are the models, in order (``*models: Tensor``
takes one or more); every other parameter is passed by keyword and its annotation gives its
kind: ``Weights`` (block weights, a ``float`` per block), ``float`` (a number), ``int``,
``str``, any of the last three optionally ``| None``. A Python default is the parameter's
default. ``Annotated`` metadata (:mod:`mergelang.methods.params`) adds the doc, a
:class:`Range`, a string parameter's :class:`Choices` (checked at check time), a weights
parameter's :class:`BaseDefault` and its :class:`BaseNumber`, which becomes one more
parameter, after the kernel's own.

Three names are not parameters but what the executor hands an elementwise kernel (``out``,
the buffer it writes its result into), a method with a statistics pass (``stats``) and one
that asks for it (``key``); each must be in the signature exactly when the method takes it.

Kernel modules import torch only inside functions or under ``TYPE_CHECKING``, so with
``from __future__ import annotations`` their annotations are strings naming a ``Tensor``
that does not exist at run time. They are evaluated here in the kernel's module, with any
name the module does not define standing for itself (:class:`_Unresolved`): ``Tensor`` reads
as a model without torch being imported.
"""

from __future__ import annotations

import builtins
import inspect
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ForwardRef, TypeVar, Union

from mergelang.block_weights import BlockWeights
from mergelang.methods.params import (
    REQUIRED,
    WEIGHTS,
    BaseDefault,
    BaseNumber,
    Choices,
    Doc,
    Param,
    ParamKind,
    Range,
    RegistrationError,
)

__all__ = ["KERNEL_EXTRAS", "KernelSignature", "read_signature"]

KERNEL_EXTRAS: typing.Final = ("out", "stats", "key")
"""Keyword names the executor passes besides the parameters (see :func:`read_signature`)."""

_Item = TypeVar("_Item")

_PLAIN_KINDS: dict[object, ParamKind] = {float: "number", int: "int", str: "string"}

_KIND_TEXT: dict[str, str] = {
    "weights": "a number",
    "number": "a number",
    "int": "an int",
    "string": "a string",
}


@dataclass(frozen=True)
class KernelSignature:
    """What a kernel's signature says: its method's parameters and whether the kernel takes
    ``out`` (the executor's result buffer)."""

    params: tuple[Param, ...]
    takes_out: bool


def read_signature(
    method: str,
    kernel: Callable[..., Any],
    *,
    elementwise: bool,
    stats: bool,
    wants_key: bool,
) -> KernelSignature:
    """The parameters of method ``method`` as ``kernel``'s signature states them.

    Raises :class:`RegistrationError`, naming the method and parameter, for a signature that
    cannot be read as a method: a parameter without an annotation or with one that is not a
    parameter type, a model with a default or after a non-model, ``**kwargs``, metadata on a
    kind it does not fit, a default of the wrong type, or ``out``/``stats``/``key`` present
    where the method does not take them (or missing where it does).
    """
    try:
        signature = inspect.signature(kernel)
    except (TypeError, ValueError) as exc:
        raise RegistrationError(
            f"method {method}: cannot read the kernel's signature: {exc}"
        ) from None
    names = _AnnotationNames(getattr(kernel, "__globals__", {}))
    takes = {"out": elementwise, "stats": stats, "key": wants_key}
    found: set[str] = set()
    params: list[Param] = []
    bases: list[Param] = []
    after_models: str | None = None
    for parameter in signature.parameters.values():
        where = f"method {method}: parameter {parameter.name}"
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            raise RegistrationError(
                f"{where}: a method's parameters are named one by one, not taken as **kwargs"
            )
        if parameter.name in takes:
            _check_extra(method, parameter, takes[parameter.name])
            found.add(parameter.name)
            continue
        if parameter.annotation is inspect.Parameter.empty:
            raise RegistrationError(
                f"{where} has no annotation: annotate it Tensor (a model), Weights, float, "
                "int or str"
            )
        kind, optional, metadata = _classify(where, parameter.annotation, names)
        if kind == "model":
            if parameter.kind is inspect.Parameter.KEYWORD_ONLY:
                raise RegistrationError(
                    f"{where}: a model is passed positionally, before * (it is keyword-only)"
                )
            if after_models is not None:
                raise RegistrationError(
                    f"{where}: a model follows {after_models}; the models come first"
                )
        else:
            if parameter.kind is inspect.Parameter.POSITIONAL_ONLY:
                raise RegistrationError(f"{where}: only models are passed positionally")
            if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
                raise RegistrationError(f"{where}: *{parameter.name} takes models: Tensor")
            after_models = parameter.name
        param = _param(where, parameter, kind, optional, metadata)
        params.append(param)
        base = _last(metadata, BaseNumber)
        if base is not None:
            bases.append(_base_param(f"method {method}: parameter {base.name}", base, param))
    for name, taken in takes.items():
        if taken and name not in found:
            raise RegistrationError(f"method {method}: the kernel must take {_EXTRAS[name]}")
    return KernelSignature((*params, *bases), takes_out="out" in found)


_EXTRAS = {
    "out": "out= (an elementwise kernel writes its result into that float32 buffer and "
    "returns it; register a kernel that returns a new tensor with elementwise=False)",
    "stats": "stats= (the collector that the stats= factory made)",
    "key": "key= (the checkpoint key, asked for with wants_key=True)",
}

_NOT_TAKEN = {
    "out": "out= is for elementwise kernels; one registered with elementwise=False returns "
    "its result",
    "stats": "stats= is for methods registered with a stats= collector factory",
    "key": "key is the checkpoint key, passed to methods registered with wants_key=True",
}


def _check_extra(method: str, parameter: inspect.Parameter, taken: bool) -> None:
    where = f"method {method}: parameter {parameter.name}"
    if not taken:
        raise RegistrationError(f"{where}: {_NOT_TAKEN[parameter.name]}")
    if parameter.kind not in (
        inspect.Parameter.KEYWORD_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    ):
        raise RegistrationError(f"{where} is passed by keyword: make it keyword-only")


def _param(
    where: str,
    parameter: inspect.Parameter,
    kind: ParamKind,
    optional: bool,
    metadata: Sequence[object],
) -> Param:
    default: object = REQUIRED
    if parameter.default is not inspect.Parameter.empty:
        default = parameter.default
        _check_default(where, kind, optional, default)
    bounds = _last(metadata, Range)
    if bounds is not None and kind not in ("number", "int", "weights"):
        raise RegistrationError(f"{where}: a Range is for float, int and Weights parameters")
    if _last(metadata, BaseNumber) is not None and kind != "weights":
        raise RegistrationError(f"{where}: a BaseNumber is for Weights parameters")
    base_default = _last(metadata, BaseDefault)
    if base_default is not None and kind != "weights":
        raise RegistrationError(f"{where}: a BaseDefault is for Weights parameters")
    choices = _last(metadata, Choices)
    if choices is not None and kind != "string":
        raise RegistrationError(f"{where}: Choices are for str parameters")
    doc = _last(metadata, Doc)
    try:
        return Param(
            parameter.name,
            kind,
            default=default,
            minimum=None if bounds is None else bounds.minimum,
            maximum=None if bounds is None else bounds.maximum,
            open_minimum=bounds is not None and bounds.open_minimum,
            open_maximum=bounds is not None and bounds.open_maximum,
            variadic=parameter.kind is inspect.Parameter.VAR_POSITIONAL,
            base_default=None if base_default is None else base_default.value,
            doc="" if doc is None else doc.text,
            choices=None if choices is None else choices.values,
        )
    except RegistrationError as exc:
        raise _restated(where, exc) from None


def _base_param(where: str, base: BaseNumber, weights: Param) -> Param:
    """The ``number`` parameter that :class:`BaseNumber` metadata on ``weights`` declares."""
    try:
        return Param(
            base.name,
            "number",
            default=None,
            minimum=base.minimum,
            maximum=base.maximum,
            base_of=weights.name,
            doc=base.doc,
        )
    except RegistrationError as exc:
        raise _restated(where, exc) from None


def _restated(where: str, error: RegistrationError) -> RegistrationError:
    """``error`` (from :class:`Param`, which names the parameter) naming ``where`` instead."""
    return RegistrationError(f"{where}: {str(error).split(': ', 1)[-1]}")


def _check_default(where: str, kind: ParamKind, optional: bool, default: object) -> None:
    if kind == "model":
        raise RegistrationError(f"{where}: model parameters have no default")
    if default is None:
        if not optional:
            raise RegistrationError(f"{where}: a default of None needs the annotation '| None'")
        return
    number = isinstance(default, int | float) and not isinstance(default, bool)
    fits = {
        "weights": number or isinstance(default, BlockWeights),
        "number": number,
        "int": isinstance(default, int) and not isinstance(default, bool),
        "string": isinstance(default, str),
    }[kind]
    if not fits:
        raise RegistrationError(f"{where}: the default {default!r} is not {_KIND_TEXT[kind]}")


def _last(metadata: Sequence[object], kind: type[_Item]) -> _Item | None:
    """The last metadata item of type ``kind`` (a later one overrides an alias's), or None."""
    found = [item for item in metadata if isinstance(item, kind)]
    return found[-1] if found else None


# ---------------------------------------------------------------------------------------------
# Annotations


def _classify(
    where: str, annotation: object, names: _AnnotationNames
) -> tuple[ParamKind, bool, list[object]]:
    """``(kind, optional, metadata)`` of a parameter's annotation."""
    metadata: list[object] = []
    core = _strip(where, annotation, names, metadata)
    optional = False
    members = _union_members(core)
    if members is not None and type(None) in members and len(members) == 2:
        optional = True
        (core,) = [m for m in members if m is not type(None)]
        core = _strip(where, core, names, metadata)
    weights = any(item is WEIGHTS for item in metadata)
    if weights:
        if core is not float or optional:
            raise RegistrationError(f"{where}: Weights is a float per block, never None")
        return "weights", False, metadata
    if _is_tensor(core):
        if optional:
            raise RegistrationError(f"{where}: a model cannot be None")
        return "model", False, metadata
    kind = _PLAIN_KINDS.get(core)
    if kind is None:
        raise RegistrationError(
            f"{where}: cannot read the annotation '{_text(annotation)}' as a method parameter "
            "(Tensor for a model, Weights for block weights, float, int or str)"
        )
    return kind, optional, metadata


def _strip(
    where: str, annotation: object, names: _AnnotationNames, metadata: list[object]
) -> object:
    """``annotation`` evaluated and without its ``Annotated`` layers, their metadata appended
    in order (an alias's first). A string inside a layer (``Annotated["Tensor", ...]`` in an
    alias) is evaluated in the kernel's module too."""
    annotation = names.resolve(where, annotation)
    while typing.get_origin(annotation) is Annotated:
        metadata.extend(getattr(annotation, "__metadata__", ()))
        annotation = names.resolve(where, getattr(annotation, "__origin__", annotation))
    return annotation


def _union_members(annotation: object) -> tuple[object, ...] | None:
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is Union:
        return typing.get_args(annotation)
    return None


def _is_tensor(annotation: object) -> bool:
    """``torch.Tensor`` itself (a module that imports torch), or a ``Tensor`` name that the
    module only imports for type checkers."""
    if isinstance(annotation, _Unresolved):
        parts = annotation.name.split(".")
        return parts[-1] == "Tensor" and all(part.isidentifier() for part in parts)
    return (
        isinstance(annotation, type)
        and annotation.__name__ == "Tensor"
        and annotation.__module__.split(".")[0] == "torch"
    )


def _text(annotation: object) -> str:
    if isinstance(annotation, str):
        return annotation
    if isinstance(annotation, type):
        return annotation.__qualname__
    return repr(annotation)


class _Unresolved:
    """A name an annotation uses that its module does not define at run time (``Tensor``,
    imported under ``TYPE_CHECKING``), standing for itself."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __getattr__(self, attribute: str) -> _Unresolved:
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        return _Unresolved(f"{self.name}.{attribute}")

    def __call__(self, *args: object, **kwargs: object) -> object:
        """Makes it pass as a type in ``Annotated[Tensor, ...]``; never called."""
        raise TypeError(f"{self.name} is not defined at run time")

    def __getitem__(self, item: object) -> _Unresolved:
        return _Unresolved(f"{self.name}[...]")

    def __or__(self, other: object) -> _Unresolved:
        return _Unresolved(f"{self.name} | {_text(other)}")

    def __ror__(self, other: object) -> _Unresolved:
        return _Unresolved(f"{_text(other)} | {self.name}")

    def __repr__(self) -> str:
        return self.name


class _AnnotationNames(Mapping[str, object]):
    """The names an annotation is evaluated with: the kernel module's, then the builtins,
    then any other name as :class:`_Unresolved`."""

    def __init__(self, namespace: Mapping[str, object]) -> None:
        self._namespace = namespace

    def __getitem__(self, name: str) -> object:
        if name in self._namespace:
            return self._namespace[name]
        if hasattr(builtins, name):
            return getattr(builtins, name)
        return _Unresolved(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._namespace)

    def __len__(self) -> int:
        return len(self._namespace)

    def resolve(self, where: str, annotation: object) -> object:
        """``annotation`` evaluated when it is a string (or a forward reference)."""
        if isinstance(annotation, ForwardRef):
            annotation = annotation.__forward_arg__
        if not isinstance(annotation, str):
            return annotation
        try:
            # the names come from the mapping (locals), so none is ever missing
            return eval(annotation, {"__builtins__": {}}, self)
        except Exception as exc:
            raise RegistrationError(
                f"{where}: cannot evaluate the annotation {annotation!r}: "
                f"{type(exc).__name__}: {exc}"
            ) from None
