"""Running a :class:`~mergelang.plan.plan.Plan`: one streaming pass over the keys.

Every output of the plan (files, cache stores, in-memory results) is opened first: a
safetensors file gets its whole header and its final size at once. When there are more files
than the descriptor limit leaves room for (:func:`output_batch`), they are opened and
streamed a batch at a time, each batch's descriptors closed before the next opens. Then
each key is a :class:`~mergelang.run.compute.KeyTask` run by a small pool of worker
threads: it reads the key from each input once, computes every node that needs it, and
writes it to every output that holds it. Torch's kernels and the file reads and writes
release the GIL, so the threads overlap reading, computing and writing. Methods that need
statistics over the whole model get a pass of their own before, which reads only what they
need.

On CPU the workers run torch with one intra-op thread each (restored afterwards): a chunk is
too small to share out, and torch's own threads waiting on each other at every chunk (worse
when another program holds a core) cost far more than they give.

Outputs appear together or not at all: every output is first completed and synced under its
temporary name, the inputs are checked unchanged, and only then are all renamed into place,
signals held (:mod:`mergelang.run.commit`). If anything fails before that, or the run is
interrupted (the ``cancel`` event, ``KeyboardInterrupt``), every temporary file is removed and
nothing is renamed into place. Temporary files, of any name, that no live run holds (left by
runs killed with ``SIGKILL``) are swept from every folder the run writes to when it opens
its outputs (:func:`mergelang.io.partials.sweep`), and listed in
:attr:`RunResult.removed_partials`. A cache object that cannot be stored (the cache folder
read-only, in the way of a file, full) is dropped with one warning; the run goes on.

Without ``--force`` (:attr:`Plan.force`) an output is moved into place only if its name is
still free: when two runs race for one file, the first to finish wins. The other fails with
``exists``, unless the file that won records the same output address, in which case its
output is ``up-to-date``.

Each file output is opened through its format's line of
:data:`~mergelang.io.file_formats.FILE_FORMATS`, so the executor never asks which format an
output is: every sink takes ``write_part`` and then ``commit`` or ``abort``. The plan is never
changed: what happened to each output is in the :class:`RunResult`.
"""

from __future__ import annotations

import contextlib
import gc
import os
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mergelang.arch.conventions import get_convention
from mergelang.errors import Diagnostic, OutputError, UsageError
from mergelang.io.file_formats import FILE_FORMATS
from mergelang.io.fp8 import clamped_warning
from mergelang.io.partials import sweep
from mergelang.io.save_options import OutputKey
from mergelang.io.sinks import MemorySink, Sink, SinkTarget
from mergelang.io.writer import PLACEHOLDER, SafetensorsWriter, fsync_folder
from mergelang.plan.cache import (
    CACHE_FORMAT,
    CACHE_KEY,
    DATA_DIGEST,
    existing_output_key,
    stored_dtype,
    with_real_hashes,
)
from mergelang.plan.graph import KeySlot, MethodNode, Node
from mergelang.plan.plan import CacheEntry, FileOutput, MemoryOutput, OutputPlan, Plan
from mergelang.plan.protected_files import protected_files
from mergelang.run.commit import CacheStore, cache_warning, signals_held
from mergelang.run.compute import Chunk, Evaluator, KeyTask, Target
from mergelang.run.input_hashing import InputHashing
from mergelang.run.progress import NullReporter, Reporter

__all__ = ["OutputResult", "RunResult", "execute", "resolve_device"]


@dataclass(frozen=True)
class OutputResult:
    """What happened to one output: ``written``, ``up-to-date`` or ``memory`` (returned in
    :attr:`tensors`)."""

    name: str
    path: Path | None
    status: str
    nbytes: int
    keys: int
    tensors: Mapping[str, torch.Tensor] | None = None
    changes: tuple[str, ...] = ()
    """Why an earlier output of the same save was remade (``step 'x' changed``)."""


@dataclass(frozen=True)
class RunResult:
    outputs: tuple[OutputResult, ...]
    cache_hits: tuple[str, ...]
    cache_stores: tuple[str, ...]
    bytes_read: int
    bytes_written: int
    seconds: float
    warnings: tuple[Diagnostic, ...] = ()
    """The plan's warnings (found with the inputs known), for the caller to show."""
    removed_partials: tuple[tuple[Path, int], ...] = ()
    """Temporary files in the folders this run writes to that no live run held (path, the
    process id in the name), removed before writing."""

    @property
    def written(self) -> list[Path]:
        return [o.path for o in self.outputs if o.status == "written" and o.path is not None]


def resolve_device(name: str) -> torch.device:
    """The torch device for ``--device``; a clear error when CUDA is asked for but absent."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(
            f"unknown device {name!r}", hint="use cpu or cuda (cuda:N for another GPU)"
        ) from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise UsageError(f"device {name!r} is not supported", hint="use cpu or cuda")
    if not torch.cuda.is_available():
        why = "this torch build has no CUDA" if torch.version.cuda is None else "no GPU found"
        raise UsageError(f"--device {name}: CUDA is not available ({why})", hint="use --device cpu")
    index = device.index or 0
    if index >= torch.cuda.device_count():
        raise UsageError(
            f"--device {name}: there are only {torch.cuda.device_count()} CUDA devices"
        )
    return torch.device("cuda", index)


class _Run:
    def __init__(
        self,
        plan: Plan,
        reporter: Reporter,
        cancel: threading.Event,
        hashing: InputHashing | None = None,
    ) -> None:
        self.plan = plan
        self.reporter = reporter
        self.cancel = cancel
        self.device = resolve_device(plan.device)
        self.hits = plan.hits
        self.sinks: list[tuple[Sink, OutputPlan | CacheEntry]] = []
        self.removed: list[tuple[Path, int]] = []
        self.made_meanwhile: set[int] = set()
        """``id()`` of the outputs another run made, the same, while this one ran."""
        self.hashing = hashing if hashing is not None else InputHashing(plan)
        self.protected = protected_files(plan, cache_hits=True)
        self.batches: list[list[OutputPlan | CacheEntry]] = []
        self.opened: list[tuple[Sink, OutputPlan | CacheEntry]] = []
        self.cache_failure: str | None = None
        """Why a cache object could not be stored (the first reason), for one warning."""

    # -- sinks

    def sweep(self) -> None:
        """Remove the partial files no live run holds from every folder written to."""
        folders = [e.path.parent for e in self.plan.stores if e.path is not None]
        folders += [o.path.parent for o in self.plan.pending if isinstance(o, FileOutput)]
        for folder in dict.fromkeys(folders):
            self.removed += sweep(folder)

    def openers(self) -> list[tuple[OutputPlan | CacheEntry, bool]]:
        """What the run writes, in order: each cache store and pending output, and whether it
        is a file (a file holds a descriptor while it is written; see :func:`output_batch`)."""
        found: list[tuple[OutputPlan | CacheEntry, bool]] = [(e, True) for e in self.plan.stores]
        found += [(o, isinstance(o, FileOutput)) for o in self.plan.pending]
        return found

    def open_sink(self, owner: OutputPlan | CacheEntry) -> Sink | None:
        """Open ``owner``'s sink and add it to :attr:`sinks`; ``None`` when another run made
        the same output meanwhile, or a cache object cannot be stored (noted for one
        warning)."""
        if isinstance(owner, CacheEntry):
            entry = owner
            assert entry.path is not None and entry.key is not None
            entries = tuple(
                OutputKey(k, stored_dtype(entry.node, k), s.shape, "model").entry()
                for k, s in entry.node.keys.items()
            )
            meta = {
                CACHE_KEY: entry.key,
                DATA_DIGEST: PLACEHOLDER,
                "mergelang.step": entry.node.describe()[:2000],
            }
            target = SinkTarget(entry.path, entries, meta, overwrite=True)
            try:
                store = CacheStore(FILE_FORMATS[CACHE_FORMAT].open_sink(target))
            except (OutputError, OSError) as exc:
                failed = CacheStore(MemorySink(()))
                failed.fail(exc)
                self.note_cache(failed)
                return None
            self.sinks.append((store, entry))
            return store
        output = owner
        entries = tuple(item.entry() for item in output.layout)
        if isinstance(output, MemoryOutput):
            memory = MemorySink(entries)
            self.sinks.append((memory, output))
            return memory
        target = SinkTarget(
            output.path,
            entries,
            output.metadata,
            overwrite=self.plan.force or output.replaces,
            protected=tuple(self.protected),
        )
        try:
            sink = output.file_format.open_sink(target)
        except OutputError as exc:
            if not _made_meanwhile(output, exc):
                raise
            self.made_meanwhile.add(id(output))
            return None
        self.sinks.append((sink, output))
        return sink

    def clamped_warnings(self, evaluator: Evaluator) -> list[Diagnostic]:
        """A warning for each fp8 output some of whose values were clamped to its range."""
        found: list[Diagnostic] = []
        for sink, owner in self.sinks:
            counts = evaluator.clamped.get(id(sink))
            if counts and not isinstance(owner, CacheEntry):
                code = next(i.dtype for i in owner.layout if i.key in counts)
                found.append(clamped_warning(owner.label, code, counts))
        return found

    def abort(self) -> None:
        self.hashing.stop()
        for sink, _ in self.sinks:
            sink.abort()

    # -- tasks

    def tasks(
        self, evaluator: Evaluator, sinks: list[tuple[Sink, OutputPlan | CacheEntry]]
    ) -> list[KeyTask]:
        found: dict[tuple[str, tuple[int, ...]], KeyTask] = {}
        for sink, owner in sinks:
            items: list[tuple[OutputKey, Node | None]]
            if isinstance(owner, CacheEntry):
                node = owner.node
                items = [
                    (OutputKey(k, stored_dtype(node, k), s.shape, "model"), node)
                    for k, s in node.keys.items()
                ]
            else:
                items = [(item, _source_node(owner, item)) for item in owner.layout]
            label = (
                f"<cache of {owner.node.label}>" if isinstance(owner, CacheEntry) else owner.label
            )
            for item, source in items:
                whole = source is None or evaluator.needs_whole(source, item.read_key)
                task = found.get((item.key, item.shape))
                if task is None:
                    task = KeyTask(item.key, item.shape, whole)
                    found[item.key, item.shape] = task
                task.whole = task.whole or whole
                task.targets.append(Target(sink, item, source, label))
        return list(found.values())

    # -- passes

    def statistics(self, evaluator: Evaluator) -> dict[int, object]:
        nodes = [n for n in self.plan.needed() if n.needs_stats and id(n) not in self.hits]
        if not nodes:
            return {}
        total = sum(sum(s.numel * 4 for s in n.keys.values()) for n in nodes)
        self.reporter.phase("statistics", total)
        found: dict[int, object] = {}
        for node in nodes:
            assert isinstance(node, MethodNode) and node.spec.stats is not None
            collector: Any = node.spec.stats()
            supermerger = get_convention(node.convention).supermerger_statistics
            for key, slot in node.keys.items():
                if self.cancel.is_set():
                    raise KeyboardInterrupt
                if not _measured(node, key, slot, supermerger):
                    continue
                chunk = Chunk(0, slot.numel, True)
                operands = evaluator.operands(node, key, chunk)
                collector.add(key, slot.block or "BASE", *operands)
                evaluator.forget_reads()
                self.reporter.advance(slot.numel * 4, key)
            finish = getattr(collector, "finish", None)
            if callable(finish):
                finish()
            found[id(node)] = collector
        return found

    def plan_batches(self) -> None:
        """Cut the outputs into :attr:`batches` (see :meth:`merge`) and open the first."""
        self.sweep()
        self.batches = _batches(self.openers(), output_batch())
        self.opened = self.open_batch(self.batches[0])

    def open_batch(
        self, batch: list[OutputPlan | CacheEntry]
    ) -> list[tuple[Sink, OutputPlan | CacheEntry]]:
        opened: list[tuple[Sink, OutputPlan | CacheEntry]] = []
        for owner in batch:
            sink = self.open_sink(owner)
            if sink is not None:
                opened.append((sink, owner))
        return opened

    def merge(self, evaluator: Evaluator) -> None:
        """Stream the keys into the sinks, a batch of outputs at a time when there are more
        file outputs than :func:`output_batch` allows open at once: each batch reads the
        inputs again, and its files are released (their descriptors closed, to be reopened
        at the commit) before the next batch opens."""
        batches = self.batches
        owners = [owner for _, owner in self.opened]
        owners += [owner for batch in batches[1:] for owner in batch]
        total = sum(_owner_bytes(owner) for owner in owners) + self.hashing.total
        detail = f"{len(owners)} outputs"
        if len(batches) > 1:
            detail += f" in {len(batches)} batches"
        if self.hashing.total:
            detail += f", hashing {len(self.hashing.handles)} new inputs"
        self.reporter.phase("merging", total, detail)
        self.hashing.start()  # (stopped by abort() if the run fails)
        for index, batch in enumerate(batches):
            opened = self.opened if index == 0 else self.open_batch(batch)
            self._merge(self.tasks(evaluator, opened), evaluator)
            if len(batches) > 1:
                for sink, _ in opened:
                    _release(sink)
        self.hashing.finish(self._report_hashing)

    def _report_hashing(self) -> None:
        self.advance(0, "hashing")
        if self.cancel.is_set():
            raise KeyboardInterrupt

    def advance(self, merged: int, key: str) -> None:
        """Report ``merged`` bytes, and the bytes hashed meanwhile, on the one bar."""
        self.reporter.advance(merged + self.hashing.take_progress(), key)

    def _merge(self, tasks: list[KeyTask], evaluator: Evaluator) -> None:
        workers = max(1, self.plan.workers)
        if workers == 1:
            for task in tasks:
                if self.cancel.is_set():
                    raise KeyboardInterrupt
                self.advance(evaluator.run(task, self.cancel), task.key)
            return
        with ThreadPoolExecutor(workers, thread_name_prefix="mergelang") as pool:
            inflight: deque[tuple[KeyTask, Future[int]]] = deque()
            try:
                for task in tasks:
                    if self.cancel.is_set():
                        raise KeyboardInterrupt
                    inflight.append((task, pool.submit(evaluator.run, task, self.cancel)))
                    while len(inflight) >= 2 * workers:
                        done, future = inflight.popleft()
                        self.advance(future.result(), done.key)
                while inflight:
                    done, future = inflight.popleft()
                    self.advance(future.result(), done.key)
            except BaseException:
                self.cancel.set()
                for _, future in inflight:
                    future.cancel()
                raise

    def check_inputs(self) -> None:
        """Refuse to commit if an input file or cache hit was written to while the run read
        it (see :meth:`~mergelang.plan.inputs.InputFile.check_unchanged`)."""
        handles = [*self.plan.inputs, *(e.handle for e in self.plan.cache if e.handle)]
        for handle in handles:
            file = handle.file
            if file is not None:
                file.check_unchanged()

    def fill_hashes(self) -> None:
        """Put the hashes computed during the run into every output's header (in place, in
        the placeholders' room) before anything is committed."""
        if not self.plan.hashed_during_run:
            return
        final = with_real_hashes(self.plan, self.hashing.result())
        by_output = {
            id(old): new for old, new in zip(self.plan.outputs, final.outputs, strict=True)
        }
        for sink, owner in self.sinks:
            if isinstance(owner, FileOutput):
                assert isinstance(sink, SafetensorsWriter)
                sink.rewrite_metadata(by_output[id(owner)].metadata)
                if len(self.batches) > 1:
                    _release(sink)  # reopened at its commit: never every file at once

    def note_cache(self, store: CacheStore) -> None:
        if store.failure is not None and self.cache_failure is None:
            self.cache_failure = store.failure

    def warnings(self, evaluator: Evaluator) -> list[Diagnostic]:
        """The run's own warnings: fp8 clamping, and a cache that could not be written."""
        found = self.clamped_warnings(evaluator)
        for sink, _ in self.sinks:
            if isinstance(sink, CacheStore):
                self.note_cache(sink)
        if self.cache_failure is not None:
            found.append(cache_warning(self.plan.cache_dir, self.cache_failure))
        return found

    def commit(self) -> list[OutputResult]:
        """Prepare every output, check the inputs and the targets, then rename every output
        into place with signals held (see :mod:`mergelang.run.commit`)."""
        self.fill_hashes()
        for sink, _ in self.sinks:
            if isinstance(sink, CacheStore):
                sink.fill_digest(DATA_DIGEST)
            sink.prepare()
        self.check_inputs()
        ready: list[tuple[Sink, OutputPlan | CacheEntry]] = []
        for sink, owner in self.sinks:
            try:
                sink.check()
            except OutputError as exc:
                if not isinstance(owner, FileOutput) or not _made_meanwhile(owner, exc):
                    raise
                sink.abort()
                self.made_meanwhile.add(id(owner))
                continue
            ready.append((sink, owner))
        by_output: dict[int, OutputResult] = {}
        folders: list[Path] = []
        notes: list[str] = []
        with signals_held():
            for sink, owner in ready:
                if isinstance(owner, CacheEntry):
                    if sink.publish(sync_folder=False) is not None and owner.path is not None:
                        folders.append(owner.path.parent)
                    continue
                try:
                    sink.publish(sync_folder=False)
                    status = "written"
                except OutputError as exc:
                    if not isinstance(owner, FileOutput) or not _made_meanwhile(owner, exc):
                        raise
                    status = "up-to-date"
                if isinstance(owner, FileOutput):
                    folders.append(owner.path.parent)
                tensors = None
                if isinstance(owner, MemoryOutput):
                    assert isinstance(sink, MemorySink)
                    tensors, status = sink.result, "memory"
                notes.append(f"{status} {owner.label}")
                changed = (
                    owner.changes if isinstance(owner, FileOutput) and status == "written" else ()
                )
                by_output[id(owner)] = OutputResult(
                    owner.name,
                    owner.path,
                    status,
                    owner.nbytes,
                    len(owner.layout),
                    tensors,
                    changed,
                )
            for folder in dict.fromkeys(folders):
                fsync_folder(folder)
        for note in notes:
            self.reporter.note(note)
        results: list[OutputResult] = []
        for output in self.plan.outputs:
            found = by_output.get(id(output))
            if found is None:
                status = "up-to-date" if id(output) in self.made_meanwhile else output.status
                found = OutputResult(
                    output.name, output.path, status, output.nbytes, len(output.layout)
                )
            results.append(found)
        return results

    def stored(self) -> tuple[str, ...]:
        """The labels of the cached steps whose objects were stored."""
        return tuple(
            owner.node.label
            for sink, owner in self.sinks
            if isinstance(owner, CacheEntry) and isinstance(sink, CacheStore) and sink.stored
        )


FD_RESERVE = 32
"""Descriptors :func:`output_batch` leaves for everything else a run opens meanwhile (a
cached step read, a folder synced, the hash cache, torch's own files)."""


def output_batch() -> int:
    """How many file outputs a run may have open at once: half the descriptors left under
    the soft ``RLIMIT_NOFILE`` once those already open and :data:`FD_RESERVE` are set aside
    (half, as an output may hold a second descriptor while it is written or committed).
    Never less than one; without a limit to ask (not a POSIX system), 256."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return 256
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1 << 30
    try:
        open_now = len(os.listdir("/proc/self/fd"))
    except OSError:  # pragma: no cover - no /proc (macOS): assume a busy process
        open_now = 64
    return max(1, (soft - open_now - FD_RESERVE) // 2)


def _batches(
    owners: list[tuple[OutputPlan | CacheEntry, bool]], size: int
) -> list[list[OutputPlan | CacheEntry]]:
    """``owners`` in recipe order, cut so that no batch has more than ``size`` files
    (in-memory results go with the batch they fall in)."""
    batches: list[list[OutputPlan | CacheEntry]] = [[]]
    files = 0
    for owner, is_file in owners:
        if is_file and files == size:
            batches.append([])
            files = 0
        batches[-1].append(owner)
        files += is_file
    return batches


def _owner_bytes(owner: OutputPlan | CacheEntry) -> int:
    """The bytes the merge phase writes for ``owner`` (what its tasks count)."""
    if isinstance(owner, CacheEntry):
        return sum(
            OutputKey(k, stored_dtype(owner.node, k), s.shape, "model").entry().nbytes
            for k, s in owner.node.keys.items()
        )
    return sum(item.entry().nbytes for item in owner.layout)


def _release(sink: Sink) -> None:
    """Close ``sink``'s file descriptor until it is next needed, if it holds one."""
    release = getattr(sink, "release", None)
    if callable(release):
        release()


def _made_meanwhile(output: FileOutput, exc: OutputError) -> bool:
    """Whether ``exc`` says the output's file appeared while it was being written, and that
    file records this output's address: another run made the same output first."""
    if output.key is None:
        return False
    if not any(d.code == "exists" for d in exc.diagnostics):
        return False
    return existing_output_key(output.path) == output.key


def _source_node(output: OutputPlan, item: OutputKey) -> Node | None:
    if item.source in ("position_ids", "marker"):
        return None
    if item.source == "vae":
        assert output.vae is not None
        return output.vae
    if item.source == "component":
        return next(n for name, n in output.components if name == item.component)
    return output.node


@contextlib.contextmanager
def _objects_frozen() -> Iterator[None]:
    """Keep the objects that exist now (the plan, its layouts: tens of thousands) out of the
    garbage collector's passes while the merge runs. The merge makes and drops small objects
    by the million, and each full collection would otherwise walk the whole plan again (up to
    a tenth of a run's CPU time); what the merge itself makes is collected as usual."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def execute(
    plan: Plan,
    *,
    reporter: Reporter | None = None,
    cancel: threading.Event | None = None,
    hashing: InputHashing | None = None,
) -> RunResult:
    """Run ``plan``; returns what was written (see the module docstring). ``hashing``: the
    hashing of the plan's new inputs when the caller started it already (see
    :mod:`mergelang.run.input_hashing`); else the run starts it as the merge starts."""
    report = reporter or NullReporter()
    run = _Run(plan, report, cancel or threading.Event(), hashing)
    start = time.perf_counter()
    for entry in plan.cache:
        if entry.status == "hit":
            report.note(f"cache hit: {entry.node.label}")
    ok = False
    threads = torch.get_num_threads()
    if run.device.type == "cpu":
        torch.set_num_threads(1)
    try:
        with _objects_frozen():
            run.plan_batches()
            evaluator = Evaluator(
                device=run.device,
                chunk=plan.chunk,
                hits=run.hits,
                check_finite=plan.nan == "error",
            )
            evaluator.stats = run.statistics(evaluator)
            run.merge(evaluator)
            outputs = run.commit()
            own_warnings = run.warnings(evaluator)
        ok = True
    except BaseException:
        run.abort()
        raise
    finally:
        torch.set_num_threads(threads)
        plan.close()
        report.finish(ok)
    return RunResult(
        tuple(outputs),
        tuple(e.node.label for e in plan.cache if e.status == "hit"),
        run.stored(),
        plan.bytes_read,
        plan.bytes_written,
        time.perf_counter() - start,
        (*plan.warnings, *own_warnings),
        tuple(run.removed),
    )


def _measured(node: MethodNode, key: str, slot: KeySlot, supermerger: bool) -> bool:
    """Whether the statistics pass of ``node`` measures ``key``: every computed key, or with
    SuperMerger's rule (:attr:`~mergelang.arch.conventions.Convention.supermerger_statistics`)
    the computed keys outside the VAE and the ``position_ids`` every operand has."""
    if not supermerger:
        return slot.action == "compute"
    if "first_stage_model." in key:
        return False
    if slot.action == "compute":
        return True
    return (
        slot.action == "pass"
        and key.endswith("position_ids")
        and all(
            (found := child.keys.get(key)) is not None and found.shape == slot.shape
            for child in node.children
        )
    )
