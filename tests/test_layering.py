"""The package's layout is its pipeline: each part imports only the parts below it.

``cli -> api -> run -> plan -> check -> lang``, over the parts every stage shares
(``presets``, ``methods``, ``block_weights``, ``io``, ``arch``, ``errors``). The test reads
every module's imports (those under ``if TYPE_CHECKING:`` and inside functions included) and
fails on any import of a part that is not below the importer.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mergelang"

_SHARED_BASE = {"errors", "_version"}
_ARCH = _SHARED_BASE | {"arch"}
_IO = _ARCH | {"io"}
_WEIGHTS = _ARCH | {"block_weights"}
_UNDER_LANG = _IO | _WEIGHTS | {"presets", "methods"}

ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "_version": set(),
    "arch": _SHARED_BASE,
    "io": _ARCH,
    "block_weights": _ARCH,
    "presets": _IO | _WEIGHTS,
    "methods": _WEIGHTS,
    "testing": _IO,
    "lang": _UNDER_LANG,
    "check": _UNDER_LANG | {"lang"},
    "convert": _UNDER_LANG | {"lang"},
    "plan": _UNDER_LANG | {"lang", "check"},
    "report": _UNDER_LANG | {"lang", "check"},
    "render": _UNDER_LANG | {"lang", "check", "report"},
    "run": _UNDER_LANG | {"lang", "check", "plan"},
    "api": _UNDER_LANG | {"lang", "check", "plan", "run"},
    "cli": _UNDER_LANG
    | {"lang", "check", "convert", "plan", "run", "api", "testing", "report", "render"},
}
"""Part -> the parts it may import (besides itself)."""


def _part(module: str) -> str:
    """``mergelang.plan.graph`` -> ``plan``; the package's own ``__init__`` is ``api``."""
    parts = module.split(".")
    if len(parts) == 1:
        return "api"
    head = parts[1]
    return {"__main__": "cli", "__init__": "api"}.get(head, head)


def _module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    names = list(relative.parts)
    if names[-1] == "__init__":
        names.pop()
    return ".".join(names)


def _imports(path: Path, module: str) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target == "mergelang":
                found += [(node.lineno, f"mergelang.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, target))
    return [(line, name) for line, name in found if name.split(".")[0] == "mergelang"]


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_part_is_known() -> None:
    parts = {_part(_module_name(path)) for path in MODULES}
    assert parts <= set(ALLOWED), sorted(parts - set(ALLOWED))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_no_upward_import(path: Path) -> None:
    module = _module_name(path)
    part = _part(module)
    allowed = ALLOWED[part] | {part}
    upward = [
        f"line {line}: {name} ({_part(name)})"
        for line, name in _imports(path, module)
        if _part(name) not in allowed
    ]
    assert not upward, f"{module} ({part}) imports from above or beside it: " + "; ".join(upward)
