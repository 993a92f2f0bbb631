"""What the planner produces: the outputs, the cache decisions and the passes of a run.

A :class:`Plan` is complete before any tensor is read: every output's keys, dtypes and shapes
(so each file's header can be written first), which steps are fused into their consumers,
which come from or go to the cache, which outputs are already up to date, how many bytes the
run reads and writes, and an estimate of its working memory.

A plan is finished when planning returns it, cache decisions included, and nothing changes it
afterwards: :class:`Plan`, its outputs (:class:`FileOutput` for a file, :class:`MemoryOutput`
for a result returned in memory) and its :class:`CacheEntry` objects are frozen, and the
executor reports what happened in its own result. The one thing done to a plan is
:meth:`Plan.close`, which closes the input files it holds open.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, ClassVar, Literal, TypeAlias

from mergelang.check.checked_recipe import CheckedRecipe, SaveTarget
from mergelang.errors import Diagnostic
from mergelang.io.file_formats import FileFormat
from mergelang.io.save_options import OutputKey, SaveOptions
from mergelang.plan.graph import LoadNode, MethodNode, Node, walk
from mergelang.plan.inputs import InputHandle

if TYPE_CHECKING:
    from mergelang.io.hashing import FileHashes

__all__ = [
    "CUDA_CHUNK",
    "DEFAULT_CHUNK",
    "OUTPUT_KEY_BYTES",
    "CacheEntry",
    "FileOutput",
    "MemoryOutput",
    "OutputPlan",
    "OutputStatus",
    "Plan",
    "output_bookkeeping",
]

DEFAULT_CHUNK = 1 << 18
"""Elements per chunk on CPU: a 1 MiB float32 buffer, small enough to stay in a core's cache
hierarchy while the fused formula runs over it, large enough to keep per-call overhead low."""

CUDA_CHUNK = 1 << 24
"""Elements per chunk on a GPU: each chunk crosses the bus twice, so fewer, larger copies
(64 MiB of float32) pay; the GPU's memory holds these buffers easily."""

OutputStatus = Literal["write", "up-to-date", "memory"]
FileStatus = Literal["write", "up-to-date"]
CacheStatus = Literal["hit", "store", "unknown"]

_NO_METADATA: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, eq=False)
class FileOutput:
    """One output file: the save it comes from, where it goes and every key it will hold.

    ``status``: ``write`` (made by this run) or ``up-to-date`` (the file exists and was made
    from the same step, inputs and options: nothing to do). ``key`` is the content address of
    the output (``None`` when an input has no content hash yet). ``metadata``: what the file
    records (provenance, the address), known once every input is hashed.
    """

    save: SaveTarget
    path: Path
    node: Node
    options: SaveOptions
    layout: tuple[OutputKey, ...]
    vae: LoadNode | None = None
    status: FileStatus = "write"
    key: str | None = None
    metadata: Mapping[str, str] = field(default_factory=lambda: _NO_METADATA)
    name: str = ""
    replaces: bool = False
    """Whether the file at :attr:`path` is this save's own earlier output (its metadata names
    this recipe and this save), replaced without ``--force``."""
    changes: tuple[str, ...] = ()
    """What changed since the earlier output was made (``step 'x' changed``, ``input 'b'
    changed``), when :attr:`replaces`."""
    components: tuple[tuple[str, LoadNode], ...] = ()
    """The text-encoder files baked in: (component name, its file)."""
    notes: tuple[str, ...] = ()
    """What the plan tells about the output's keys (a bare output leaves the VAE out, a bare
    input's missing components come from another input: :mod:`mergelang.plan.file_layouts`)."""
    prediction: str | None = None
    """What the output predicts (``eps``, ``v``, ``v_ztsnr``: :mod:`mergelang.arch.prediction`)
    for an architecture whose files mark it; ``None`` for the others."""

    @property
    def nbytes(self) -> int:
        """Bytes of the file: exact where the format knows its size up front (GGUF, scaled
        fp8), else the data bytes of its keys."""
        from mergelang.io.sinks import SinkTarget

        entries = tuple(item.entry() for item in self.layout)
        exact = self.file_format.file_size(SinkTarget(self.path, entries, self.metadata))
        return sum(e.nbytes for e in entries) if exact is None else exact

    @property
    def label(self) -> str:
        return str(self.path)

    @property
    def file_format(self) -> FileFormat:
        return self.options.file_format


@dataclass(frozen=True, eq=False)
class MemoryOutput:
    """A result returned to the caller in memory (``mergelang.evaluate``), never written:
    a save of the recipe (with its options) or a step or input with every key kept."""

    node: Node
    options: SaveOptions
    layout: tuple[OutputKey, ...]
    name: str
    save: SaveTarget | None = None
    vae: LoadNode | None = None
    components: tuple[tuple[str, LoadNode], ...] = ()

    status: ClassVar[Literal["memory"]] = "memory"
    path: ClassVar[None] = None
    key: ClassVar[None] = None
    metadata: ClassVar[Mapping[str, str]] = _NO_METADATA

    @property
    def nbytes(self) -> int:
        return sum(item.entry().nbytes for item in self.layout)

    @property
    def label(self) -> str:
        return self.name


OutputPlan: TypeAlias = FileOutput | MemoryOutput
"""One output of a plan."""


@dataclass(frozen=True, eq=False)
class CacheEntry:
    """A step whose value goes through the on-disk cache: read from it (``hit``) or stored
    into it by this run (``store``). ``unknown``: an input has not been hashed yet, so the
    cache cannot be asked (``mergelang plan`` without hashing)."""

    node: Node
    key: str | None
    path: Path | None
    status: CacheStatus
    reason: str
    handle: InputHandle | None = None
    """For a hit: the cached file, read like an input."""


@dataclass(frozen=True, eq=False)
class Plan:
    """A run, decided: see the module docstring."""

    checked: CheckedRecipe
    inputs: tuple[InputHandle, ...]
    outputs: tuple[OutputPlan, ...]
    cache: tuple[CacheEntry, ...]
    cache_dir: Path
    chunk: int = DEFAULT_CHUNK
    workers: int = 1
    device: str = "cpu"
    nan: str = "error"
    """What to do with NaN or infinite values in the inputs of a merge: ``error`` (refuse,
    naming the model and key) or ``keep`` (merge them as they are)."""
    hashed: bool = False
    """Whether every file input's content hash is known (cache and up-to-date decisions
    are final)."""
    warnings: tuple[Diagnostic, ...] = ()
    """Warnings found with the inputs known (elemental patterns matching no key); the
    recipe's own warnings are in ``checked.warnings``."""
    force: bool = False
    """Whether outputs may replace existing files (``--force``). Without it an output is
    moved into place only if its name is still free then, so a file that another process
    wrote meanwhile is never replaced."""
    hashes: Mapping[str, FileHashes] = field(default_factory=lambda: MappingProxyType({}))
    """The content hashes known, by :attr:`InputHandle.identity`."""
    to_hash: tuple[int, int, bool] = (0, 0, False)
    """For a plan made without hashing (``mergelang plan``): how many inputs a run would
    hash, their bytes, and whether it would hash them while the merge streams (else before
    it)."""
    hashed_during_run: tuple[str, ...] = ()
    """The inputs (by :attr:`InputHandle.identity`) the executor hashes while the merge
    streams: their :attr:`hashes` are placeholders of the real widths until then, and the
    outputs' headers are rewritten in place with the real ones before the commit."""

    def close(self) -> None:
        """Close the files the plan holds open (its inputs and cache hits)."""
        for handle in self.inputs:
            handle.close()
        for entry in self.cache:
            if entry.handle is not None:
                entry.handle.close()

    def hashes_of(self, handle: InputHandle) -> FileHashes | None:
        """The content hashes of an input, if known."""
        return self.hashes.get(handle.identity)

    def cache_entry(self, node: Node) -> CacheEntry | None:
        for entry in self.cache:
            if entry.node is node:
                return entry
        return None

    @property
    def hits(self) -> dict[int, CacheEntry]:
        return {id(e.node): e for e in self.cache if e.status == "hit"}

    @property
    def stores(self) -> list[CacheEntry]:
        return [e for e in self.cache if e.status == "store"]

    @property
    def pending(self) -> list[OutputPlan]:
        """The outputs this run computes (written or returned)."""
        return [o for o in self.outputs if o.status != "up-to-date"]

    def roots(self) -> list[Node]:
        roots = [o.node for o in self.pending]
        roots += [o.vae for o in self.pending if o.vae is not None]
        roots += [n for o in self.pending for _, n in o.components]
        roots += [e.node for e in self.stores]
        return roots

    def needed(self) -> list[Node]:
        """The nodes this run evaluates, children first; the subtree of a cache hit is
        not needed (the hit is read instead)."""
        hits = self.hits
        order: list[Node] = []
        seen: set[int] = set()
        stack = list(reversed(self.roots()))
        while stack:
            node = stack.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            order.append(node)
            if id(node) not in hits:
                stack.extend(reversed(node.children))
        wanted = {id(n) for n in order}
        return [n for n in walk(self.roots()) if id(n) in wanted]

    def all_nodes(self) -> list[Node]:
        return walk([o.node for o in self.outputs] + [e.node for e in self.cache])

    @property
    def passes(self) -> list[str]:
        """The passes over the keys this run makes, in order."""
        if not self.pending and not self.stores:
            return []
        hits = self.hits
        stats = [n for n in self.needed() if n.needs_stats and id(n) not in hits]
        found = ["statistics"] if stats else []
        return [*found, "merge"]

    def sources(self) -> list[tuple[str, int]]:
        """What the run reads: (label, bytes) per input file or cache hit it needs."""
        hits = self.hits
        found: list[tuple[str, int]] = []
        for node in self.needed():
            entry = hits.get(id(node))
            if entry is not None and entry.handle is not None:
                found.append((f"cache {entry.key}", entry.handle.nbytes))
            elif isinstance(node, LoadNode):
                found.append((node.handle.label, node.handle.nbytes))
        return found

    @property
    def bytes_read(self) -> int:
        return sum(size for _, size in self.sources())

    @property
    def bytes_written(self) -> int:
        written = sum(o.nbytes for o in self.pending if o.status == "write")
        return written + sum(_store_bytes(e.node) for e in self.stores)

    def working_memory(self) -> int:
        """Estimated bytes of tensors the run holds at once (Python and torch not counted).

        Per worker: one float32 chunk per evaluated node and per output dtype; whole-tensor
        keys (non-elementwise methods, channel merges), evaluated one large key at a time,
        hold the largest key for each operand and result of each node that needs it, and
        the temporaries the most demanding method declares
        (:attr:`~mergelang.methods.spec.MethodSpec.temporaries`); outputs held whole until they are
        committed (in-memory results, and files of a format that does not stream, such as
        ``.ckpt``); and each output's bookkeeping (:func:`output_bookkeeping`).
        """
        if not self.passes:
            return 0
        needed = [n for n in self.needed() if not isinstance(n, LoadNode)]
        per_chunk = (len(needed) + len(self.inputs) + 4) * self.chunk * 4
        whole = [n for n in needed if not n.elementwise]
        largest = max((s.numel for n in needed for s in n.keys.values()), default=0)
        # Each whole node's operands (float32 copies) and result stay until the key is
        # written; the kernels run one at a time, so only the largest set of temporaries
        # (see MethodSpec.temporaries) adds to them, with the result's cast to the output.
        whole_bytes = sum((len(n.children) + 1) * largest * 4 for n in whole)
        if whole:
            extra = max((n.spec.temporaries for n in whole if isinstance(n, MethodNode)), default=0)
            whole_bytes += (extra + 1) * largest * 4
        held = sum(o.nbytes for o in self.pending if not _streams(o))
        bookkeeping = sum(output_bookkeeping(len(o.layout), o.metadata) for o in self.pending)
        bookkeeping += sum(output_bookkeeping(len(e.node.keys), {}) for e in self.stores)
        return self.workers * per_chunk + whole_bytes + held + bookkeeping


OUTPUT_FIXED_BYTES = 16 << 10
"""What an output being written holds whatever its keys: its sink, its temporary file's
name and state, its result record."""

OUTPUT_KEY_BYTES = 640
"""What an output being written holds per key besides the tensors: the key's entry, its
line of the header (kept for the in-place rewrite of the metadata), its data offsets and the
spans written so far, and the key's write target in the run. Measured: a safetensors sink of
an SD1 layout holds about 380 bytes a key (433 KB for 1,131 keys, 145 KB of it the header);
a target is about 200 more."""


def output_bookkeeping(keys: int, metadata: Mapping[str, str]) -> int:
    """Estimated bytes one output of ``keys`` keys costs the run besides its tensors (see
    :data:`OUTPUT_KEY_BYTES`); its metadata counts twice (the values, and the header's JSON
    of them)."""
    meta = sum(len(k) + len(v) for k, v in metadata.items())
    return OUTPUT_FIXED_BYTES + keys * OUTPUT_KEY_BYTES + 2 * meta


def _streams(output: OutputPlan) -> bool:
    return isinstance(output, FileOutput) and output.file_format.streams


def _store_bytes(node: Node) -> int:
    return sum(s.numel * 4 for s in node.keys.values())


def step_numbers(nodes: Sequence[Node]) -> Mapping[int, int]:
    """``id(node) -> n`` for naming nodes ``#n`` in plans, in the order given."""
    return {id(node): index for index, node in enumerate(nodes, 1)}
