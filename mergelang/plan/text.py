"""``mergelang plan``: a :class:`~mergelang.plan.plan.Plan` as readable text, or as JSON.

The text shows the inputs, then each output with the tree of steps it is made from (a step
used twice is shown in full once, then referred to by its number), what happens to each
step (fused into its consumer, read from or stored in the cache, evaluated on whole
tensors), the passes, the bytes read and written and the estimated working memory. An
output whose floating-point keys are stored in more than one precision (an fp8 save keeps
norms and biases wide, a GGUF one keeps small tensors in ``F32``) has a ``precision:`` line
giving each class of keys (:func:`key_class`) and what it is stored in. An output's bytes
are the exact size of its file for GGUF and scaled fp8 outputs, else its keys' data.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from mergelang.errors import printable
from mergelang.io.dtypes import FLOAT_CODES
from mergelang.io.save_choices import SCALED_FP8, SaveOptions
from mergelang.plan.graph import LoadNode, MethodNode, Node
from mergelang.plan.inputs import InputHandle
from mergelang.plan.plan import FileOutput, OutputPlan, Plan, step_numbers

if TYPE_CHECKING:
    from mergelang.io.writer import OutputEntry

__all__ = ["human_bytes", "key_class", "key_precisions", "plan_json", "render_plan"]


def human_bytes(count: float) -> str:
    """``1536`` -> ``1.5 KB`` (powers of 1000, like file managers and disk sizes)."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(count) < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"  # pragma: no cover - the loop returns at GB


def _shown(path: Path | None, base: Path | None) -> str:
    """A path as plans show it: relative to the recipe's folder when inside it, else to the
    working folder when inside that, else absolute."""
    if path is None:
        return "<memory>"
    absolute = Path(os.path.abspath(path))
    for root in (base, Path.cwd()):
        if root is None:
            continue
        try:
            return str(absolute.relative_to(root))
        except ValueError:
            continue
    return str(absolute)


def _whole_tensors(node: Node) -> str:
    """``whole tensors, largest KEY (N values, M with its operands)``: a whole-key method holds
    each key, its operands, its declared temporaries and the cast result at once in float32
    (as :meth:`Plan.working_memory` counts them), so the largest key sets its memory."""
    if not node.keys:
        return "whole tensors"
    key, slot = max(node.keys.items(), key=lambda item: item[1].numel)
    temporaries = node.spec.temporaries if isinstance(node, MethodNode) else 0
    held = (len(node.children) + 1 + temporaries + 1) * slot.numel * 4
    return (
        f"whole tensors, largest {printable(key)} ({_count(slot.numel)} values, "
        f"{human_bytes(held)} with its operands and temporaries in float32)"
    )


def _count(n: int) -> str:
    for unit, size in (("G", 10**9), ("M", 10**6), ("k", 10**3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


class _Renderer:
    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        base = plan.checked.base_dir
        self.base = Path(os.path.abspath(base)) if base is not None else None
        self.numbers = step_numbers(plan.all_nodes())
        self.needed = {id(n) for n in plan.needed()}
        self.shown: set[int] = set()

    def tags(self, node: Node) -> list[str]:
        entry = self.plan.cache_entry(node)
        tags: list[str] = []
        if entry is not None:
            if entry.status == "hit":
                tags.append("cache hit")
            elif entry.status == "store":
                tags.append(f"cached ({entry.reason})")
            else:
                tags.append(f"cached ({entry.reason}; inputs not hashed yet)")
        if isinstance(node, LoadNode):
            return tags
        if id(node) not in self.needed and entry is None:
            tags.append("not needed")
        elif not node.elementwise:
            tags.append(_whole_tensors(node))
        elif entry is None or entry.status != "hit":
            tags.append("fused")
        if node.needs_stats:
            tags.append("statistics pass")
        return tags

    def head(self, node: Node) -> str:
        number = f"#{self.numbers[id(node)]}"
        if isinstance(node, LoadNode):
            names = ", ".join(node.names) or node.handle.name
            text = f"{number} {names} = load {_shown(node.handle.path, self.base)}"
        else:
            name = f"{node.names[0]} = " if node.names else ""
            text = f"{number} {name}{self._call(node)}"
        tags = self.tags(node)
        return text + (f"  [{', '.join(tags)}]" if tags else "")

    def _call(self, node: Node) -> str:
        refs = [f"#{self.numbers[id(c)]}" for c in node.children]
        params = node.parameters()
        kind = node.kind.removeprefix("method:")
        if kind == "linear":
            weights = params.split(", ") if params else []
            terms = [f"{w} * {r}" for w, r in zip(weights, refs, strict=False)]
            return " + ".join(terms) if len(weights) == len(refs) else f"linear({params})"
        inner = ", ".join(refs + ([params] if params else []))
        return f"{kind}({inner})"

    def tree(self, node: Node, prefix: str, last: bool, lines: list[str]) -> None:
        """Append the lines of ``node``'s tree, depth first, with an explicit stack (a chain
        of steps is as deep as the recipe makes it)."""
        stack: list[tuple[Node, str, bool]] = [(node, prefix, last)]
        while stack:
            current, indent, is_last = stack.pop()
            branch = "└── " if is_last else "├── "
            if id(current) in self.shown and not isinstance(current, LoadNode):
                lines.append(f"{indent}{branch}#{self.numbers[id(current)]} (see above)")
                continue
            self.shown.add(id(current))
            lines.append(indent + branch + self.head(current))
            entry = self.plan.cache_entry(current)
            if entry is not None and entry.status == "hit":
                continue
            children = current.children
            inner = indent + ("    " if is_last else "│   ")
            for index in reversed(range(len(children))):
                stack.append((children[index], inner, index == len(children) - 1))

    def render(self) -> str:
        plan = self.plan
        checked = plan.checked
        archs = sorted({n.arch.name for n in plan.all_nodes()})
        lines = [
            f"plan for {checked.path or '<recipe>'} "
            f"({', '.join(archs) or 'no models'}, convention {checked.convention})",
            "",
            "inputs",
        ]
        rows: list[tuple[str, ...]] = []
        for handle in plan.inputs:
            hashed = "hashed" if plan.hashes_of(handle) is not None else "not hashed yet"
            if handle.path is None:
                hashed = "in memory"
            arch = handle.architecture or "vae"
            rows.append(
                (
                    handle.name,
                    _shown(handle.path, self.base),
                    arch,
                    human_bytes(handle.nbytes),
                    hashed,
                    f"{handle.format} {'+'.join(input_dtypes(handle))}",
                )
            )
        lines += _table(rows)
        lines += ["", "outputs"]
        for output in plan.outputs:
            dtype = output.options.dtype or "as inputs"
            status = {"write": "write", "up-to-date": "up to date", "memory": "in memory"}[
                output.status
            ]
            changed = output.changes if isinstance(output, FileOutput) else ()
            if changed:
                status += f" (replaces its earlier output: {'; '.join(changed)})"
            lines.append(
                f"  {_shown(output.path, self.base) if output.path else output.name}  "
                f"({dtype}, {len(output.layout)} keys, {human_bytes(output.nbytes)})  {status}"
            )
            if isinstance(output, FileOutput):
                lines += [f"    note: {note}" for note in output.notes]
            precisions = key_precisions(output)
            if _mixed(precisions):
                lines.append(f"    precision: {_precision_text(precisions)}")
            if output.status == "up-to-date":
                continue
            nodes = [output.node] + ([output.vae] if output.vae is not None else [])
            nodes += [n for _, n in output.components]
            for index, node in enumerate(nodes):
                self.tree(node, "  ", index == len(nodes) - 1, lines)
        lines.append("")
        passes = plan.passes
        if passes:
            count = len(plan.pending) + len(plan.stores)
            lines.append(
                f"passes: {len(passes)} ({' then '.join(passes)}); each input key is read once "
                f"for {count} output{'s' if count != 1 else ''}"
            )
        else:
            lines.append("passes: none (every output is up to date)")
        lines.append(
            f"read {human_bytes(plan.bytes_read)}, write {human_bytes(plan.bytes_written)}; "
            f"working memory about {human_bytes(plan.working_memory())} "
            f"({plan.workers} worker{'s' if plan.workers != 1 else ''}, plus Python and torch)"
        )
        if not plan.hashed:
            lines.append(
                "some inputs are not hashed yet: cache hits and up-to-date outputs are decided "
                "when the run hashes them"
            )
        count, size, during = plan.to_hash
        if count:
            when = (
                "while the merge streams"
                if during
                else "before the merge (a cached step or an existing output needs their hashes)"
            )
            lines.append(
                f"the run hashes {count} input{'s' if count != 1 else ''} "
                f"({human_bytes(size)}) {when}"
            )
        return "\n".join(lines) + "\n"


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    if not rows:
        return ["  (none)"]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  "
        + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def input_dtypes(handle: InputHandle) -> dict[str, int]:
    """The dtypes an input's keys are read as, each with its bytes, most bytes first."""
    found: dict[str, int] = {}
    for meta in handle.header.values():
        found[meta.dtype] = found.get(meta.dtype, 0) + meta.nbytes
    return dict(sorted(found.items(), key=lambda item: (-item[1], item[0])))


_CLASSES = (
    "weights of 2+ dimensions",
    "embeddings",
    "1-D and scalars (norms, biases)",
    "integers and bools",
)
"""The classes of output keys whose precision a plan states, in the order it states them."""


def key_class(key: str, dtype: str, shape: tuple[int, ...]) -> str:
    """The class of one output key (see :data:`_CLASSES`): a floating-point key of two or
    more dimensions is an embedding table when its name says ``embedding``."""
    if dtype not in FLOAT_CODES:
        return _CLASSES[3]
    if len(shape) < 2:
        return _CLASSES[2]
    return _CLASSES[1] if "embedding" in key.lower() else _CLASSES[0]


def _stored(entry: OutputEntry, options: SaveOptions) -> str:
    """The precision a key of the layout is stored in: for a GGUF output its GGML type, for
    a scaled fp8 one ``F8_E4M3 scaled`` for each scaled matrix, else its dtype."""
    quant = options.file_format.quant
    if quant is not None and entry.dtype == "F32":
        from mergelang.io.gguf_format import stored_type

        return stored_type(entry, quant)
    if options.dtype == SCALED_FP8 and entry.dtype == "F32" and len(entry.shape) >= 2:
        return "F8_E4M3 scaled"
    return entry.dtype


def key_precisions(output: OutputPlan) -> dict[str, dict[str, int]]:
    """Each class of the output's keys (in :data:`_CLASSES` order) -> the precisions its keys
    are stored in, each with its number of keys, most keys first."""
    found: dict[str, dict[str, int]] = {}
    for item in output.layout:
        entry = item.entry()
        counts = found.setdefault(key_class(entry.key, entry.dtype, entry.shape), {})
        stored = _stored(entry, output.options)
        counts[stored] = counts.get(stored, 0) + 1
    return {
        name: dict(sorted(found[name].items(), key=lambda kv: (-kv[1], kv[0])))
        for name in _CLASSES
        if name in found
    }


def _mixed(precisions: dict[str, dict[str, int]]) -> bool:
    """Whether the floating-point keys are stored in more than one precision."""
    floats = {p for name, counts in precisions.items() if name != _CLASSES[3] for p in counts}
    return len(floats) > 1


def _precision_text(precisions: dict[str, dict[str, int]]) -> str:
    """``weights of 2+ dimensions: Q8_0 (40 keys), F16 (2 keys); 1-D ...: F32``."""
    parts = []
    for name, counts in precisions.items():
        if len(counts) == 1:
            parts.append(f"{name}: {next(iter(counts))}")
        else:
            shown = ", ".join(f"{p} ({n} key{'s' if n != 1 else ''})" for p, n in counts.items())
            parts.append(f"{name}: {shown}")
    return "; ".join(parts)


def render_plan(plan: Plan) -> str:
    """The plan as text (see the module docstring). Paths and names that came from files or
    the recipe are shown with their control characters escaped
    (:func:`mergelang.errors.printable`)."""
    return printable(_Renderer(plan).render())


def plan_json(plan: Plan) -> dict[str, object]:
    """The plan as JSON-ready data: steps by number, outputs, cache, passes and sizes."""
    nodes = plan.all_nodes()
    numbers = step_numbers(nodes)
    needed = {id(n) for n in plan.needed()}
    steps = []
    for node in nodes:
        entry = plan.cache_entry(node)
        steps.append(
            {
                "id": numbers[id(node)],
                "kind": node.kind,
                "names": list(node.names),
                "parameters": node.parameters(),
                "inputs": [numbers[id(c)] for c in node.children],
                "path": str(node.handle.path) if isinstance(node, LoadNode) else None,
                "fused": not isinstance(node, LoadNode) and node.elementwise,
                "needed": id(node) in needed,
                "cache": None
                if entry is None
                else {"status": entry.status, "key": entry.key, "reason": entry.reason},
            }
        )
    outputs = [
        {
            "path": str(o.path) if o.path is not None else None,
            "name": o.name,
            "step": numbers[id(o.node)],
            "status": o.status,
            "dtype": o.options.dtype,
            "format": o.options.format,
            "keys": len(o.layout),
            "bytes": o.nbytes,
            "precision": key_precisions(o),
            "key": o.key,
            "notes": list(o.notes) if isinstance(o, FileOutput) else [],
        }
        for o in plan.outputs
    ]
    inputs = [
        {
            "name": handle.name,
            "path": str(handle.path) if handle.path is not None else None,
            "format": handle.format,
            "dtypes": input_dtypes(handle),
            "bytes": handle.nbytes,
        }
        for handle in plan.inputs
    ]
    return {
        "recipe": plan.checked.path,
        "inputs": inputs,
        "steps": steps,
        "outputs": outputs,
        "passes": plan.passes,
        "bytes_read": plan.bytes_read,
        "bytes_written": plan.bytes_written,
        "working_memory": plan.working_memory(),
        "workers": plan.workers,
        "hashed": plan.hashed,
    }
