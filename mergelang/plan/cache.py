"""The content-addressed cache, and outputs that are already up to date.

**Addresses.** A step's address is a sha256 over its kind, its resolved parameters and its
children's addresses; an input's is its file's sha256 (through the hash cache, so a file is
read for hashing once, ever, unless it changes). Editing one step changes the address of
that step and of everything that depends on it, nothing else.

**What is cached.** Steps declared with ``cache``, and named steps of methods that are not
elementwise or need a statistics pass (costly to recompute). Their values are stored as
``<cache>/objects/<ab>/<address>.safetensors``: computed keys in float32, so that reading a
hit gives exactly the values a fresh run computes; keys passed through unchanged in their own
dtype. Elementwise intermediates are not stored: recomputing them, fused, costs less than
reading their float32 values back.

**Outputs.** Every output records its own address (the step's address plus the save options
and the mergelang version) as ``mergelang.output_key``. A re-run finds the file with the same
address and leaves it alone ("up to date", with or without ``--force``: its tensors would
come out the same); a file at that path with another address (or none) is refused
unless ``--force`` replaces it.

The block convention is part of every computed step's address: the same weights under
another convention reach other keys.

:func:`decide` takes the plan the planner built and returns the finished one: the same plan
with the content hashes, the outputs' addresses, statuses and metadata and the cache entries
filled in. A cache hit is opened and read like an input (once, through one descriptor).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from mergelang._version import __version__
from mergelang.errors import Diagnostic, MergelangError, OutputError, RecipeError, source_line
from mergelang.io.file_formats import format_of_content
from mergelang.io.formats import sniff_format
from mergelang.io.metadata import WEBUI_METHODS, InputRecord, WebuiMerge, build_metadata
from mergelang.io.writer import check_target
from mergelang.plan.graph import LoadNode, MethodNode, Node, walk
from mergelang.plan.inputs import InputHandle, open_cached
from mergelang.plan.plan import CacheEntry, FileOutput, OutputPlan, Plan

if TYPE_CHECKING:
    from mergelang.io.hashing import FileHashes

__all__ = [
    "CACHE_FORMAT",
    "CACHE_KEY",
    "OBJECTS",
    "OUTPUT_KEY",
    "decide",
    "existing_output_key",
    "object_path",
    "stored_dtype",
]

OBJECTS = "objects"
CACHE_FORMAT = "safetensors"
"""The file format of cached step values."""
OUTPUT_KEY = "mergelang.output_key"
CACHE_KEY = "mergelang.cache_key"


def object_path(cache_dir: Path, key: str) -> Path:
    """Where the cached value of address ``key`` lives."""
    return cache_dir / OBJECTS / key[:2] / f"{key}.safetensors"


def stored_dtype(node: Node, key: str) -> str:
    """The dtype a cached value of ``node`` stores ``key`` in: float32 when any step
    computes it (exact), the key's own dtype when it is passed through from an input."""
    slot = node.keys[key]
    while slot.action == "pass" and not isinstance(node, LoadNode):
        node = node.children[slot.source]
        slot = node.keys[key]
    return slot.dtype if slot.action in ("read", "pass") else "F32"


def _input_hashes(plan: Plan, *, hash_inputs: bool) -> tuple[dict[str, FileHashes], dict[int, str]]:
    """The content hashes known of the inputs the outputs draw on (by handle identity), and
    ``id(LoadNode) -> sha256`` for every load whose hash is known."""
    hashes: dict[str, FileHashes] = {}
    asked: set[str] = set()
    found: dict[int, str] = {}
    loads = [n for n in plan.all_nodes() if isinstance(n, LoadNode)]
    loads += [o.vae for o in plan.outputs if o.vae is not None]
    for node in loads:
        handle = node.handle
        file = handle.file
        if file is None:
            continue
        if handle.identity not in asked:
            asked.add(handle.identity)
            known = file.hashes(plan.cache_dir, compute=hash_inputs)
            if known is not None:
                hashes[handle.identity] = known
        if handle.identity in hashes:
            found[id(node)] = hashes[handle.identity].sha256
    return hashes, found


def _output_key(output: FileOutput, keys: dict[int, str]) -> str | None:
    node_key = output.node.content_key(keys)
    if node_key is None:
        return None
    options = output.options
    vae = None
    if output.vae is not None:
        vae = keys.get(id(output.vae))
        if vae is None:
            return None
    text = json.dumps(
        [
            __version__,
            node_key,
            options.dtype,
            options.ema,
            options.schedule,
            options.position_ids,
            options.format,
            vae,
        ]
    )
    return hashlib.sha256(text.encode()).hexdigest()


def existing_output_key(path: Path) -> str | None:
    """The output address recorded in an existing output (safetensors header, or the
    metadata mergelang keeps in a ``.ckpt``), or ``None``."""
    try:
        return format_of_content(sniff_format(path)).read_metadata(path).get(OUTPUT_KEY)
    except (MergelangError, OSError):
        return None


def _cacheable(node: Node) -> str | None:
    """Why ``node`` goes through the cache, or ``None``."""
    if isinstance(node, LoadNode):
        return None
    if node.cache_marked:
        return "marked cache"
    if node.names and (not node.elementwise or node.needs_stats):
        return "not elementwise" if not node.elementwise else "needs a statistics pass"
    return None


def _hit_handle(node: Node, path: Path, key: str) -> InputHandle | None:
    """The cached file as an input, if it is whole and holds what ``node`` needs."""
    file = open_cached(path)
    if file is None:
        return None
    metas = file.metas()
    whole = file.metadata.get(CACHE_KEY) == key
    for name, slot in node.keys.items():
        meta = metas.get(name)
        if meta is None or meta.shape != slot.shape or meta.dtype != stored_dtype(node, name):
            whole = False
            break
    if not whole:
        file.close()
        return None
    return InputHandle(
        name=f"cache:{key[:12]}",
        path=path,
        format="safetensors",
        header=metas,
        metadata={},
        source=file,
    )


def decide(plan: Plan, *, hash_inputs: bool, force: bool, use_cache: bool) -> Plan:
    """``plan`` finished: its content hashes, the outputs' addresses, statuses and metadata,
    and the cache decisions; raises :class:`RecipeError` for outputs that cannot be
    written."""
    hashes, keys = _input_hashes(plan, hash_inputs=hash_inputs)
    hashed = all(h.identity in hashes for h in plan.inputs if h.path is not None)
    known = dataclasses.replace(plan, hashes=MappingProxyType(hashes), hashed=hashed)
    protected = [h.path for h in plan.inputs if h.path is not None]
    blocked: list[Diagnostic] = []
    outputs: list[OutputPlan] = []
    for output in plan.outputs:
        if not isinstance(output, FileOutput):
            outputs.append(output)
            continue
        output = dataclasses.replace(output, key=_output_key(output, keys))
        outputs.append(output)
        try:
            check_target(output.path, overwrite=True, protected=protected)
        except OutputError as exc:
            blocked += _at_save(plan, output, exc)
            continue
        if os.path.lexists(output.path):
            existing = existing_output_key(output.path)
            if output.key is not None and existing == output.key:
                outputs[-1] = dataclasses.replace(output, status="up-to-date")
            elif not force and (hashed or existing is None):
                blocked += _at_save(
                    plan,
                    output,
                    OutputError(
                        str(output.path),
                        "the output file already exists"
                        + (
                            " and was made from other steps, inputs or options"
                            if existing is not None
                            else ""
                        ),
                        code="exists",
                        hint="pass --force to replace it",
                    ),
                )
    if blocked:
        raise RecipeError(blocked)
    known = dataclasses.replace(known, outputs=tuple(outputs))
    cache = _decide_cache(known, keys) if use_cache else ()
    decided = dataclasses.replace(known, cache=cache)
    if hashed:
        finished = [
            dataclasses.replace(o, metadata=MappingProxyType(_metadata(decided, o)))
            if isinstance(o, FileOutput) and o.status == "write"
            else o
            for o in outputs
        ]
        decided = dataclasses.replace(decided, outputs=tuple(finished))
    return decided


def _at_save(plan: Plan, output: FileOutput, exc: MergelangError) -> list[Diagnostic]:
    save = output.save
    found: list[Diagnostic] = []
    for diag in exc.diagnostics:
        found.append(
            Diagnostic(
                f"{output.path}: {diag.message}",
                diag.code,
                plan.checked.path,
                save.span,
                diag.hint,
                source_line=source_line(plan.checked.recipe.source, save.span.line),
            )
        )
    return found


def _decide_cache(plan: Plan, keys: dict[int, str]) -> tuple[CacheEntry, ...]:
    pending = plan.pending
    if not pending:
        return ()
    entries: list[CacheEntry] = []
    try:
        for node in walk(plan.roots()):
            reason = _cacheable(node)
            if reason is None:
                continue
            key = node.content_key(keys)
            if key is None:
                if not plan.hashed:
                    entries.append(CacheEntry(node, None, None, "unknown", reason))
                continue
            path = object_path(plan.cache_dir, key)
            handle = _hit_handle(node, path, key) if path.is_file() else None
            if handle is not None:
                entries.append(CacheEntry(node, key, path, "hit", reason, handle))
            else:
                entries.append(CacheEntry(node, key, path, "store", reason))
    except BaseException:
        for entry in entries:
            if entry.handle is not None:
                entry.handle.close()
        raise
    return tuple(entries)


def _metadata(plan: Plan, output: FileOutput) -> dict[str, str]:
    loads: list[LoadNode] = [n for n in walk([output.node]) if isinstance(n, LoadNode)]
    records: list[InputRecord] = []
    for load in loads:
        handle = load.handle
        hashes = plan.hashes_of(handle)
        if handle.path is None or hashes is None:
            continue
        name = load.names[0] if load.names else handle.name
        records.append(InputRecord.from_hashes(name, handle.path, hashes, handle.metadata))
    node = output.node
    arch = node.arch
    extra: dict[str, str] = {"architecture": arch.name, "variant": _variant(output)}
    extra["title"] = Path(output.name).stem if output.name else "merged"
    extra["interp_method"] = node.kind.removeprefix("method:") if node.kind != "load" else "copy"
    extra["save_as_half"] = "true" if output.options.dtype == "fp16" else "false"
    if output.vae is not None and output.vae.handle.path is not None:
        extra["bake_in_vae"] = output.vae.handle.path.name
    if output.key is not None:
        extra[OUTPUT_KEY] = output.key
    if plan.checked.variables:
        extra["mergelang.set"] = json.dumps(dict(plan.checked.variables), ensure_ascii=False)
    if output.save.bindings:
        extra["mergelang.bindings"] = json.dumps(dict(output.save.bindings), ensure_ascii=False)
    return build_metadata(
        recipe_text=plan.checked.recipe.source or "",
        output_name=extra["title"],
        inputs=records,
        extra=extra,
        webui=_webui_merge(plan, node),
    )


_EVERY_KEY = ("mbw", "kohya", "supermerger")
"""Conventions that merge every key a plain multiplier reaches (A1111 merges them all)."""


def _webui_merge(plan: Plan, node: Node) -> WebuiMerge | None:
    """The merge as A1111 records it, when A1111's merger can express it: weighted_sum or
    add_difference of input files, with one multiplier for every block and key."""
    if not isinstance(node, MethodNode) or node.spec.name not in WEBUI_METHODS:
        return None
    if set(node.weights) != {"alpha"} or node.numbers or node.convention not in _EVERY_KEY:
        return None
    alpha = node.weights["alpha"]
    values = {alpha.base, *(alpha[block] for block in node.arch.blocks)}
    if alpha.elemental or len(values) != 1:
        return None
    hashes: list[str] = []
    for child in node.children:
        if not isinstance(child, LoadNode):
            return None
        found = plan.hashes_of(child.handle)
        if found is None:
            return None
        hashes.append(found.sha256)
    return WebuiMerge(WEBUI_METHODS[node.spec.name], float(alpha.base), tuple(hashes))


def _variant(output: FileOutput) -> str:
    spec = output.node.arch.variants
    if spec is None:
        return "normal"
    bare = spec.key.removeprefix(output.node.arch.denoiser.prefix)
    for item in output.layout:
        if item.key in (spec.key, bare) and len(item.shape) > spec.dim:
            return spec.of_channels(item.shape[spec.dim]) or spec.normal
    return spec.normal
