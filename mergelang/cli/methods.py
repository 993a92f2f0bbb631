"""``mergelang methods [NAME]``: the merge methods a recipe can call.

Without a name: one line per method, its signature and its formula. With a name: the
method's formula and description, then each parameter with its kind, default, range and
meaning, and whether the method is elementwise (fused, chunked) or needs whole tensors or a
statistics pass. ``--json`` gives the same as data. Methods of installed plugins (the
``mergelang.methods`` entry point) are listed with the built-in ones. No torch is imported.
"""

from __future__ import annotations

import argparse
import json
import sys

from mergelang.errors import UsageError
from mergelang.methods.registry import (
    REQUIRED,
    MethodSpec,
    Param,
    get_method,
    method_names,
    suggest_method,
)

__all__ = ["describe_method", "method_json", "register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "methods",
        help="list the merge methods, or describe one",
        description="List every merge method a recipe can call, with its signature and "
        "formula; with NAME, describe that method's parameters.",
    )
    parser.add_argument("name", nargs="?", metavar="NAME", help="a method to describe")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.set_defaults(handler=run_methods)


def _how(spec: MethodSpec) -> str:
    if spec.needs_stats:
        return "a statistics pass over the whole model first, then each key's whole tensors"
    if not spec.elementwise:
        return "each key's whole tensors (not split into chunks)"
    return "elementwise: fused with the steps around it, in chunks"


def _range(param: Param) -> str | None:
    low, high = param.minimum, param.maximum
    if low is None and high is None:
        return None
    if low is None:
        return f"at most {high}"
    if high is None:
        return f"at least {low}"
    return f"{low} to {high}"


def _param_json(param: Param) -> dict[str, object]:
    default = None if param.default is REQUIRED else param.default
    if default is not None and not isinstance(default, str | int | float | bool):
        default = str(default)
    return {
        "name": param.name,
        "kind": param.kind,
        "required": param.required,
        "default": default,
        "minimum": param.minimum,
        "maximum": param.maximum,
        "variadic": param.variadic,
        "base_of": param.base_of,
        "base_default": param.base_default,
        "doc": param.doc,
        "choices": None if param.choices is None else list(param.choices),
    }


def method_json(spec: MethodSpec) -> dict[str, object]:
    return {
        "name": spec.name,
        "signature": spec.signature(),
        "formula": spec.formula,
        "doc": spec.doc,
        "elementwise": spec.elementwise,
        "needs_stats": spec.needs_stats,
        "params": [_param_json(p) for p in spec.params],
    }


def describe_method(spec: MethodSpec) -> str:
    """The text ``mergelang methods NAME`` prints."""
    doc = [f"  {line}" if line else "" for line in spec.doc.splitlines()]
    lines = [spec.signature(), "", *doc, ""]
    lines.append(f"  computed on: {_how(spec)}")
    lines += ["", "parameters:"]
    for param in spec.params:
        facts = [param.kind + (", one or more" if param.variadic else "")]
        if not param.required:
            facts.append(f"default {param.signature().split('=', 1)[1]}")
        span = _range(param)
        if span is not None:
            facts.append(span)
        if param.choices is not None:
            facts.append("one of " + ", ".join(f'"{choice}"' for choice in param.choices))
        if param.base_default is not None:
            facts.append(f"an unset BASE is {param.base_default}")
        if param.base_of is not None:
            facts.append(f"sets the BASE of {param.base_of}")
        lines.append(f"  {param.name} ({'; '.join(facts)})")
        if param.doc:
            lines.append(f"      {param.doc}")
    return "\n".join(lines) + "\n"


def run_methods(args: argparse.Namespace) -> int:
    if args.name is not None:
        spec = get_method(args.name)
        if spec is None:
            close = suggest_method(args.name)
            raise UsageError(
                f"no merge method named {args.name!r}",
                hint=f"did you mean {close}?" if close else "mergelang methods lists them",
            )
        text = (
            json.dumps(method_json(spec), indent=2) + "\n" if args.json else describe_method(spec)
        )
        sys.stdout.write(text)
        return 0
    specs = [spec for name in method_names() if (spec := get_method(name)) is not None]
    if args.json:
        sys.stdout.write(json.dumps([method_json(s) for s in specs], indent=2) + "\n")
        return 0
    width = max(len(s.signature()) for s in specs)
    for spec in specs:
        signature = spec.signature()
        if len(signature) > 60:
            sys.stdout.write(f"{signature}\n{'':{min(width, 60)}}  {spec.formula}\n")
        else:
            sys.stdout.write(f"{signature:{min(width, 60)}}  {spec.formula}\n")
    return 0
