"""Which save made an existing output, and what changed since.

Every output records which save of which recipe made it, as ``mergelang.save``: JSON
``{"recipe": ..., "output": ...}`` with the recipe's path relative to the output's folder and
the output's file name, so a project folder moved or copied as a whole keeps recognising its
own outputs. A file whose record matches the save about to write it is that save's own earlier
output: a run remakes it when its steps or inputs changed, without ``--force``.

Each output also records the address of every named step it is made of, as
``mergelang.steps`` (JSON ``{name: address}``); with the inputs' sha256 in
``mergelang.inputs`` they say what changed: the inputs whose content changed, and the steps
whose address changed though nothing under them did (the edited ones, not everything
downstream of them).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from mergelang.io.metadata import INPUTS_KEY, VERSION_KEY
from mergelang.plan.graph import LoadNode, Node, content_keys, walk
from mergelang.plan.plan import FileOutput

__all__ = ["SAVE_KEY", "STEPS_KEY", "changes", "input_name", "save_identity", "step_keys"]

SAVE_KEY = "mergelang.save"
STEPS_KEY = "mergelang.steps"


def save_identity(recipe_path: str | None, output: Path) -> str | None:
    """What identifies "this save of this recipe" in an output's metadata; ``None`` for a
    recipe given as text (no file to name)."""
    if recipe_path is None:
        return None
    folder = os.path.abspath(output.parent)
    try:
        recipe = os.path.relpath(os.path.abspath(recipe_path), folder)
    except ValueError:  # another drive on Windows
        recipe = os.path.abspath(recipe_path)
    return json.dumps({"recipe": Path(recipe).as_posix(), "output": output.name})


def input_name(load: LoadNode) -> str:
    """The name an input goes by in an output's records."""
    return load.names[0] if load.names else load.handle.name


SAVED = ""
"""The name the saved step is recorded under when it has none of its own (``save
weighted_sum(a, b, alpha=0.3) to ...``)."""


def step_keys(output: FileOutput, keys: Mapping[int, str]) -> dict[str, str]:
    """``{step name: address}`` for every named step the output is made of, and the saved
    step under :data:`SAVED` when it is unnamed."""
    found: dict[str, str] = {}
    root = output.node
    addresses = content_keys([root], keys)
    if not root.names and not isinstance(root, LoadNode):
        key = addresses[id(root)]
        if key is not None:
            found[SAVED] = key
    for node in walk([output.node]):
        if isinstance(node, LoadNode):
            continue
        key = addresses[id(node)]
        if key is None:
            continue
        for name in node.names:
            found.setdefault(name, key)
    return found


def _old_inputs(metadata: Mapping[str, str]) -> dict[str, str]:
    try:
        records = json.loads(metadata.get(INPUTS_KEY, "[]"))
    except ValueError:
        return {}
    found: dict[str, str] = {}
    if isinstance(records, list):
        for record in records:
            if isinstance(record, dict):
                name, sha = record.get("name"), record.get("sha256")
                if isinstance(name, str) and isinstance(sha, str):
                    found.setdefault(name, sha)
    return found


def _old_steps(metadata: Mapping[str, str]) -> dict[str, str]:
    try:
        steps = json.loads(metadata.get(STEPS_KEY, "{}"))
    except ValueError:
        return {}
    if not isinstance(steps, dict):
        return {}
    return {k: v for k, v in steps.items() if isinstance(k, str) and isinstance(v, str)}


def changes(
    metadata: Mapping[str, str], output: FileOutput, keys: Mapping[int, str], version: str
) -> tuple[str, ...]:
    """What changed between the output recorded in ``metadata`` and ``output`` now: the
    inputs whose content changed, then the edited steps, else the save options or the
    mergelang version."""
    found: list[str] = []
    old_inputs = _old_inputs(metadata)
    changed_loads: set[int] = set()
    for load in walk([output.node]):
        if not isinstance(load, LoadNode):
            continue
        name = input_name(load)
        sha = keys.get(id(load))
        if sha is None or old_inputs.get(name) == sha:
            continue
        changed_loads.add(id(load))
        text = f"input '{name}' changed" if name in old_inputs else f"input '{name}' is new"
        if text not in found:
            found.append(text)
    old_steps = _old_steps(metadata)
    if old_steps:
        now = step_keys(output, keys)
        changed = {name for name, key in now.items() if old_steps.get(name) != key}
        for node in walk([output.node]):
            names = [n for n in node.names if n in changed]
            if isinstance(node, LoadNode) or not names:
                continue
            if _changed_below(node, changed, changed_loads):
                continue
            found.append(f"step '{names[0]}' changed")
        root = output.node
        if SAVED in changed and not found and not _changed_below(root, changed, changed_loads):
            found.append("the saved expression changed")
    if not found:
        if metadata.get(VERSION_KEY) not in (None, version):
            found.append(f"made by mergelang {metadata.get(VERSION_KEY)}, now {version}")
        else:
            found.append("its steps or save options changed")
    return tuple(found)


def _changed_below(node: Node, changed: set[str], changed_loads: set[int]) -> bool:
    """Whether a changed input or another changed named step lies under ``node``."""
    for below in walk(list(node.children)):
        if id(below) in changed_loads:
            return True
        if not isinstance(below, LoadNode) and any(n in changed for n in below.names):
            return True
    return False
