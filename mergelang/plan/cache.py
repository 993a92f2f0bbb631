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
come out the same; ``--rebuild`` remakes it). A file that the same save of the same recipe
made earlier (:mod:`mergelang.plan.staleness`) is remade, with what changed; another file at
that path is refused unless ``--force`` replaces it. The outputs of one save (a sweep)
refused for one reason are told as one error.

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
import secrets
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Protocol, cast

from mergelang._version import __version__
from mergelang.arch.prediction import PREDICT_KEY, PREDICT_KEY_METADATA, Prediction
from mergelang.errors import Diagnostic, MergelangError, OutputError, RecipeError, source_line
from mergelang.io.file_formats import FILE_FORMATS, format_of_content
from mergelang.io.formats import sniff_format
from mergelang.io.hashing import LEGACY_LENGTH, LEGACY_OFFSET, FileHashes, range_sha256
from mergelang.io.metadata import (
    SD_MERGE_MODELS,
    WEBUI_METHODS,
    InputRecord,
    WebuiMerge,
    build_metadata,
    metadata_json,
    text_file_name,
)
from mergelang.io.writer import check_target
from mergelang.plan.graph import LoadNode, MethodNode, Node, walk
from mergelang.plan.inputs import InputFile, InputHandle, open_cached
from mergelang.plan.plan import CacheEntry, FileOutput, OutputPlan, Plan
from mergelang.plan.protected_files import protected_files
from mergelang.plan.staleness import SAVE_KEY, STEPS_KEY, changes, save_identity, step_keys

__all__ = [
    "CACHE_FORMAT",
    "CACHE_KEY",
    "CACHE_VERSION",
    "DATA_DIGEST",
    "OBJECTS",
    "OUTPUT_KEY",
    "HashingProgress",
    "decide",
    "existing_metadata",
    "existing_output_key",
    "object_path",
    "placeholder_hashes",
    "step_address",
    "stored_dtype",
    "with_real_hashes",
]

OBJECTS = "objects"
CACHE_FORMAT = "safetensors"
"""The file format of cached step values."""
OUTPUT_KEY = "mergelang.output_key"
CACHE_KEY = "mergelang.cache_key"
DATA_DIGEST = "mergelang.data_sha256"
"""The metadata entry of a cached object that holds the sha256 of its data section, filled
in before the object is committed and checked on every hit."""
CACHE_VERSION = 2
"""The version of the cache's objects, part of every step address: objects an older
mergelang stored (without a digest, or laid out otherwise) are never found."""


def step_address(node: Node, input_keys: dict[int, str]) -> str | None:
    """Where ``node``'s value is cached: its content address under :data:`CACHE_VERSION`."""
    key = node.content_key(input_keys)
    if key is None:
        return None
    return hashlib.sha256(f"mergelang-cache\x1f{CACHE_VERSION}\x1f{key}".encode()).hexdigest()


REBUILT = "remade on request (--rebuild)"
REPEATS = 3
"""From this many outputs of one save refused for one reason, they are told as one error."""


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


def _loads(plan: Plan) -> list[LoadNode]:
    loads = [n for n in plan.all_nodes() if isinstance(n, LoadNode)]
    loads += [o.vae for o in plan.outputs if o.vae is not None]
    return loads + [n for o in plan.outputs for _, n in o.components]


class HashingProgress(Protocol):
    """Told how the hashing of inputs goes (a run's reporter follows this protocol)."""

    def phase(self, name: str, total: int, detail: str = "") -> None: ...

    def advance(self, done: int, detail: str = "") -> None: ...


def _input_hashes(
    plan: Plan, *, hash_inputs: bool, progress: HashingProgress | None = None
) -> dict[str, FileHashes]:
    """The content hashes known of the inputs the outputs draw on (by handle identity):
    from the hash cache, else (``hash_inputs``) computed now, as one ``hashing`` phase of
    ``progress`` with the bytes of every file to read."""
    hashes: dict[str, FileHashes] = {}
    asked: set[str] = set()
    to_hash: list[InputHandle] = []
    for node in _loads(plan):
        handle = node.handle
        file = handle.file
        if file is None or handle.identity in asked:
            continue
        asked.add(handle.identity)
        known = file.hashes(plan.cache_dir, compute=False)
        if known is not None:
            hashes[handle.identity] = known
        elif hash_inputs:
            to_hash.append(handle)
    if to_hash and progress is not None:
        progress.phase("hashing", sum(h.file.size for h in to_hash if h.file is not None))
    for handle in to_hash:
        file = handle.file
        assert file is not None
        name = file.path.name

        def advance(count: int, name: str = name) -> None:
            if progress is not None:
                progress.advance(count, name)

        computed = file.hashes(plan.cache_dir, compute=True, progress=advance)
        assert computed is not None  # computing always gives the hashes
        hashes[handle.identity] = computed
    return hashes


def _load_keys(plan: Plan, hashes: Mapping[str, FileHashes]) -> dict[int, str]:
    """``id(LoadNode) -> sha256`` for every load whose hash is known."""
    found: dict[int, str] = {}
    for node in _loads(plan):
        known = hashes.get(node.handle.identity)
        if known is not None:
            found[id(node)] = known.sha256
    return found


def _unhashed(plan: Plan, hashes: Mapping[str, FileHashes]) -> list[InputHandle]:
    """The file inputs the outputs draw on whose hashes are not known, first found first."""
    found: dict[str, InputHandle] = {}
    for node in _loads(plan):
        handle = node.handle
        if handle.file is not None and handle.identity not in hashes:
            found.setdefault(handle.identity, handle)
    return list(found.values())


def _can_hash_during_run(
    plan: Plan,
    hashes: Mapping[str, FileHashes],
    unhashed: list[str],
    keys: dict[int, str],
    use_cache: bool,
) -> bool:
    """Whether the unhashed inputs can be hashed while the merge streams: every pending
    output streams (its header can be rewritten in place before the commit), none exists yet
    (deciding "up to date" needs the real address), and no cached step draws on them (a cache
    address must never name a hash that was not computed), and the real hashes cannot
    change the headers' shape (see below)."""
    for output in plan.outputs:
        if not isinstance(output, FileOutput):
            continue
        if not output.file_format.streams or os.path.lexists(output.path):
            return False
        if output.file_format.module != FILE_FORMATS["safetensors"].module:
            return False  # only the plain safetensors writer rewrites its header in place
    # The stand-ins differ from every other hash, so the real ones must too, or the header
    # changes shape (records keyed by hash merge). Cheap samples prove it: two files whose
    # samples differ cannot share their content.
    files = {h.identity: h.file for h in plan.inputs if h.file is not None}
    samples: dict[str, tuple[int, str, str]] = {}
    for identity in unhashed:
        file = files.get(identity)
        if file is None:
            return False
        samples[identity] = _samples(file)
    if len(set(samples.values())) < len(samples):
        return False
    taken = {(h.size, h.legacy) for h in hashes.values()}
    for file in files.values():
        taken |= {(-1, legacy) for legacy in _ancestor_legacies(file.metadata)}
    for size, legacy, _ in samples.values():
        if (size, legacy) in taken or (-1, legacy) in taken:
            return False
    if use_cache:
        for node in walk(plan.roots()):
            if _cacheable(node) is not None and node.content_key(keys) is None:
                return False
    return True


def _samples(file: InputFile) -> tuple[int, str, str]:
    """A cheap fingerprint: the size, the legacy hash (the 64 KiB at 1 MiB) and a sha256 of
    64 KiB at the start of the data, the middle and the end. Equal files have equal ones."""
    fd, size = file.file.fileno(), file.size
    legacy = range_sha256(fd, min(LEGACY_OFFSET, size), min(LEGACY_OFFSET + LEGACY_LENGTH, size))
    sampled = hashlib.sha256()
    for start in (0, size // 2, max(0, size - LEGACY_LENGTH)):
        sampled.update(range_sha256(fd, start, min(size, start + LEGACY_LENGTH)).encode())
    return size, legacy[:8], sampled.hexdigest()


def _ancestor_legacies(metadata: Mapping[str, str]) -> set[str]:
    """The legacy hashes of the ancestors an input names in its ``sd_merge_models``."""
    try:
        ancestors = json.loads(metadata.get(SD_MERGE_MODELS, "{}"))
    except ValueError:
        return set()
    if not isinstance(ancestors, dict):
        return set()
    found = set()
    for entry in ancestors.values():
        legacy = entry.get("legacy_hash") if isinstance(entry, dict) else None
        if isinstance(legacy, str):
            found.add(legacy)
    return found


def placeholder_hashes(size: int) -> FileHashes:
    """Stand-in hashes of an input hashed during the run: random hex of the real widths,
    so that every header holding them keeps its length when the real ones replace them."""
    return FileHashes.from_digests(secrets.token_hex(32), secrets.token_hex(32), size)


def with_real_hashes(plan: Plan, real: Mapping[str, FileHashes]) -> Plan:
    """``plan`` (one whose inputs in :attr:`Plan.hashed_during_run` carry placeholders) with
    the real hashes: its outputs' addresses and metadata made again from them."""
    hashes = {**plan.hashes, **real}
    known = dataclasses.replace(plan, hashes=MappingProxyType(hashes), hashed_during_run=())
    keys = _load_keys(known, hashes)
    outputs: list[OutputPlan] = []
    for output in known.outputs:
        if isinstance(output, FileOutput) and output.status == "write":
            output = dataclasses.replace(output, key=_output_key(output, keys))
        outputs.append(output)
    known = dataclasses.replace(known, outputs=tuple(outputs))
    if not known.hashed:  # as in decide: no metadata without every input's hash
        return known
    finished = [
        dataclasses.replace(o, metadata=MappingProxyType(_metadata(known, o)))
        if isinstance(o, FileOutput) and o.status == "write"
        else o
        for o in outputs
    ]
    return dataclasses.replace(known, outputs=tuple(finished))


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
    baked = []
    for name, node in output.components:
        found = keys.get(id(node))
        if found is None:
            return None
        baked.append([name, found])
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
            # An explicit layout renames the output's keys; the default follows the inputs.
            *([] if options.layout is None else [options.layout]),
            *([] if not baked else [baked]),
            # Only a declared prediction changes the output beyond its inputs (whose common
            # prediction is in node_key); left out otherwise, so addresses stay as they were.
            *([options.prediction] if options.prediction != "auto" else []),
        ]
    )
    return hashlib.sha256(text.encode()).hexdigest()


def existing_metadata(path: Path) -> dict[str, str] | None:
    """The metadata of an existing output (safetensors header, or the metadata mergelang
    keeps in a ``.ckpt``), or ``None`` when it cannot be read as a model."""
    try:
        return dict(format_of_content(sniff_format(path)).read_metadata(path))
    except (MergelangError, OSError):
        return None


def existing_output_key(path: Path) -> str | None:
    """The output address recorded in an existing output, or ``None``."""
    metadata = existing_metadata(path)
    return None if metadata is None else metadata.get(OUTPUT_KEY)


def _cacheable(node: Node) -> str | None:
    """Why ``node`` goes through the cache, or ``None``."""
    if isinstance(node, LoadNode):
        return None
    if node.cache_marked:
        return "marked cache"
    if node.names and (not node.elementwise or node.needs_stats):
        return "not elementwise" if not node.elementwise else "needs a statistics pass"
    return None


def _hit_handle(node: Node, path: Path, key: str, *, verify: bool) -> InputHandle | None:
    """The cached file as an input, if it is whole and holds what ``node`` needs, and
    (``verify``) its data matches the digest stored with it."""
    file = open_cached(path)
    if file is None:
        return None
    metas = file.metas()
    whole = file.metadata.get(CACHE_KEY) == key
    if whole and verify:
        whole = _data_intact(file)
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


def _data_intact(file: InputFile) -> bool:
    """Whether the object's data section has the sha256 its header records."""
    recorded = file.metadata.get(DATA_DIGEST)
    if recorded is None or len(recorded) != 64:
        return False
    header = file.header()
    try:
        return range_sha256(file.file.fileno(), header.data_offset, file.size) == recorded
    except OSError:
        return False


def decide(
    plan: Plan,
    *,
    hash_inputs: bool,
    force: bool,
    use_cache: bool,
    hash_during_run: bool = False,
    rebuild: bool = False,
    progress: HashingProgress | None = None,
) -> Plan:
    """``plan`` finished: its content hashes, the outputs' addresses, statuses and metadata,
    and the cache decisions; raises :class:`RecipeError` for outputs that cannot be
    written.

    ``hash_during_run`` (with ``hash_inputs``): inputs whose hashes are not cached are hashed
    by the executor while the merge streams, when :func:`_can_hash_during_run` allows it;
    until then they carry :func:`placeholder_hashes` (listed in
    :attr:`Plan.hashed_during_run`), and :func:`with_real_hashes` puts the real ones in.

    An existing file that this save made earlier (see :mod:`mergelang.plan.staleness`) is
    remade when it is not up to date, or always with ``rebuild``; any other existing file
    needs ``force``. Inputs hashed here (not during the run) are reported to ``progress``."""
    hashes = _input_hashes(plan, hash_inputs=hash_inputs and not hash_during_run, progress=progress)
    during: tuple[str, ...] = ()
    if hash_inputs and hash_during_run:
        unhashed = _unhashed(plan, hashes)
        identities = [h.identity for h in unhashed]
        load_keys = _load_keys(plan, hashes)
        if unhashed and _can_hash_during_run(plan, hashes, identities, load_keys, use_cache):
            for handle in unhashed:
                assert handle.file is not None
                hashes[handle.identity] = placeholder_hashes(handle.file.size)
            during = tuple(h.identity for h in unhashed)
        else:
            hashes = _input_hashes(plan, hash_inputs=True, progress=progress)
    keys = _load_keys(plan, hashes)
    hashed = all(h.identity in hashes for h in plan.inputs if h.path is not None)
    to_hash = (0, 0, False)
    if not hash_inputs:
        waiting = _unhashed(plan, hashes)
        if waiting:
            size = sum(h.file.size for h in waiting if h.file is not None)
            identities = [h.identity for h in waiting]
            during_ok = _can_hash_during_run(plan, hashes, identities, keys, use_cache)
            to_hash = (len(waiting), size, during_ok)
    known = dataclasses.replace(
        plan,
        hashes=MappingProxyType(hashes),
        hashed=hashed,
        hashed_during_run=during,
        to_hash=to_hash,
    )
    protected = protected_files(plan)
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
            metadata = existing_metadata(output.path) or {}
            existing = metadata.get(OUTPUT_KEY)
            identity = save_identity(plan.checked.path, output.path)
            if output.key is not None and existing == output.key and not rebuild:
                outputs[-1] = dataclasses.replace(output, status="up-to-date")
            elif output.key is not None and existing == output.key:
                outputs[-1] = dataclasses.replace(output, replaces=True, changes=(REBUILT,))
            elif identity is not None and metadata.get(SAVE_KEY) == identity:
                found = changes(metadata, output, keys, __version__) if hashed else ()
                outputs[-1] = dataclasses.replace(output, replaces=True, changes=found)
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
        raise RecipeError(summarise_repeats(blocked))
    known = dataclasses.replace(known, outputs=tuple(outputs))
    warnings: list[Diagnostic] = []
    cache = _decide_cache(known, keys, verify=hash_inputs, warnings=warnings) if use_cache else ()
    decided = dataclasses.replace(known, cache=cache, warnings=(*known.warnings, *warnings))
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


def _broken_object(plan: Plan, node: Node, path: Path) -> Diagnostic:
    return Diagnostic(
        f"the cached value of {node.label} failed its check (its data does not match the "
        "digest stored with it, or it has none); it is computed again and stored anew",
        "cache-corrupt",
        str(path),
        node.span,
        severity="warning",
        source_line=source_line(plan.checked.recipe.source, node.span.line),
    )


def _decide_cache(
    plan: Plan, keys: dict[int, str], *, verify: bool, warnings: list[Diagnostic]
) -> tuple[CacheEntry, ...]:
    """The cache entries of ``plan``; ``verify``: check each hit's data against its digest
    (a run does; ``plan`` only looks at the headers), a failure added to ``warnings``."""
    pending = plan.pending
    if not pending:
        return ()
    entries: list[CacheEntry] = []
    try:
        for node in walk(plan.roots()):
            reason = _cacheable(node)
            if reason is None:
                continue
            key = step_address(node, keys)
            if key is None:
                if not plan.hashed:
                    entries.append(CacheEntry(node, None, None, "unknown", reason))
                continue
            path = object_path(plan.cache_dir, key)
            handle = None
            if path.is_file():
                handle = _hit_handle(node, path, key, verify=verify)
                if handle is None and verify:
                    warnings.append(_broken_object(plan, node, path))
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
        extra["bake_in_vae"] = text_file_name(output.vae.handle.path.name)
    if output.prediction is not None:
        extra[PREDICT_KEY_METADATA] = PREDICT_KEY[cast(Prediction, output.prediction)]
    if output.key is not None:
        extra[OUTPUT_KEY] = output.key
    identity = save_identity(plan.checked.path, output.path)
    if identity is not None:
        extra[SAVE_KEY] = identity
    steps = step_keys(
        output, {id(load): load_hash for load, load_hash in _load_hashes(plan, loads)}
    )
    if steps:
        extra[STEPS_KEY] = json.dumps(steps, sort_keys=True)
    if plan.checked.variables:
        extra["mergelang.set"] = metadata_json(dict(plan.checked.variables))
    if output.save.bindings:
        extra["mergelang.bindings"] = metadata_json(dict(output.save.bindings))
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


def _load_hashes(plan: Plan, loads: list[LoadNode]) -> list[tuple[LoadNode, str]]:
    found: list[tuple[LoadNode, str]] = []
    for load in loads:
        hashes = plan.hashes_of(load.handle)
        if hashes is not None:
            found.append((load, hashes.sha256))
    return found


def summarise_repeats(found: list[Diagnostic]) -> list[Diagnostic]:
    """The outputs of one save (a sweep) refused for one reason, told once: the count, the
    first and the last path; fewer than :data:`REPEATS` are told one by one."""
    groups: dict[tuple[str, str | None, object, str], list[Diagnostic]] = {}
    for diag in found:
        reason = diag.message.partition(": ")[2]
        groups.setdefault((diag.code, diag.path, diag.span, reason), []).append(diag)
    told: list[Diagnostic] = []
    for (_, _, _, reason), group in groups.items():
        if len(group) < REPEATS:
            told += group
            continue
        first, last = (d.message.partition(": ")[0] for d in (group[0], group[-1]))
        told.append(
            dataclasses.replace(
                group[0],
                message=f"{len(group)} outputs of this save: {reason} "
                f"(the first {first}, the last {last})",
            )
        )
    return told
