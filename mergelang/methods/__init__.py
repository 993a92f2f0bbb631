"""Merge methods: the registry and mergelang's own method families.

Importing this package imports no torch; kernels import it when they run. Method families
(``linear``: weighted_sum, add_difference; ``blend``, ``difference``, ``geometry``,
``sparse``) are loaded on the first lookup, together with third-party methods from the
``mergelang.methods`` entry point group. A method's parameters are its kernel's typed
signature, with :data:`Weights` for block weights and ``Annotated`` metadata (:class:`Doc`,
:class:`Range`, :class:`Choices`, :class:`BaseDefault`, :class:`BaseNumber`) for what a
type cannot say; see :mod:`mergelang.methods.registry`, and :mod:`mergelang.methods.spec`
for the calling convention and the BASE rule.
"""

from __future__ import annotations

from mergelang.methods.params import (
    REQUIRED,
    BaseDefault,
    BaseNumber,
    Choices,
    Doc,
    Param,
    ParamKind,
    Range,
    RegistrationError,
    Weights,
)
from mergelang.methods.registry import (
    BUILTIN_FAMILIES,
    ENTRY_POINT_GROUP,
    REGISTRY,
    MethodRegistry,
    PluginError,
    get_method,
    load_entry_point_methods,
    method,
    method_names,
    suggest_method,
)
from mergelang.methods.spec import MethodSpec

__all__ = [
    "BUILTIN_FAMILIES",
    "ENTRY_POINT_GROUP",
    "REGISTRY",
    "REQUIRED",
    "BaseDefault",
    "BaseNumber",
    "Choices",
    "Doc",
    "MethodRegistry",
    "MethodSpec",
    "Param",
    "ParamKind",
    "PluginError",
    "Range",
    "RegistrationError",
    "Weights",
    "get_method",
    "load_entry_point_methods",
    "method",
    "method_names",
    "suggest_method",
]
