"""The merge method registry: every method a recipe can call, with its typed parameters.

A method is a per-key kernel registered with :func:`method`::

    @method("weighted_sum", params=[Param("a", "model"), Param("b", "model"),
                                    Param("alpha", "weights", default=0.5)])
    def weighted_sum(a, b, *, alpha):
        '''(1 - alpha) * A + alpha * B'''
        ...

The kernel's docstring states the formula; its first line is the formula itself.

Calling convention (what the executor does for each key): the tensors of the ``model``
parameters positionally, in parameter order (a variadic one contributes all of its tensors),
then every other parameter as a keyword: ``weights`` parameters resolved to this key's block
value (a float), ``number``/``int``/``string`` parameters as given. A ``number`` parameter
with ``base_of`` set is not passed to the kernel: it is folded into the BASE slot of its
weights parameter beforehand (see :meth:`MethodSpec.resolve_weights`).
:meth:`MethodSpec.call_kernel` applies exactly this rule. Kernels receive float32 tensors
(the executor casts) and return float32.

BASE rule: a weights value that sets no BASE (a 25-value vector, a map without ``BASE:`` or
``default:``) takes its BASE from, in order: the parameter named by ``base_of`` when the
recipe gives it (it also overrides a BASE the value does set), then the weights parameter's
``base_default``, and if that is ``None`` too, resolving raises :class:`WeightsError`.

Third-party packages add methods through the ``mergelang.methods`` entry point group: each
entry point names a module whose import registers its methods with this decorator (or a
callable taking no arguments that does). They are loaded on the first lookup.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from types import ModuleType
from typing import Any, Final, Literal, TypeVar

from mergelang.arch.scheme import BlockScheme
from mergelang.block_weights import BlockWeights, ResolvedWeights, WeightsError
from mergelang.errors import Diagnostic, MergelangError

__all__ = [
    "BUILTIN_FAMILIES",
    "ENTRY_POINT_GROUP",
    "REGISTRY",
    "REQUIRED",
    "MethodRegistry",
    "MethodSpec",
    "Param",
    "ParamKind",
    "PluginError",
    "RegistrationError",
    "get_method",
    "load_entry_point_methods",
    "method",
    "method_names",
    "suggest_method",
]

ParamKind = Literal["model", "weights", "number", "int", "string"]
PARAM_KINDS: Final[tuple[str, ...]] = ("model", "weights", "number", "int", "string")

ENTRY_POINT_GROUP: Final = "mergelang.methods"

BUILTIN_FAMILIES: tuple[str, ...] = (
    "mergelang.methods.linear",
    "mergelang.methods.blend",
    "mergelang.methods.difference",
    "mergelang.methods.sparse",
    "mergelang.methods.geometry",
)
"""Modules of mergelang's own method families, imported on the first lookup."""


class _Required:
    """The type of :data:`REQUIRED`."""

    _instance: _Required | None = None

    def __new__(cls) -> _Required:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "REQUIRED"

    def __reduce__(self) -> str:
        return "REQUIRED"


REQUIRED: Final = _Required()
"""The default of a parameter that has none: the recipe must give it."""


class RegistrationError(ValueError):
    """A method definition that cannot be registered (a name taken twice, bad parameters)."""


class PluginError(MergelangError):
    """A ``mergelang.methods`` entry point that cannot be loaded."""

    def __init__(self, entry_point: str, reason: str) -> None:
        self.entry_point = entry_point
        self.reason = reason
        super().__init__(
            [
                Diagnostic(
                    f"cannot load merge methods from entry point {entry_point}: {reason}",
                    "plugin",
                    hint="fix or uninstall the package that provides it",
                )
            ]
        )


@dataclass(frozen=True)
class Param:
    """One parameter of a merge method.

    ``kind``: ``model`` (a checkpoint), ``weights`` (block weights: scalar, vector, map,
    preset), ``number``, ``int`` or ``string``. ``minimum``/``maximum`` bound numbers and
    every block of weights (inclusive; ``None`` = unbounded). ``variadic`` (models only): the
    parameter takes one or more models. ``base_of`` (numbers only): the parameter is the BASE
    weight of the named weights parameter, overriding whatever BASE that value sets; it is
    not passed to the kernel. ``base_default`` (weights only): the BASE used when neither the
    value nor the ``base_of`` parameter gives one; ``None`` makes a missing BASE an error.
    """

    name: str
    kind: ParamKind
    default: object = REQUIRED
    minimum: float | None = None
    maximum: float | None = None
    variadic: bool = False
    base_of: str | None = None
    base_default: float | None = None
    doc: str = ""

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise RegistrationError(f"parameter name {self.name!r} is not an identifier")
        if self.kind not in PARAM_KINDS:
            raise RegistrationError(
                f"parameter {self.name}: kind {self.kind!r} is not one of {', '.join(PARAM_KINDS)}"
            )
        if self.variadic and self.kind != "model":
            raise RegistrationError(f"parameter {self.name}: only model parameters are variadic")
        if self.base_of is not None and self.kind != "number":
            raise RegistrationError(f"parameter {self.name}: base_of is for number parameters")
        if self.base_default is not None and self.kind != "weights":
            raise RegistrationError(
                f"parameter {self.name}: base_default is for weights parameters"
            )
        if self.kind == "model" and not self.required:
            raise RegistrationError(f"parameter {self.name}: model parameters have no default")
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise RegistrationError(f"parameter {self.name}: minimum is above maximum")

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def range_error(self, value: float) -> str | None:
        """Why ``value`` is out of this parameter's range, or ``None`` if it is in range."""
        if self.minimum is not None and value < self.minimum:
            return f"{self.name} is at least {_number_text(self.minimum)}, not {value!r}"
        if self.maximum is not None and value > self.maximum:
            return f"{self.name} is at most {_number_text(self.maximum)}, not {value!r}"
        return None

    def signature(self) -> str:
        """How the parameter reads in a method signature: ``a``, ``*models``, ``alpha=0.5``."""
        if self.variadic:
            return f"*{self.name}"
        if self.required:
            return self.name
        return f"{self.name}={_default_text(self.default)}"


def _number_text(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else repr(value)


def _default_text(value: object) -> str:
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, BlockWeights):
        return value.to_text()
    return repr(value)


@dataclass(frozen=True)
class MethodSpec:
    """A registered merge method.

    ``doc`` is the kernel's docstring; its first line (:attr:`formula`) is the formula.
    ``elementwise``: the kernel treats each element on its own, so the executor may fuse it
    with neighbours and split tensors into chunks; a method that is not gets each key's whole
    tensors (in their shapes) and returns the result instead of filling ``out``.
    ``needs_stats``: the method needs a pass over the whole model first (e.g. a norm over
    every key): ``stats`` makes a collector; before the merge the executor calls its
    ``add(key, block, *tensors)`` with the float32 operands of every merged key, then its
    ``finish()`` if it has one, and passes it to the kernel as ``stats=``.
    ``wants_key``: the kernel also receives ``key=`` (the checkpoint key being merged), e.g.
    to derive a per-key random stream that is the same whatever order keys come in.
    """

    name: str
    params: tuple[Param, ...]
    doc: str
    elementwise: bool
    needs_stats: bool
    kernel: Callable[..., Any]
    stats: Callable[[], Any] | None = None
    wants_key: bool = False

    @property
    def formula(self) -> str:
        return self.doc.splitlines()[0] if self.doc else ""

    def signature(self) -> str:
        """``weighted_sum(a, b, alpha=0.5, base=None)``."""
        return f"{self.name}({', '.join(p.signature() for p in self.params)})"

    def param(self, name: str) -> Param | None:
        for p in self.params:
            if p.name == name:
                return p
        return None

    @property
    def model_params(self) -> tuple[Param, ...]:
        return tuple(p for p in self.params if p.kind == "model")

    @property
    def kernel_params(self) -> tuple[Param, ...]:
        """The parameters passed to the kernel as keywords (not models, not ``base_of``)."""
        return tuple(p for p in self.params if p.kind != "model" and p.base_of is None)

    def base_param_for(self, weights_name: str) -> Param | None:
        """The ``number`` parameter that sets the BASE of weights parameter ``weights_name``."""
        for p in self.params:
            if p.base_of == weights_name:
                return p
        return None

    def resolve_weights(
        self,
        name: str,
        value: BlockWeights,
        scheme: BlockScheme,
        *,
        base: float | None = None,
    ) -> ResolvedWeights:
        """Resolve weights parameter ``name`` for an architecture's block ``scheme``.

        ``base`` is the value of the parameter whose ``base_of`` is ``name`` (``None`` when the
        recipe leaves it out): it overrides BASE. Otherwise an unset BASE falls back to the
        parameter's ``base_default``; a :class:`WeightsError` names the method and parameter.
        """
        param = self.param(name)
        if param is None or param.kind != "weights":
            raise KeyError(f"{self.name} has no weights parameter {name!r}")
        weights = value if base is None else value.with_base(base)
        try:
            return weights.resolve(scheme, base=param.base_default)
        except WeightsError as exc:
            raise WeightsError(
                f"{name} of {self.name}: {exc.message}", hint=exc.hint, index=exc.index
            ) from None

    def call_kernel(
        self, tensors: Sequence[Any], scalars: Mapping[str, object], **extra: Any
    ) -> Any:
        """Call the kernel per the calling convention: ``tensors`` positionally, then the
        kernel parameters found in ``scalars`` as keywords (``base_of`` parameters and unknown
        names are left out), then ``extra`` (e.g. ``out=``)."""
        keywords = {p.name: scalars[p.name] for p in self.kernel_params if p.name in scalars}
        return self.kernel(*tensors, **keywords, **extra)


F = TypeVar("F", bound=Callable[..., Any])


class MethodRegistry:
    """Method specs by name. ``REGISTRY`` is the one recipes use."""

    def __init__(self) -> None:
        self._methods: dict[str, MethodSpec] = {}
        self._lock = threading.RLock()

    def register(self, spec: MethodSpec) -> None:
        with self._lock:
            if spec.name in self._methods:
                existing = self._methods[spec.name].kernel
                raise RegistrationError(
                    f"merge method {spec.name!r} is already registered "
                    f"(by {existing.__module__}.{existing.__qualname__})"
                )
            self._methods[spec.name] = spec

    def unregister(self, name: str) -> MethodSpec | None:
        """Remove a method (so a reloaded module can register it again); returns it."""
        with self._lock:
            return self._methods.pop(name, None)

    def get(self, name: str) -> MethodSpec | None:
        return self._methods.get(name)

    def names(self) -> list[str]:
        return sorted(self._methods)

    def suggest(self, name: str) -> str | None:
        names = self.names()
        folded = {n.casefold(): n for n in names}
        if name.casefold() in folded:
            return folded[name.casefold()]
        close = difflib.get_close_matches(name.casefold(), list(folded), n=1, cutoff=0.6)
        return folded[close[0]] if close else None

    def __contains__(self, name: object) -> bool:
        return name in self._methods

    def __iter__(self) -> Iterator[MethodSpec]:
        return iter([self._methods[n] for n in self.names()])

    def __len__(self) -> int:
        return len(self._methods)


REGISTRY: Final = MethodRegistry()


def _validate_params(name: str, params: Sequence[Param]) -> tuple[Param, ...]:
    result = tuple(params)
    seen: set[str] = set()
    optional_seen = False
    variadic_seen = False
    for p in result:
        if p.name in seen:
            raise RegistrationError(f"method {name}: parameter {p.name!r} appears twice")
        seen.add(p.name)
        if p.variadic:
            if variadic_seen:
                raise RegistrationError(f"method {name}: only one parameter may be variadic")
            variadic_seen = True
        if p.required and not p.variadic and optional_seen:
            raise RegistrationError(
                f"method {name}: required parameter {p.name!r} follows an optional one"
            )
        if not p.required:
            optional_seen = True
    by_name = {p.name: p for p in result}
    for p in result:
        if p.base_of is None:
            continue
        target = by_name.get(p.base_of)
        if target is None or target.kind != "weights":
            raise RegistrationError(
                f"method {name}: {p.name} is base_of {p.base_of!r}, "
                "which is not a weights parameter"
            )
    return result


def method(
    name: str,
    *,
    params: Sequence[Param],
    elementwise: bool = True,
    needs_stats: bool = False,
    stats: Callable[[], Any] | None = None,
    wants_key: bool = False,
    registry: MethodRegistry | None = None,
) -> Callable[[F], F]:
    """Register the decorated kernel as merge method ``name`` (in ``registry``, by default
    the global one). The kernel's docstring, formula first, becomes the method's ``doc``;
    a kernel without one is refused, as is a name registered twice. ``stats`` (a collector
    factory, see :class:`MethodSpec`) implies ``needs_stats``."""
    if needs_stats and stats is None:
        raise RegistrationError(f"method {name}: needs_stats requires a stats collector")
    if not name.isidentifier():
        raise RegistrationError(f"method name {name!r} is not an identifier")
    checked = _validate_params(name, params)
    target = REGISTRY if registry is None else registry

    def decorate(kernel: F) -> F:
        doc = inspect.getdoc(kernel)
        if not doc:
            raise RegistrationError(
                f"method {name}: the kernel needs a docstring stating its formula"
            )
        spec = MethodSpec(
            name=name,
            params=checked,
            doc=doc,
            elementwise=elementwise,
            needs_stats=needs_stats or stats is not None,
            kernel=kernel,
            stats=stats,
            wants_key=wants_key,
        )
        target.register(spec)
        return kernel

    return decorate


# ---------------------------------------------------------------------------------------------
# Loading: built-in families, then entry points, on the first lookup

_loaded_entry_points: set[tuple[str, str]] = set()
_builtins_loaded = False
_entry_points_scanned = False
_load_lock = threading.RLock()


def _load_builtin_families() -> None:
    global _builtins_loaded
    if _builtins_loaded:
        return
    with _load_lock:
        for module in BUILTIN_FAMILIES:
            importlib.import_module(module)
        _builtins_loaded = True


def load_entry_point_methods(group: str = ENTRY_POINT_GROUP) -> list[str]:
    """Import every entry point of ``group`` not loaded yet; returns the names registered.

    An entry point that fails (import error, exception while registering, a name already
    taken) raises :class:`PluginError` naming it; whatever it registered before failing is
    removed again, so fixing it and retrying works.
    """
    added: list[str] = []
    with _load_lock:
        for entry in metadata.entry_points(group=group):
            ident = (entry.name, entry.value)
            if ident in _loaded_entry_points:
                continue
            before = set(REGISTRY.names())
            try:
                loaded = entry.load()
                if not isinstance(loaded, ModuleType) and callable(loaded):
                    loaded()
            except Exception as exc:
                for new_name in set(REGISTRY.names()) - before:
                    REGISTRY.unregister(new_name)
                raise PluginError(
                    f"{entry.name} = {entry.value}", f"{type(exc).__name__}: {exc}"
                ) from exc
            _loaded_entry_points.add(ident)
            added.extend(sorted(set(REGISTRY.names()) - before))
    return added


def _ensure_loaded() -> None:
    global _entry_points_scanned
    _load_builtin_families()
    if not _entry_points_scanned:
        load_entry_point_methods()
        _entry_points_scanned = True


def get_method(name: str) -> MethodSpec | None:
    """The method registered as ``name``, or ``None``."""
    _ensure_loaded()
    return REGISTRY.get(name)


def method_names() -> list[str]:
    """Every registered method name, sorted."""
    _ensure_loaded()
    return REGISTRY.names()


def suggest_method(name: str) -> str | None:
    """The registered name closest to ``name`` (for "did you mean"), or ``None``."""
    _ensure_loaded()
    return REGISTRY.suggest(name)
