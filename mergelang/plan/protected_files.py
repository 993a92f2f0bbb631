"""The files a run must never write over, even with ``--force``.

Its inputs (models and VAEs), the cached steps it reads, the recipe being run and the preset
files that recipe loads: an output path that names one of them (directly, through ``..``, a
symlink or a hard link) is refused with ``overwrite-input``.
"""

from __future__ import annotations

from pathlib import Path

from mergelang.plan.plan import Plan

__all__ = ["protected_files"]


def protected_files(plan: Plan, *, cache_hits: bool = False) -> list[Path]:
    """The inputs, recipe and preset files of ``plan`` (and, with ``cache_hits``, the cached
    steps it reads), in that order."""
    found = [Path(h.path) for h in plan.inputs if h.path is not None]
    if cache_hits:
        found += [Path(e.path) for e in plan.cache if e.status == "hit" and e.path]
    checked = plan.checked
    if checked.path is not None and Path(checked.path).exists():
        found.append(Path(checked.path))
    found += [Path(p) for p in checked.presets.files]
    return found
