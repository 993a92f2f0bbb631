"""Merge methods: the registry and mergelang's own method families.

Importing this package imports no torch; kernels import it when they run. Method families
(``linear``: weighted_sum, add_difference) are loaded on the first lookup, together with
third-party methods from the ``mergelang.methods`` entry point group. See
:mod:`mergelang.methods.registry` for the calling convention and the BASE rule.
"""

from __future__ import annotations

from mergelang.methods.registry import (
    BUILTIN_FAMILIES,
    ENTRY_POINT_GROUP,
    REGISTRY,
    REQUIRED,
    MethodRegistry,
    MethodSpec,
    Param,
    ParamKind,
    PluginError,
    RegistrationError,
    get_method,
    load_entry_point_methods,
    method,
    method_names,
    suggest_method,
)

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
