"""The outputs a page shows, from what the user names: files, folders or a recipe.

A ``.merge`` recipe stands for the files its ``save`` statements write, found where
``mergelang run`` puts them (``out_dir``, else the recipe's folder); a folder for every
``.safetensors`` file under it, in path order; a file for itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from mergelang.check import check
from mergelang.lang.parser import parse_file

__all__ = ["output_paths"]


def output_paths(
    sources: Sequence[Path],
    *,
    out_dir: Path | None = None,
    variables: Mapping[str, str] | None = None,
) -> tuple[list[Path], list[str]]:
    """The output files ``sources`` name, each once, and the problems found (a recipe's
    output not written yet, a path that does not exist). A recipe that does not check
    raises its :class:`~mergelang.errors.RecipeError`."""
    found: list[Path] = []
    problems: list[str] = []
    for source in sources:
        if source.suffix == ".merge" and source.is_file():
            checked = check(parse_file(str(source)), set=dict(variables or {}))
            base = out_dir or checked.base_dir or Path.cwd()
            for save in checked.saves:
                path = base / save.path
                if path.is_file():
                    found.append(path)
                else:
                    problems.append(f"{save.path}: not written yet (run the recipe first)")
        elif source.is_dir():
            found += sorted(p for p in source.rglob("*.safetensors") if p.is_file())
        elif source.is_file():
            found.append(source)
        else:
            problems.append(f"{source}: no such file or folder")
    unique = list(dict.fromkeys(found))
    return unique, problems
