"""The merge method registry: every method a recipe can call, with its typed parameters.

A method is a per-key kernel registered with :func:`method`; the kernel's typed signature is
the method's parameter list (read by :mod:`mergelang.methods.signature`)::

    @method("weighted_sum")
    def weighted_sum(
        a: Annotated[Tensor, Doc("model A")],
        b: Annotated[Tensor, Doc("model B")],
        *,
        alpha: Annotated[Weights, Doc("B's share"), BaseDefault(0.0), BaseNumber("BASE's")] = 0.5,
        out: Tensor,
    ) -> Tensor:
        '''(1 - alpha) * A + alpha * B'''
        torch.mul(a, 1 - alpha, out=out)
        return out.add_(alpha * b)

gives ``weighted_sum(a, b, alpha=0.5, base=None)``. The kernel's docstring states the
formula; its first line is the formula itself. See :mod:`mergelang.methods.spec` for the
calling convention and the BASE rule.

Third-party packages add methods through the ``mergelang.methods`` entry point group: each
entry point names a module whose import registers its methods with this decorator (or a
callable taking no arguments that does). They are loaded on the first lookup.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from importlib import metadata
from types import ModuleType
from typing import Any, Final, TypeVar

from mergelang.errors import Diagnostic, MergelangError
from mergelang.methods.params import REQUIRED, Param, ParamKind, RegistrationError
from mergelang.methods.signature import read_signature
from mergelang.methods.spec import DEFAULT_TEMPORARIES, MethodSpec

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

ENTRY_POINT_GROUP: Final = "mergelang.methods"

BUILTIN_FAMILIES: tuple[str, ...] = (
    "mergelang.methods.linear",
    "mergelang.methods.blend",
    "mergelang.methods.difference",
    "mergelang.methods.sparse",
    "mergelang.methods.geometry",
)
"""Modules of mergelang's own method families, imported on the first lookup."""


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
    elementwise: bool = True,
    needs_stats: bool = False,
    stats: Callable[[], Any] | None = None,
    wants_key: bool = False,
    registry: MethodRegistry | None = None,
    params: Sequence[Param] | None = None,
    temporaries: int | None = None,
    propagates_nonfinite: bool = False,
) -> Callable[[F], F]:
    """Register the decorated kernel as merge method ``name`` (in ``registry``, by default
    the global one) and return the kernel itself.

    The kernel's typed signature states the parameters (see
    :mod:`mergelang.methods.signature`); its docstring, formula first, becomes the method's
    ``doc``. ``elementwise`` methods take ``out=``; ``stats`` (a collector factory, see
    :class:`MethodSpec`) implies ``needs_stats`` and a ``stats=`` keyword; ``wants_key`` a
    ``key=`` keyword; ``propagates_nonfinite`` that any NaN or infinity in an operand
    reaches the result (see :class:`MethodSpec`). A kernel without a docstring, a signature
    that cannot be read as a method, and a name registered twice raise
    :class:`RegistrationError`.

    ``params`` (deprecated) lists the parameters instead, as :class:`Param` objects; the
    signature is then not read, and an elementwise kernel must accept ``out=None`` too.
    """
    if needs_stats and stats is None:
        raise RegistrationError(f"method {name}: needs_stats requires a stats collector")
    if not name.isidentifier():
        raise RegistrationError(f"method name {name!r} is not an identifier")
    listed: tuple[Param, ...] | None = None
    if params is not None:
        warnings.warn(
            f"method {name}: params=[Param(...)] is deprecated; state the parameters in the "
            "kernel's typed signature instead (see docs/methods/README.md)",
            DeprecationWarning,
            stacklevel=2,
        )
        listed = _validate_params(name, params)
    target = REGISTRY if registry is None else registry

    def decorate(kernel: F) -> F:
        doc = inspect.getdoc(kernel)
        if not doc:
            raise RegistrationError(
                f"method {name}: the kernel needs a docstring stating its formula"
            )
        if listed is None:
            read = read_signature(
                name, kernel, elementwise=elementwise, stats=stats is not None, wants_key=wants_key
            )
            checked, writes_out = _validate_params(name, read.params), read.takes_out
        else:
            checked, writes_out = listed, False
        spec = MethodSpec(
            name=name,
            params=checked,
            doc=doc,
            elementwise=elementwise,
            needs_stats=needs_stats or stats is not None,
            kernel=kernel,
            stats=stats,
            wants_key=wants_key,
            writes_out=writes_out,
            temporaries=(
                0
                if elementwise
                else (DEFAULT_TEMPORARIES if temporaries is None else max(0, temporaries))
            ),
            propagates_nonfinite=propagates_nonfinite and elementwise,
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
