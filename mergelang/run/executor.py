"""Running a :class:`~mergelang.plan.plan.Plan`: one streaming pass over the keys.

Every output of the plan (files, cache stores, in-memory results) is opened first: a
safetensors file gets its whole header and its final size at once. Then each key is a
:class:`~mergelang.run.compute.KeyTask` run by a small pool of worker threads: it reads the
key from each input once, computes every node that needs it, and writes it to every output
that holds it. Torch's kernels and the file reads and writes release the GIL, so the
threads overlap reading, computing and writing. Methods that need statistics over the whole
model get a pass of their own before, which reads only what they need.

On CPU the workers run torch with one intra-op thread each (restored afterwards): a chunk is
too small to share out, and torch's own threads waiting on each other at every chunk (worse
when another program holds a core) cost far more than they give.

Outputs appear whole or not at all: if anything fails, or the run is interrupted (the
``cancel`` event, ``KeyboardInterrupt``), every temporary file is removed and nothing is
renamed into place. Temporary files of the same targets left by processes that no longer run
(killed with ``SIGKILL``) are removed when the run opens its outputs, and listed in
:attr:`RunResult.removed_partials`.

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
import threading
import time
from collections import deque
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mergelang.errors import Diagnostic, OutputError, UsageError
from mergelang.io.file_formats import FILE_FORMATS
from mergelang.io.fp8 import clamped_warning
from mergelang.io.hashing import FileHashes
from mergelang.io.save_options import OutputKey
from mergelang.io.sinks import MemorySink, Sink, SinkTarget
from mergelang.io.writer import PLACEHOLDER, SafetensorsWriter, remove_stale_partials
from mergelang.plan.cache import (
    CACHE_FORMAT,
    CACHE_KEY,
    DATA_DIGEST,
    existing_output_key,
    stored_dtype,
    with_real_hashes,
)
from mergelang.plan.graph import MethodNode, Node
from mergelang.plan.plan import CacheEntry, FileOutput, MemoryOutput, OutputPlan, Plan
from mergelang.plan.protected_files import protected_files
from mergelang.run.compute import Chunk, Evaluator, KeyTask, Target
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
    """Temporary files of this run's targets that processes no longer running had left
    (path, process id), removed before writing."""

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
    def __init__(self, plan: Plan, reporter: Reporter, cancel: threading.Event) -> None:
        self.plan = plan
        self.reporter = reporter
        self.cancel = cancel
        self.device = resolve_device(plan.device)
        self.hits = plan.hits
        self.sinks: list[tuple[Sink, OutputPlan | CacheEntry]] = []
        self.removed: list[tuple[Path, int]] = []
        self.made_meanwhile: set[int] = set()
        """``id()`` of the outputs another run made, the same, while this one ran."""
        self.hashing = _Hashing(plan)

    # -- sinks

    def open_sinks(self) -> None:
        protected = protected_files(self.plan, cache_hits=True)
        for entry in self.plan.stores:
            assert entry.path is not None and entry.key is not None
            self.removed += remove_stale_partials(entry.path)
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
            self.sinks.append((FILE_FORMATS[CACHE_FORMAT].open_sink(target), entry))
        for output in self.plan.pending:
            entries = tuple(item.entry() for item in output.layout)
            if isinstance(output, MemoryOutput):
                self.sinks.append((MemorySink(entries), output))
                continue
            self.removed += remove_stale_partials(output.path)
            target = SinkTarget(
                output.path,
                entries,
                output.metadata,
                overwrite=self.plan.force or output.replaces,
                protected=tuple(protected),
            )
            try:
                sink = output.file_format.open_sink(target)
            except OutputError as exc:
                if not _made_meanwhile(output, exc):
                    raise
                self.made_meanwhile.add(id(output))
                continue
            self.sinks.append((sink, output))

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
        for sink, _ in self.sinks:
            sink.abort()

    # -- tasks

    def tasks(self, evaluator: Evaluator) -> list[KeyTask]:
        found: dict[tuple[str, tuple[int, ...]], KeyTask] = {}
        for sink, owner in self.sinks:
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
            for key, slot in node.keys.items():
                if self.cancel.is_set():
                    raise KeyboardInterrupt
                if slot.action != "compute":
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

    def merge(self, evaluator: Evaluator) -> None:
        tasks = self.tasks(evaluator)
        total = sum(t.nbytes for t in tasks) + self.hashing.total
        detail = f"{len(self.sinks)} outputs"
        if self.hashing.total:
            detail += f", hashing {len(self.hashing.handles)} new inputs"
        self.reporter.phase("merging", total, detail)
        self.hashing.start()
        try:
            self._merge(tasks, evaluator)
            while not self.hashing.wait(0.1):
                self.advance(0, "hashing")
                if self.cancel.is_set():
                    raise KeyboardInterrupt
            self.advance(0, "hashing")
        except BaseException:
            self.hashing.stop()
            raise

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

    def commit(self) -> list[OutputResult]:
        self.check_inputs()
        self.fill_hashes()
        by_output: dict[int, OutputResult] = {}
        for sink, owner in self.sinks:
            if isinstance(owner, CacheEntry):
                assert isinstance(sink, SafetensorsWriter)
                sink.fill_placeholder(DATA_DIGEST, sink.data_sha256())
                sink.commit()
                continue
            try:
                sink.commit()
                status = "written"
            except OutputError as exc:
                if not isinstance(owner, FileOutput) or not _made_meanwhile(owner, exc):
                    raise
                status = "up-to-date"
            tensors = None
            if isinstance(owner, MemoryOutput):
                assert isinstance(sink, MemorySink)
                tensors, status = sink.result, "memory"
            self.reporter.note(f"{status} {owner.label}")
            changed = owner.changes if isinstance(owner, FileOutput) and status == "written" else ()
            by_output[id(owner)] = OutputResult(
                owner.name, owner.path, status, owner.nbytes, len(owner.layout), tensors, changed
            )
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


class _Hashing:
    """The inputs a plan hashes during the run (:attr:`Plan.hashed_during_run`), hashed in
    a thread of their own while the merge streams; the bytes hashed are counted for the
    progress bar. Reading an input twice at once costs little: the second read of each
    block comes from the page cache."""

    def __init__(self, plan: Plan) -> None:
        wanted = set(plan.hashed_during_run)
        self.plan = plan
        self.handles = [h for h in plan.inputs if h.identity in wanted and h.file is not None]
        self.total = sum(h.file.size for h in self.handles if h.file is not None)
        self._done = 0
        self._reported = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._found: dict[str, FileHashes] = {}
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.handles and self._thread is None:
            with contextlib.suppress(OSError):  # where the hashes go, as a hash first made it
                self.plan.cache_dir.mkdir(parents=True, exist_ok=True)
            self._thread = threading.Thread(target=self._run, name="mergelang-hash", daemon=True)
            self._thread.start()

    def _count(self, count: int) -> None:
        if self._stop.is_set():
            raise KeyboardInterrupt
        with self._lock:
            self._done += count

    def _run(self) -> None:
        try:
            for handle in self.handles:
                assert handle.file is not None
                found = handle.file.hashes(self.plan.cache_dir, compute=True, progress=self._count)
                assert found is not None
                self._found[handle.identity] = found
        except BaseException as exc:  # re-raised in the main thread by result()
            self._error = exc

    def take_progress(self) -> int:
        """The bytes hashed since the last call."""
        with self._lock:
            new, self._reported = self._done - self._reported, self._done
        return new

    def wait(self, seconds: float | None) -> bool:
        """Whether the hashing is over (waiting up to ``seconds`` for it)."""
        if self._thread is None:
            return True
        self._thread.join(seconds)
        return not self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def result(self) -> dict[str, FileHashes]:
        self.wait(None)
        if self._error is not None:
            raise self._error
        return self._found


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
    return output.node


def execute(
    plan: Plan,
    *,
    reporter: Reporter | None = None,
    cancel: threading.Event | None = None,
) -> RunResult:
    """Run ``plan``; returns what was written (see the module docstring)."""
    report = reporter or NullReporter()
    run = _Run(plan, report, cancel or threading.Event())
    start = time.perf_counter()
    for entry in plan.cache:
        if entry.status == "hit":
            report.note(f"cache hit: {entry.node.label}")
    ok = False
    threads = torch.get_num_threads()
    if run.device.type == "cpu":
        torch.set_num_threads(1)
    try:
        run.open_sinks()
        evaluator = Evaluator(
            device=run.device,
            chunk=plan.chunk,
            hits=run.hits,
            check_finite=plan.nan == "error",
        )
        evaluator.stats = run.statistics(evaluator)
        run.merge(evaluator)
        outputs = run.commit()
        clamped = run.clamped_warnings(evaluator)
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
        tuple(e.node.label for e in plan.stores),
        plan.bytes_read,
        plan.bytes_written,
        time.perf_counter() - start,
        (*plan.warnings, *clamped),
        tuple(run.removed),
    )
